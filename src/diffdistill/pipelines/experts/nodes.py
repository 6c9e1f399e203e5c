"""Nodes of the `experts` pipeline: MTT expert trajectories trained on the real train split."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from diffdistill.augment import resolve_dsa_strategy
from diffdistill.config import build, option, to_dict
from diffdistill.data.bundle import TensorBundle
from diffdistill.distill.experts import ExpertConfig, final_train_scores, train_experts
from diffdistill.distill.objectives import RealImages
from diffdistill.nets import net_factory
from diffdistill.pipelines.metrics import as_mlflow_history, as_mlflow_metrics
from diffdistill.workdir import WorkDir, split_fingerprint

logger = logging.getLogger(__name__)


@dataclass
class ExpertsParams(ExpertConfig):
    """`params:experts`: the core's `ExpertConfig` (`dsa_strategy` may be `auto`) and the keys the node handles."""

    seed: int = option(0, help="expert e is seeded from (seed, e) alone")
    net_overrides: dict[str, Any] | None = option(None, help="build_net overrides; must equal ld3m.net_overrides")

    def core(self, source: str | None) -> ExpertConfig:
        """The core's config, `auto` DSA resolved for the data source."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(ExpertConfig)}
        return ExpertConfig(**{**values, "dsa_strategy": resolve_dsa_strategy(self.dsa_strategy, source)})


def train_expert_trajectories(train_set: TensorBundle, params: dict[str, Any],
                              device: str) -> tuple[TensorBundle, dict[str, Any]]:
    """E expert trajectories (flat parameters after init and after every epoch), resumable per expert."""
    run = build(ExpertsParams, params, "experts")
    config, overrides = run.core(train_set.meta.get("source")), dict(run.net_overrides or {})
    fingerprint = split_fingerprint(train_set)
    images, labels = train_set["images"], train_set["labels"]
    factory = net_factory(config.net, int(images.shape[1]), train_set.num_classes, int(images.shape[-1]), overrides)
    work = WorkDir.keyed("experts", to_dict(config), overrides, run.seed, fingerprint)
    work.put_json("config", {"config": to_dict(config), "seed": run.seed, "net_overrides": overrides,
                             "train_set": fingerprint})
    resumed = sum(work.file(f"expert_{e:05d}.safetensors").is_file() for e in range(config.num_experts))
    if resumed:
        logger.info("experts: resuming, %d of %d experts already trained in %s", resumed, config.num_experts,
                    work.path)

    def save_expert(expert: int, trajectory: torch.Tensor) -> None:
        work.put_tensor(f"expert_{expert:05d}", trajectory)

    start = time.perf_counter()
    trajectories = train_experts(images, labels, config, seed=run.seed, net_factory=factory, device=device,
                                 load_expert=lambda e: work.get_tensor(f"expert_{e:05d}"), save_expert=save_expert)
    seconds = time.perf_counter() - start
    real = RealImages.from_classes([images[labels == k] for k in range(train_set.num_classes)])
    scores = [final_train_scores(t, factory, images, labels, real, device) for t in trajectories]
    bundle = TensorBundle({"trajectories": torch.stack(trajectories)},
                          _meta(config, run.seed, overrides, fingerprint, train_set, trajectories, scores))
    work.clear()  # finished: the artifact holds every trajectory
    accuracies = bundle.meta["final_train_accuracy"]
    logger.info("experts: %d × %d epochs in %.1f s; final train accuracy %.1f%% (mean)", config.num_experts,
                config.epochs, seconds, 100 * sum(accuracies) / len(accuracies))
    metrics = {**as_mlflow_history({"final_train_accuracy": accuracies,
                                    "final_train_loss": bundle.meta["final_train_loss"]}),
               **as_mlflow_metrics({"train_seconds": seconds,
                                    "mean_final_train_accuracy": sum(accuracies) / len(accuracies)})}
    return bundle, metrics


def _meta(config: ExpertConfig, seed: int, overrides: dict[str, Any], fingerprint: str, train_set: TensorBundle,
          trajectories: list[torch.Tensor], scores: list[tuple[float, float]]) -> dict[str, Any]:
    """The bundle's lineage and recipe: what the MTT node checks (train split, arch, overrides) and reports."""
    images = train_set["images"]
    return {
        "kind": "expert_trajectories", "arch": config.net, "net_overrides": overrides, "epochs": config.epochs,
        "num_experts": config.num_experts, "num_parameters": int(trajectories[0].shape[-1]),
        "train_set_fingerprint": fingerprint, "seed": seed, "lr": config.lr, "momentum": config.momentum,
        "weight_decay": config.weight_decay, "batch_size": config.batch_size, "dsa_strategy": config.dsa_strategy,
        "class_names": train_set.class_names, "num_classes": train_set.num_classes,
        "image_size": int(images.shape[-1]), "channels": int(images.shape[1]), "source": train_set.meta.get("source"),
        "final_train_accuracy": [a for a, _ in scores], "final_train_loss": [loss for _, loss in scores],
    }
