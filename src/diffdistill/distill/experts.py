"""MTT expert trajectories: nets trained on the real train split, one flat parameter snapshot per epoch.

Each expert has its own generator, seeded from (seed, expert index) alone, so training experts
0..E-1 in one go or resuming after expert e gives the same bytes. Snapshot 0 is the initial net;
the flat layout is `objectives.flatten_parameters` (named_parameters order), which the MTT
student unflattens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from diffdistill import nets
from diffdistill.augment import DEFAULT_STRATEGY
from diffdistill.config import build, option, to_dict
from diffdistill.data.bundle import to_unit
from diffdistill.distill.objectives import Augment, NetFactory, RealImages, augment_per_sample, flatten_parameters
from diffdistill.progress import Progress
from diffdistill.rng import derive_seed


@dataclass
class ExpertConfig:
    """How the experts train (`diffdistill.config` dataclass; MTT buffer.py: SGD, no momentum, no weight decay)."""

    num_experts: int = option(10, min=1, help="trajectories to train")
    epochs: int = option(15, min=1, help="epochs per expert (snapshots: epochs + 1)")
    lr: float = option(0.01, gt=0, help="SGD learning rate")
    momentum: float = option(0.0, min=0, help="SGD momentum")
    weight_decay: float = option(0.0, min=0, help="SGD weight decay")
    batch_size: int = option(256, min=1, help="real images per SGD step")
    net: str = option("convnet", choices=nets.NET_NAMES, help="the architecture; must match the MTT objective's mtt.net")
    dsa_strategy: str = option(DEFAULT_STRATEGY, help="DSA on the real images; 'none': no augmentation")


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
    progress: Progress | None = None,
) -> torch.Tensor:
    """One trajectory (epochs + 1, P) on the whole split `images` (uint8 or [0, 1]), DSA per sample; `progress`
    advances by one per epoch."""
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
        if progress is not None:
            progress.advance()
    return torch.stack(snapshots)


def train_experts(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: ExpertConfig | Mapping[str, Any],
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
    Normalisation uses the mean/std of `images`, as the distillation objectives do. `config` (an
    `ExpertConfig` or its mapping) is checked by `diffdistill.config.build`, errors naming `experts.<key>`.
    """
    config = build(ExpertConfig, to_dict(config) if isinstance(config, ExpertConfig) else config, "experts")
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError("images must be (N, C, H, W) and labels (N,)")
    num_classes = int(labels.max()) + 1
    real = RealImages.from_classes([images[labels == k] for k in range(num_classes) if (labels == k).any()])
    if net_factory is None:
        net_factory = nets.net_factory(config.net, images.shape[1], num_classes, images.shape[-1])
    if augment is None and config.dsa_strategy.lower() not in ("", "none"):
        from diffdistill.augment import DSA

        augment = DSA(config.dsa_strategy)
    trajectories = []
    with Progress(f"experts ({config.net})", config.num_experts * config.epochs, unit="epochs") as bar:
        for expert in range(config.num_experts):
            bar.advance(0, expert=f"{expert + 1}/{config.num_experts}")
            trajectory = load_expert(expert) if load_expert is not None else None
            if trajectory is not None:
                if trajectory.shape[0] != config.epochs + 1:
                    raise ValueError(
                        f"stored expert {expert} has {trajectory.shape[0]} snapshots, expected experts.epochs + 1 = "
                        f"{config.epochs + 1}; delete it or match the config"
                    )
                bar.skip(config.epochs)
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
                    progress=bar,
                )
                if save_expert is not None:
                    save_expert(expert, trajectory)
            trajectories.append(trajectory)
    return trajectories


@torch.no_grad()
def final_train_scores(trajectory: torch.Tensor, net_factory: NetFactory, images: torch.Tensor,
                       labels: torch.Tensor, real: RealImages, device: torch.device | str = "cpu",
                       batch_size: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of an expert's last snapshot on the un-augmented split `images` (uint8 or
    [0, 1]), normalised with `real`'s statistics; the net in train mode, as the MTT student runs."""
    net = net_factory(torch.Generator().manual_seed(0)).to(device).train()
    torch.nn.utils.vector_to_parameters(trajectory[-1].to(device), net.parameters())
    correct, loss = 0, 0.0
    for start in range(0, len(labels), batch_size):
        x = real.normalize(to_unit(images[start:start + batch_size]).to(device))
        y = labels[start:start + batch_size].to(device)
        logits = net(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return correct / len(labels), loss / len(labels)
