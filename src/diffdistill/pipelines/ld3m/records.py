"""Lineage and records of the `ld3m` nodes: the inputs they check (prior, experts) and the lineage they stamp on
the set, the per-iteration history of class shards merged, and the gradient record the report reads."""

from __future__ import annotations

import math
from typing import Any

from diffdistill.data.bundle import TensorBundle
from diffdistill.distill.ld3m import LD3MConfig
from diffdistill.workdir import fingerprint, module_fingerprint, split_fingerprint


def run_inputs(name: str, config: LD3MConfig, train_set: TensorBundle, prior_model: Any,
               expert_trajectories: TensorBundle | None, overrides: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(prior on the device or None, MTT experts or None, lineage meta): each input the run's space and objective
    need, refused when missing or made from other data / another net."""
    images = train_set["images"]
    lineage: dict[str, Any] = {"train_set_fingerprint": split_fingerprint(train_set)}
    prior = experts = None
    if config.spec.uses_prior:
        if prior_model is None:
            raise ValueError(f"{name}: space {config.space!r} needs prior_model; run `kedro run --pipelines prior` "
                             "first")
        prior = prior_model.to(config.device)
        prior.check_dataset(num_classes=train_set.num_classes, channels=int(images.shape[1]),
                            image_size=int(images.shape[-1]))
        lineage["prior_fingerprint"] = module_fingerprint(prior)
    if config.objective == "mtt":
        if expert_trajectories is None:
            raise ValueError(f"{name}: objective mtt needs expert_trajectories; run `kedro run --pipelines experts`")
        require_matching_experts(expert_trajectories, lineage["train_set_fingerprint"], config.mtt.net, overrides)
        experts = list(expert_trajectories["trajectories"].unbind(0))
        lineage["experts_fingerprint"] = fingerprint(expert_trajectories.meta)
    return prior, experts, lineage


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


def merge_histories(histories: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per-iteration metrics of class shards (class order) as the whole set's: the DM loss is a sum over classes, so
    losses and seconds add, gradient norms combine as sqrt(sum of squares), peak memory and replay errors take the
    max. The iteration-0 diagnostic (`init_*`) is the first shard's: it runs on the first chunk of images, which
    that shard computes exactly as the unsharded run does."""
    if len(histories) == 1:
        return histories[0]
    merged = {}
    for key in histories[0]:
        columns = list(zip(*(h[key] for h in histories), strict=True))
        if key.startswith("init_"):
            merged[key] = list(histories[0][key])
        elif key.startswith("grad_norm_"):
            merged[key] = [math.sqrt(sum(v * v for v in row)) for row in columns]
        elif key in ("peak_memory_bytes", "regeneration_max_abs_diff"):
            merged[key] = [max(row) for row in columns]
        else:
            merged[key] = [sum(row) for row in columns]
    return merged


def sensitivity(history: dict[str, list[float]]) -> dict[str, float]:
    """Iteration 0's latent-sensitivity diagnostic (`distill.ld3m.latent_sensitivity`) from the history."""
    return {key: values[0] for key, values in history.items() if key.startswith("init_") and values}


def gradient_record(history: dict[str, list[float]], config: LD3MConfig, name: str) -> dict[str, Any]:
    """Per-iteration gradient norms (the report's SNR plot reads `grad_norm`: ‖∂L/∂Z‖, or the learnable that
    the space has instead, its first: c for condition_only, the images for pixel)."""
    main = config.spec.learnable[0]
    return {"set": name, "objective": config.objective, "space": config.space, "ipc": config.ipc,
            "iterations": config.iterations, "lr": config.learning_rate(), "grad_norm_of": main,
            "grad_norm": history.get(f"grad_norm_{main}", []), "loss": history.get("loss", []),
            "sensitivity": sensitivity(history), **{k: v for k, v in history.items() if k.startswith("grad_norm_")}}
