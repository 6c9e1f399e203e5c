"""Nodes of the `ld3m` pipeline: one distillation per (objective, space, IPC) through `distill.ld3m`."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from diffdistill.data.atomic import write_json_atomic
from diffdistill.data.bundle import TensorBundle
from diffdistill.data.grid import image_grid
from diffdistill.diffusion.residual import check_variant
from diffdistill.distill.ld3m import OBJECTIVES, SPACES, LD3MConfig, distill_ld3m, load_checkpoint
from diffdistill.pipelines.common import as_mlflow_history, check_params, real_split_meta
from diffdistill.pipelines.experts.nodes import matching_net_factory, resolve_dsa_strategy
from diffdistill.pipelines.sharding import check_parts_cover, class_range, require_same
from diffdistill.workdir import WorkDir, fingerprint, module_fingerprint, split_fingerprint

logger = logging.getLogger(__name__)
# Keys of `params:ld3m` the node resolves itself; everything else goes to `LD3MConfig` as is.
NODE_KEYS = {"runs", "iterations", "lr", "net_overrides", "snr_window"}
# The core may continue a checkpoint with these changed (lower lr after a divergence), so they do not key it.
RESUMABLE_KEYS = {"iterations", "checkpoint_every", "device", "lr"}
HISTORY_FILE = "history.json"
# Per-iteration values kept in the history.
HISTORY_SKIP = {"iteration", "memory_kind", "lr", "rounds"}  # constants of the run live in the set's meta


def method_name(objective: str, space: str, variant: str | None = None) -> str:
    """`ld3m_<objective>_<space>`; a run that pins a sampler variant gets it as a suffix (`ld3m_dm_latent_eq12`)."""
    return f"ld3m_{objective}_{space}" + (f"_{variant}" if variant else "")


def set_name(objective: str, space: str, ipc: int, variant: str | None = None) -> str:
    return f"{method_name(objective, space, variant)}_ipc{ipc}"


def check_run(objective: Any, space: Any, variant: Any = None) -> None:
    """Refuse unknown names up front, naming the parameter that holds them."""
    if objective not in OBJECTIVES:
        raise ValueError(f"ld3m.runs has objective={objective!r}; choose one of {', '.join(OBJECTIVES)} "
                         "(conf/base/parameters_ld3m.yml)")
    if space not in SPACES:
        raise ValueError(f"ld3m.runs has space={space!r} (objective {objective}); choose one of "
                         f"{', '.join(SPACES)} (conf/base/parameters_ld3m.yml)")
    if variant is not None:
        check_variant(variant, f"ld3m.runs variant (objective {objective}, space {space})")
        if space != "latent":
            fixed = "none" if space != "decoder_only" else "no sampler"
            raise ValueError(f"ld3m.runs gives variant={variant!r} to space {space!r}, which always uses {fixed}; "
                             "a variant applies to space 'latent' only (conf/base/parameters_ld3m.yml)")


def check_ipc(train_set: TensorBundle, ipc: int) -> None:
    counts = torch.bincount(train_set["labels"].long(), minlength=train_set.num_classes)
    names = train_set.class_names or [str(k) for k in range(train_set.num_classes)]
    short = {names[k]: int(n) for k, n in enumerate(counts.tolist()) if n < ipc}
    if ipc < 1 or short:
        raise ValueError(f"ipcs contains {ipc}, but the train split has fewer images in classes {short} "
                         "(class: count); lower `ipcs` in conf/base/parameters.yml or use more data")


def _per_ipc(value: Any, ipc: int, name: str) -> Any:
    """A setting given as one value or as {ipc: value}."""
    if not isinstance(value, dict):
        return value
    table = {int(k): v for k, v in value.items()}
    if ipc not in table:
        raise ValueError(f"{name} has no entry for ipc {ipc} (has {sorted(table)}); add one")
    return table[ipc]


def learning_rate(params: dict[str, Any], objective: str, space: str, variant: str | None = None) -> float | None:
    """`lr.<space>_<variant>.<objective>` for a run that pins a variant (`latent_eq12`), else `lr.<space>.<objective>`,
    else `lr.latent.<objective>` for every prior space; None = the core's default."""
    table = params.get("lr") or {}
    for key in ([f"{space}_{variant}"] if variant else []) + [space] + (["latent"] if space != "pixel" else []):
        value = (table.get(key) or {}).get(objective)
        if value is not None:
            return float(value)
    return None


def dc_schedule(params: dict[str, Any], space: str) -> str | None:
    """`dc.schedule` given per kind of space, {prior: glad, pixel: dc_table}, or as one name; None = the core's."""
    value = (params.get("dc") or {}).get("schedule")
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"prior", "pixel"})
        if unknown:
            raise ValueError(f"ld3m.dc.schedule has keys {unknown}; use {{prior: glad, pixel: dc_table}}")
        return value.get("pixel" if space == "pixel" else "prior")
    return value


def ld3m_config(params: dict[str, Any], train_set: TensorBundle, device: str, *, objective: str, space: str,
                ipc: int, variant: str | None = None) -> LD3MConfig:
    """`params:ld3m` -> the core's config for one run (objective, space, IPC, iterations, lr, DC loop schedule and
    a run's own sampler variant resolved)."""
    check_run(objective, space, variant)
    check_params(params, "ld3m", {"iterations": dict}, {"lr": (dict, None), "net_overrides": (dict, None),
                                                        "seed": int, "dsa_strategy": str})
    iterations = params["iterations"]
    if objective not in iterations:
        raise ValueError(f"ld3m.iterations needs an entry for objective {objective!r}, e.g. iterations: {{{objective}: 100}}")
    values = {k: v for k, v in params.items() if k not in NODE_KEYS}
    values.update(objective=objective, space=space, ipc=ipc, device=device,
                  iterations=int(_per_ipc(iterations[objective], ipc, f"ld3m.iterations.{objective}")),
                  lr=learning_rate(params, objective, space, variant),
                  dsa_strategy=resolve_dsa_strategy(values.get("dsa_strategy", "auto"), train_set))
    if isinstance(values.get("dc"), dict):
        values["dc"] = {**values["dc"], "schedule": dc_schedule(params, space)}
    if variant is not None:
        values["sampler"] = {**(values.get("sampler") or {}), "variant": variant}
    config = LD3MConfig.from_dict(values)
    config.validate()
    return config


def require_matching_experts(experts: TensorBundle, train_fingerprint: str, arch: str,
                             overrides: dict[str, Any]) -> None:
    """MTT lineage: the experts must come from this train split and this matching net."""
    meta = experts.meta
    made_from, made_arch = meta.get("train_set_fingerprint"), meta.get("arch")
    made_overrides = meta.get("net_overrides") or {}
    if made_from != train_fingerprint:
        raise ValueError(
            f"expert_trajectories were trained on train_set {made_from} but the loaded train_set is "
            f"{train_fingerprint}; re-run `kedro run --pipelines experts` on this train set, or pin matching "
            "versions with --load-versions")
    if made_arch != arch or made_overrides != overrides:
        raise ValueError(
            f"expert_trajectories were trained with arch {made_arch!r} (overrides {made_overrides}) but ld3m.mtt.net "
            f"is {arch!r} (ld3m.net_overrides {overrides}); set experts.net / experts.net_overrides to match and "
            "re-run `kedro run --pipelines experts`, or change ld3m.mtt.net")


def _load_history(scratch: Path) -> dict[str, list[float]]:
    """Per-iteration metrics of a killed run, cut to its last checkpoint (the iterations it will not redo)."""
    saved, path = load_checkpoint(scratch), scratch / HISTORY_FILE
    if saved is None or not path.is_file():
        return {}
    step = saved[0].step
    return {k: v[:step] for k, v in json.loads(path.read_text()).items()}


def _save_history(scratch: Path, history: dict[str, list[float]]) -> None:
    write_json_atomic(scratch / HISTORY_FILE, history)


def distill_ld3m_set(train_set: TensorBundle, params: dict[str, Any], device: str,
                     prior_model: Any = None, expert_trajectories: TensorBundle | None = None, *,
                     objective: str, space: str, ipc: int, variant: str | None = None):
    """Distill IPC images per class with LD3M (or a pixel / ablation space); returns the distilled set, its grid,
    the learned state (Z, c, stored noise, labels), the per-iteration MLflow history and the ‖∂L/∂Z‖ record."""
    distilled, state, history, config = _distill(train_set, params, device, prior_model, expert_trajectories,
                                                 objective=objective, space=space, ipc=ipc, classes=None,
                                                 variant=variant)
    return _set_outputs(distilled, state, history, config)


def _distill(train_set: TensorBundle, params: dict[str, Any], device: str, prior_model: Any,
             expert_trajectories: TensorBundle | None, *, objective: str, space: str, ipc: int,
             variant: str | None = None, classes: tuple[int, int] | None) -> tuple[TensorBundle, TensorBundle, dict[str, list[float]], LD3MConfig]:
    """One LD3M run over `classes` (None = all): the distilled bundle, the state bundle, the history, the config."""
    name = set_name(objective, space, ipc, variant)
    check_run(objective, space, variant)
    check_ipc(train_set, ipc)
    config = ld3m_config(params, train_set, device, objective=objective, space=space, ipc=ipc, variant=variant)
    images = train_set["images"]
    train_fingerprint = split_fingerprint(train_set)
    lineage: dict[str, Any] = {"train_set_fingerprint": train_fingerprint}
    prior = None
    if space != "pixel":
        if prior_model is None:
            raise ValueError(f"{name}: space {space!r} needs prior_model; run `kedro run --pipelines prior` first")
        prior = prior_model.to(device)
        prior.check_dataset(num_classes=train_set.num_classes, channels=int(images.shape[1]),
                            image_size=int(images.shape[-1]))
        lineage["prior_fingerprint"] = module_fingerprint(prior)
    overrides = dict(params.get("net_overrides") or {})
    experts = None
    if objective == "mtt":
        if expert_trajectories is None:
            raise ValueError(f"{name}: objective mtt needs expert_trajectories; run `kedro run --pipelines experts`")
        require_matching_experts(expert_trajectories, train_fingerprint, config.mtt.net, overrides)
        experts = list(expert_trajectories["trajectories"].unbind(0))
        lineage["experts_fingerprint"] = fingerprint(expert_trajectories.meta)
    factory = None
    if overrides:
        factory = matching_net_factory(getattr(config, objective).net, overrides, train_set)

    key = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_KEYS}
    shard_key = () if classes is None else (list(classes),)  # each class shard resumes from its own folder
    scratch = WorkDir.keyed("ld3m", name, key, overrides, lineage, *shard_key).path
    scratch.mkdir(parents=True, exist_ok=True)
    history = _load_history(scratch)
    if history:
        logger.info("%s: resuming from %s after %d iterations", name, scratch, len(history.get("loss", [])))

    def on_step(metrics: dict[str, Any]) -> None:
        for metric, value in metrics.items():
            if metric not in HISTORY_SKIP:
                history.setdefault(metric, []).append(float(value))
        step = metrics["iteration"] + 1
        if step % config.checkpoint_every == 0 or step == config.iterations:  # the core checkpoints right after
            _save_history(scratch, history)
        if step % max(1, config.iterations // 10) == 0:
            logger.info("%s iteration %d/%d: loss %.4g (%.2f s/it)", name, step, config.iterations,
                        metrics["loss"], metrics["time_s"])

    result = distill_ld3m(train_set, prior, config, experts=experts, checkpoint_dir=scratch, on_step=on_step,
                          net_factory=factory, class_names=train_set.class_names, classes=classes)
    extra = {**real_split_meta(train_set), "set": name, "dsa_strategy": config.dsa_strategy,
             "net_overrides": overrides, **lineage}
    if space != "pixel":  # iteration 0's latent-sensitivity diagnostic (kept in the history across a resume)
        extra["sensitivity"] = sensitivity(history)
    distilled = TensorBundle(result.images.tensors, {**result.images.meta, **extra})
    state = TensorBundle(result.state.tensors, {**result.state.meta, **extra, "kind": "ld3m_state"})
    shutil.rmtree(scratch, ignore_errors=True)  # finished: the artifacts hold everything
    return distilled, state, history, config


def _set_outputs(distilled: TensorBundle, state: TensorBundle, history: dict[str, list[float]], config: LD3MConfig):
    name = distilled.meta["set"]
    gradients = gradient_record(history, config, name)
    logger.info("%s: %d iterations, %.1f s of distillation, final loss %.4g", name, config.iterations,
                sum(history.get("time_s", [])), (history.get("loss") or [float("nan")])[-1])
    return distilled, image_grid(distilled["images"], distilled["labels"]), state, as_mlflow_history(history), gradients


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
    byte-identical; the history recombined (loss and time summed, gradient norms root-sum-squared, peaks maxed),
    a diagnostic only: a shard's per-iteration values also count its ghost classes (`computed_classes`)."""
    parts = list(parts)
    check_parts_cover(parts, train_set.num_classes, set_name(objective, space, ipc, variant))
    require_same(parts, ("set_meta", "state_meta"), set_name(objective, space, ipc, variant))
    config = ld3m_config(params, train_set, device, objective=objective, space=space, ipc=ipc, variant=variant)

    def cat(names: list[str]) -> dict[str, torch.Tensor]:
        return {name: torch.cat([p[name] for p in parts]) for name in names}

    images = cat([k for k in parts[0].tensors if not k.startswith("state.")])
    state = {k[len("state."):]: v for k, v in cat([k for k in parts[0].tensors if k.startswith("state.")]).items()}
    distilled = TensorBundle(images, parts[0].meta["set_meta"])
    return _set_outputs(distilled, TensorBundle(state, parts[0].meta["state_meta"]),
                        merge_histories([p.meta["history"] for p in parts]), config)


def merge_histories(histories: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per-iteration metrics of class shards as the whole set's: the DM loss is a sum over classes, so losses and
    seconds add, gradient norms combine as sqrt(sum of squares), peak memory and replay errors take the max."""
    if len(histories) == 1:
        return histories[0]
    merged = {}
    for key in histories[0]:
        columns = list(zip(*(h[key] for h in histories), strict=True))
        if key.startswith("grad_norm_") or key in ("init_grad_norm_latents", "init_grad_norm_noise"):
            merged[key] = [math.sqrt(sum(v * v for v in row)) for row in columns]
        elif key == "init_psnr_db":  # each shard's own first chunk: their mean squared errors average
            merged[key] = [-10.0 * math.log10(sum(10 ** (-v / 10) for v in row) / len(row)) for row in columns]
        elif key == "init_sensitivity_ratio":
            continue  # recomputed below from the merged norms
        elif key in ("peak_memory_bytes", "regeneration_max_abs_diff"):
            merged[key] = [max(row) for row in columns]
        else:
            merged[key] = [sum(row) for row in columns]
    if "init_grad_norm_noise" in merged:
        merged["init_sensitivity_ratio"] = [z / n if n > 0 else float("inf") for z, n in
                                            zip(merged["init_grad_norm_latents"], merged["init_grad_norm_noise"],
                                                strict=True)]
    return merged


def sensitivity(history: dict[str, list[float]]) -> dict[str, float]:
    """Iteration 0's latent-sensitivity diagnostic (`distill.ld3m.latent_sensitivity`) from the history."""
    return {key: values[0] for key, values in history.items() if key.startswith("init_") and values}


def gradient_record(history: dict[str, list[float]], config: LD3MConfig, name: str) -> dict[str, Any]:
    """Per-iteration gradient norms (the report's SNR plot reads `grad_norm`: ‖∂L/∂Z‖, or the learnable that
    the space has instead: c for condition_only, the images for pixel)."""
    main = {"pixel": "grad_norm_images", "condition_only": "grad_norm_conditions"}.get(config.space,
                                                                                      "grad_norm_latents")
    return {"set": name, "objective": config.objective, "space": config.space, "ipc": config.ipc,
            "iterations": config.iterations, "lr": config.learning_rate(), "grad_norm_of": main[len("grad_norm_"):],
            "grad_norm": history.get(main, []), "loss": history.get("loss", []), "sensitivity": sensitivity(history),
            **{k: v for k, v in history.items() if k.startswith("grad_norm_")}}
