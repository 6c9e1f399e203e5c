"""MTT expert trajectories: nets trained on the real train split, one flat parameter snapshot per epoch.

Each expert has its own generator, seeded from (seed, expert index) alone, so training experts
0..E-1 in one go or resuming after expert e gives the same bytes. Snapshot 0 is the initial net;
the flat layout is `objectives.flatten_parameters` (named_parameters order), which the MTT
student unflattens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffdistill.data.bundle import to_unit
from diffdistill.distill.objectives import (
    Augment,
    NetFactory,
    RealImages,
    augment_per_sample,
    default_net_factory,
    flatten_parameters,
)
from diffdistill.rng import derive_seed


@dataclass
class ExpertConfig:
    num_experts: int = 10
    epochs: int = 15
    lr: float = 0.01  # MTT buffer.py: SGD, no momentum, no weight decay
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    net: str = "convnet"  # must match the MTT objective's mtt.net
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"  # "none": no augmentation

    def validate(self) -> None:
        if self.num_experts < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("experts.num_experts, experts.epochs and experts.batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"experts.lr must be > 0, got {self.lr}")


def train_expert(
    images: torch.Tensor,
    labels: torch.Tensor,
    real: RealImages,
    config: ExpertConfig,
    *,
    generator: torch.Generator,
    net_factory: NetFactory,
    augment: Augment | None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One trajectory (epochs + 1, P) on the whole split `images` (uint8 or [0, 1]), DSA per sample."""
    net = net_factory(generator).to(device).train()
    optimizer = torch.optim.SGD(
        net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    snapshots = [flatten_parameters(net).cpu()]
    for _ in range(config.epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        for batch in order.split(config.batch_size):
            x = real.normalize(to_unit(images[batch]).to(device))
            x = augment_per_sample(augment, x, generator)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), labels[batch].to(device)).backward()
            optimizer.step()
        snapshots.append(flatten_parameters(net).cpu())
    return torch.stack(snapshots)


def train_experts(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: ExpertConfig,
    *,
    seed: int,
    net_factory: NetFactory | None = None,
    augment: Augment | None = None,
    device: torch.device | str = "cpu",
    load_expert: Callable[[int], torch.Tensor | None] | None = None,
    save_expert: Callable[[int, torch.Tensor], None] | None = None,
) -> list[torch.Tensor]:
    """E trajectories, each (epochs + 1, P) float32 on CPU, from the real train split `images`
    (uint8 or [0, 1], N×C×H×W) and `labels`.

    Nets come from `config.net` and DSA from `config.dsa_strategy` unless `net_factory` /
    `augment` are given. `load_expert(e)` may return a finished trajectory (resume: it is not
    retrained); `save_expert(e, trajectory)` is called as soon as each new expert is done.
    Normalisation uses the mean/std of `images`, as the distillation objectives do.
    """
    config.validate()
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError("images must be (N, C, H, W) and labels (N,)")
    num_classes = int(labels.max()) + 1
    real = RealImages.from_classes([images[labels == k] for k in range(num_classes) if (labels == k).any()])
    if net_factory is None:
        net_factory = default_net_factory(config.net, images.shape[1], num_classes, images.shape[-1])
    if augment is None and config.dsa_strategy.lower() not in ("", "none"):
        from diffdistill.augment import DSA

        augment = DSA(config.dsa_strategy)
    trajectories = []
    for expert in range(config.num_experts):
        trajectory = load_expert(expert) if load_expert is not None else None
        if trajectory is not None:
            if trajectory.shape[0] != config.epochs + 1:
                raise ValueError(
                    f"stored expert {expert} has {trajectory.shape[0]} snapshots, expected experts.epochs + 1 = "
                    f"{config.epochs + 1}; delete it or match the config"
                )
        else:
            generator = torch.Generator().manual_seed(derive_seed(seed, expert))
            trajectory = train_expert(
                images,
                labels,
                real,
                config,
                generator=generator,
                net_factory=net_factory,
                augment=augment,
                device=device,
            )
            if save_expert is not None:
                save_expert(expert, trajectory)
        trajectories.append(trajectory)
    return trajectories
