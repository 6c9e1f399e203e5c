"""Nodes of the `experts` pipeline: MTT expert trajectories trained on the real train split."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F

from diffdistill.augment import dsa_strategy_for
from diffdistill.data.bundle import TensorBundle, to_unit
from diffdistill.distill.experts import ExpertConfig, train_experts
from diffdistill.distill.objectives import NetFactory, RealImages
from diffdistill.nets import build_net
from diffdistill.pipelines.common import as_mlflow_history, as_mlflow_metrics, check_params
from diffdistill.workdir import WorkDir, split_fingerprint

logger = logging.getLogger(__name__)
# Keys of `params:experts` that the node handles itself; the rest is `ExpertConfig`.
NODE_KEYS = {"seed", "net_overrides"}


def resolve_dsa_strategy(strategy: str, train_set: TensorBundle) -> str:
    """`auto`: the DSA default for the data source (digit-like data drop `flip`)."""
    return dsa_strategy_for(train_set.meta.get("source")) if strategy == "auto" else strategy


def matching_net_factory(arch: str, overrides: dict[str, Any], train_set: TensorBundle) -> NetFactory:
    """Nets of `arch` (+ registry overrides) for this split's channels, classes and size, seeded by the caller."""
    images = train_set["images"]
    channels, size, num_classes = int(images.shape[1]), int(images.shape[-1]), train_set.num_classes

    def make(generator: torch.Generator) -> torch.nn.Module:
        return build_net(arch, channels, num_classes, size, generator=generator, **overrides)

    return make


def expert_config(params: dict[str, Any], train_set: TensorBundle) -> ExpertConfig:
    check_params(params, "experts", {}, {"num_experts": int, "epochs": int, "lr": float, "batch_size": int,
                                         "net": str, "net_overrides": (dict, None), "dsa_strategy": str, "seed": int})
    known = {f.name for f in dataclasses.fields(ExpertConfig)} | NODE_KEYS
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown experts parameters {unknown}; known: {sorted(known)}")
    values = {k: v for k, v in params.items() if k not in NODE_KEYS}
    config = ExpertConfig(**values)
    config.dsa_strategy = resolve_dsa_strategy(config.dsa_strategy, train_set)
    config.validate()
    return config


@torch.no_grad()
def final_train_scores(trajectory: torch.Tensor, factory: NetFactory, train_set: TensorBundle, real: RealImages,
                       device: str, batch_size: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of an expert's last snapshot on the un-augmented train split."""
    net = factory(torch.Generator().manual_seed(0)).to(device).train()  # train mode: as the MTT student runs
    torch.nn.utils.vector_to_parameters(trajectory[-1].to(device), net.parameters())
    images, labels = train_set["images"], train_set["labels"]
    correct, loss = 0, 0.0
    for start in range(0, len(labels), batch_size):
        x = real.normalize(to_unit(images[start:start + batch_size]).to(device))
        y = labels[start:start + batch_size].to(device)
        logits = net(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return correct / len(labels), loss / len(labels)


def train_expert_trajectories(train_set: TensorBundle, params: dict[str, Any],
                              device: str) -> tuple[TensorBundle, dict[str, Any]]:
    """E expert trajectories (flat parameters after init and after every epoch), resumable per expert."""
    config = expert_config(params, train_set)
    overrides = dict(params.get("net_overrides") or {})
    seed = int(params.get("seed", 0))
    fingerprint = split_fingerprint(train_set)
    factory = matching_net_factory(config.net, overrides, train_set)
    images, labels = train_set["images"], train_set["labels"]
    work = WorkDir.keyed("experts", dataclasses.asdict(config), overrides, seed, fingerprint)
    work.put_json("config", {"config": dataclasses.asdict(config), "seed": seed, "net_overrides": overrides,
                             "train_set": fingerprint})

    def save_expert(expert: int, trajectory: torch.Tensor) -> None:
        work.put_tensor(f"expert_{expert:05d}", trajectory)
        logger.info("expert %d/%d done", expert + 1, config.num_experts)

    resumed = sum(work.file(f"expert_{e:05d}.safetensors").is_file() for e in range(config.num_experts))
    if resumed:
        logger.info("experts: resuming, %d of %d experts already trained in %s", resumed, config.num_experts,
                    work.path)
    start = time.perf_counter()
    trajectories = train_experts(images, labels, config, seed=seed, net_factory=factory, device=device,
                                 load_expert=lambda e: work.get_tensor(f"expert_{e:05d}"), save_expert=save_expert)
    seconds = time.perf_counter() - start
    real = RealImages.from_classes([images[labels == k] for k in range(train_set.num_classes)])
    scores = [final_train_scores(t, factory, train_set, real, device) for t in trajectories]
    stacked = torch.stack(trajectories)
    meta = {
        "kind": "expert_trajectories", "arch": config.net, "net_overrides": overrides, "epochs": config.epochs,
        "num_experts": config.num_experts, "num_parameters": int(stacked.shape[-1]),
        "train_set_fingerprint": fingerprint, "seed": seed, "lr": config.lr, "momentum": config.momentum,
        "weight_decay": config.weight_decay, "batch_size": config.batch_size, "dsa_strategy": config.dsa_strategy,
        "class_names": train_set.class_names, "num_classes": train_set.num_classes,
        "image_size": int(images.shape[-1]), "channels": int(images.shape[1]), "source": train_set.meta.get("source"),
        "final_train_accuracy": [a for a, _ in scores], "final_train_loss": [loss for _, loss in scores],
    }
    bundle = TensorBundle({"trajectories": stacked}, meta)
    work.clear()  # finished: the artifact holds every trajectory
    accuracies = meta["final_train_accuracy"]
    logger.info("experts: %d × %d epochs in %.1f s; final train accuracy %.1f%% (mean)", config.num_experts,
                config.epochs, seconds, 100 * sum(accuracies) / len(accuracies))
    metrics = {**as_mlflow_history({"final_train_accuracy": accuracies, "final_train_loss": meta["final_train_loss"]}),
               **as_mlflow_metrics({"train_seconds": seconds,
                                    "mean_final_train_accuracy": sum(accuracies) / len(accuracies)})}
    return bundle, metrics
