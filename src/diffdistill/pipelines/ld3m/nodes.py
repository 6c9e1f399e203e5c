"""Nodes of the `ld3m` pipeline: one distillation per (objective, space, IPC) through `distill.ld3m`, or a DM
set's class shards and their merge. Parameters -> `LD3MConfig` (`params.py`), inputs checked (`records.py`),
`distill_ld3m` resumable in a keyed `WorkDir`, artifacts out."""

from __future__ import annotations

import logging
from typing import Any

import torch

from diffdistill.data.bundle import TensorBundle
from diffdistill.data.grid import set_grid
from diffdistill.distill.ld3m import LD3MConfig, distill_ld3m, load_checkpoint
from diffdistill.nets import net_factory
from diffdistill.pipelines.artifacts import real_split_meta
from diffdistill.pipelines.ld3m.params import check_ipc, check_run, ld3m_config, run_table, set_name
from diffdistill.pipelines.ld3m.records import gradient_record, merge_histories, run_inputs, sensitivity
from diffdistill.pipelines.metrics import as_mlflow_history
from diffdistill.pipelines.sharding import check_parts_cover, class_range, require_same
from diffdistill.workdir import WorkDir

logger = logging.getLogger(__name__)
History = dict[str, list[float]]


def distill_ld3m_set(train_set: TensorBundle, params: dict[str, Any], device: str,
                     prior_model: Any = None, expert_trajectories: TensorBundle | None = None, *,
                     objective: str, space: str, ipc: int, variant: str | None = None):
    """Distill IPC images per class with LD3M (or a pixel / ablation space); returns the distilled set, its grid,
    the learned state (Z, c, stored noise, labels), the per-iteration MLflow history and the ‖∂L/∂Z‖ record."""
    distilled, state, history, config = _distill(train_set, params, device, prior_model, expert_trajectories,
                                                 objective=objective, space=space, ipc=ipc, variant=variant)
    return _outputs(distilled, state, history, config)


def distill_ld3m_classes(train_set: TensorBundle, params: dict[str, Any], device: str, prior_model: Any = None, *,
                         objective: str, space: str, ipc: int, shard: tuple[int, int],
                         variant: str | None = None) -> TensorBundle:
    """One class shard of an LD3M DM set: its images, state rows and per-iteration history in one bundle."""
    classes = class_range(train_set.num_classes, shard)
    distilled, state, history, _ = _distill(train_set, params, device, prior_model, None, objective=objective,
                                            space=space, ipc=ipc, variant=variant, classes=classes)
    tensors = {**distilled.tensors, **{f"state.{k}": v for k, v in state.tensors.items()}}
    return TensorBundle(tensors, {"kind": "ld3m_part", "classes": list(classes), "set_meta": distilled.meta,
                                  "state_meta": state.meta, "history": history})


def merge_ld3m_parts(train_set: TensorBundle, params: dict[str, Any], device: str, *parts: TensorBundle,
                     objective: str, space: str, ipc: int, variant: str | None = None):
    """Class shards of one LD3M DM set -> the five artifacts of the unsharded node: distilled set and state
    byte-identical; the history recombined (`records.merge_histories`), a diagnostic only: a shard's per-iteration
    values also count its ghost classes (`distill.ld3m.computed_classes`)."""
    parts, name = sorted(parts, key=lambda p: p.meta["classes"][0]), set_name(objective, space, ipc, variant)
    check_parts_cover(parts, train_set.num_classes, name)
    # The metas carry the first shard's iteration-0 diagnostic (its first chunk is the unsharded run's first chunk);
    # apart from it the shards must agree.
    require_same([TensorBundle({}, {key: {k: v for k, v in p.meta[key].items() if k != "sensitivity"}
                                    for key in ("set_meta", "state_meta")}) for p in parts],
                 ("set_meta", "state_meta"), name)
    config = ld3m_config(params, train_set, device, objective=objective, space=space, ipc=ipc, variant=variant)

    def cat(names: list[str]) -> dict[str, torch.Tensor]:
        return {key: torch.cat([p[key] for p in parts]) for key in names}

    images = cat([k for k in parts[0].tensors if not k.startswith("state.")])
    state = {k[len("state."):]: v for k, v in cat([k for k in parts[0].tensors if k.startswith("state.")]).items()}
    return _outputs(TensorBundle(images, parts[0].meta["set_meta"]), TensorBundle(state, parts[0].meta["state_meta"]),
                    merge_histories([p.meta["history"] for p in parts]), config)


def _distill(train_set: TensorBundle, params: dict[str, Any], device: str, prior_model: Any,
             expert_trajectories: TensorBundle | None, *, objective: str, space: str, ipc: int,
             variant: str | None = None, classes: tuple[int, int] | None = None,
             ) -> tuple[TensorBundle, TensorBundle, History, LD3MConfig]:
    """One LD3M run over `classes` (None = all): the distilled bundle, the state bundle, the history, the config."""
    name = set_name(objective, space, ipc, variant)
    check_run(objective, space, variant)  # the names first, then the IPC: before any work
    check_ipc(train_set, ipc)
    config = ld3m_config(params, train_set, device, objective=objective, space=space, ipc=ipc, variant=variant)
    overrides = dict(run_table(params).net_overrides or {})
    prior, experts, lineage = run_inputs(name, config, train_set, prior_model, expert_trajectories, overrides)
    images = train_set["images"]
    factory = net_factory(getattr(config, objective).net, int(images.shape[1]), train_set.num_classes,
                          int(images.shape[-1]), overrides)
    shard_key = () if classes is None else (list(classes),)  # each class shard resumes from its own folder
    work = WorkDir.keyed("ld3m", name, config.run_key(), overrides, lineage, *shard_key)
    saved = load_checkpoint(work)
    if saved is not None:
        logger.info("%s: resuming from %s after %d iterations", name, work.path, saved[0].step)
    result = distill_ld3m(train_set, prior, config, experts=experts, checkpoint_dir=work, net_factory=factory,
                          class_names=train_set.class_names, classes=classes)
    extra = {**real_split_meta(train_set), "set": name, "dsa_strategy": config.dsa_strategy,
             "net_overrides": overrides, **lineage}
    if config.spec.uses_prior:  # iteration 0's latent-sensitivity diagnostic (kept in the history across a resume)
        extra["sensitivity"] = sensitivity(result.history)
    distilled = TensorBundle(result.images.tensors, {**result.images.meta, **extra})
    state = TensorBundle(result.state.tensors, {**result.state.meta, **extra, "kind": "ld3m_state"})
    work.clear()  # finished: the artifacts hold everything
    return distilled, state, result.history, config


def _outputs(distilled: TensorBundle, state: TensorBundle, history: History, config: LD3MConfig):
    name = distilled.meta["set"]
    logger.info("%s: %d iterations, %.1f s of distillation, final loss %.4g", name, config.iterations,
                sum(history.get("time_s", [])), (history.get("loss") or [float("nan")])[-1])
    return (distilled, set_grid(distilled, name), state, as_mlflow_history(history),
            gradient_record(history, config, name))
