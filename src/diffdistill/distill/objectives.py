"""Distillation objectives shared by pixel-space and latent (LD3M) distillation: DC, DM, MTT.

Every objective sees synthetic images in [0, 1] (N, C, H, W) and normalises them with the real
train split's per-channel mean/std, exactly like the real batches. Differentiable siamese
augmentation (DSA) draws one parameter set per (class, round) and applies it to the real and the
synthetic batch alike. All randomness comes from the generator handed to each call.

An objective is driven per distillation iteration as
    rounds = obj.start_iteration(g)                       # fresh random net, expert pick, ...
    for r in range(rounds):
        if r > 0: obj.prepare_round(images, labels, g)    # DC: train the net on the current syn set
        loss = obj.loss(images, labels, g)                # differentiable in `images`
and may own extra learnable tensors (`extra_parameters`, MTT's syn_lr).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from diffdistill.config import option
from diffdistill.data.bundle import to_unit
from diffdistill.nets import NET_NAMES, NetFactory
from diffdistill.rng import derive_seed

# DC/DSA's (outer_loop, inner_loop) per images-per-class (DatasetCondensation `get_loops`).
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
DC_SCHEDULES = ("dc_table", "glad")


class Augment(Protocol):
    def sample_params(self, batch_size: int, generator: torch.Generator, siamese: bool = ...) -> object: ...

    def apply(self, x: torch.Tensor, params: object) -> torch.Tensor: ...


# --- real data ---


@dataclass
class RealImages:
    """Real train images grouped by class (uint8 or float [0, 1]) and the split's per-channel mean/std."""

    by_class: list[torch.Tensor]
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)

    @classmethod
    def from_classes(cls, by_class: Sequence[torch.Tensor]) -> RealImages:
        by_class = list(by_class)
        if not by_class or any(x.ndim != 4 or x.shape[0] == 0 for x in by_class):
            raise ValueError("real images must be one non-empty (N, C, H, W) tensor per class")
        total = torch.zeros(by_class[0].shape[1], dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        count = 0
        for x in by_class:
            unit = to_unit(x).double()
            total += unit.sum(dim=(0, 2, 3))
            total_sq += unit.square().sum(dim=(0, 2, 3))
            count += unit.numel() // unit.shape[1]
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
        return cls(by_class, mean.float(), std.float())

    @classmethod
    def from_bundle(cls, bundle) -> RealImages:
        """A real split `TensorBundle` (images uint8 N×C×H×W, labels int64)."""
        num_classes = bundle.num_classes
        labels = bundle.labels
        return cls.from_classes([bundle.images[labels == k] for k in range(num_classes)])

    @property
    def num_classes(self) -> int:
        return len(self.by_class)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.by_class[0].shape[1:])

    def normalize(self, images_unit: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(images_unit.device).view(1, -1, 1, 1)
        std = self.std.to(images_unit.device).view(1, -1, 1, 1)
        return (images_unit - mean) / std

    def sample(self, label: int, count: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
        """`count` random images of class `label` (all of them if the class is smaller), normalised."""
        pool = self.by_class[label]
        index = torch.randperm(pool.shape[0], generator=generator)[:count]
        return self.normalize(to_unit(pool[index]).to(device))


def _class_batches(objective, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
    """Per class present in `labels`: (label, its indices, an augmented real batch, the augmented synthetic images),
    with the same DSA parameters on both (siamese).

    One draw from `generator` seeds the call; each class then draws its real batch and DSA parameters from its
    own stream of (that seed, class), so the draws of a class do not depend on which other classes are present
    (a class shard of DM sees exactly the batches of the full run)."""
    syn_all = objective.real.normalize(images)
    call_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    for label, index in enumerate(_class_indices(labels, objective.real.num_classes)):
        if index.numel() == 0:
            continue
        own = torch.Generator(device=generator.device).manual_seed(derive_seed(call_seed, label))
        real = objective.real.sample(label, objective.config.batch_real, own, objective.device)
        real, syn = _augment_pair(objective.augment, real, syn_all[index], own)
        yield label, index, real, syn


def _augment_pair(augment: Augment | None, real: torch.Tensor, syn: torch.Tensor, generator: torch.Generator):
    """Siamese DSA: one parameter draw for this (class, round), applied to both batches."""
    if augment is None:
        return real, syn
    params = augment.sample_params(real.shape[0], generator, siamese=True)
    return augment.apply(real, params), augment.apply(syn, params)


def augment_per_sample(augment: Augment | None, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-sample DSA, as used when training a net (DC inner loop, MTT student, experts)."""
    if augment is None:
        return x
    return augment.apply(x, augment.sample_params(x.shape[0], generator, siamese=False))


def _class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    return [torch.nonzero(labels == k).flatten() for k in range(num_classes)]


# --- DC: gradient matching ---


def match_distance(grad_real: torch.Tensor, grad_syn: torch.Tensor) -> torch.Tensor:
    """DC's layer distance: sum over output channels of (1 - cos) between the two gradients.

    Conv / linear weights are flattened per output channel; 1-D tensors (biases, norm affines)
    contribute 0, as in the reference `distance_wb`.
    """
    if grad_real.ndim == 1:
        return grad_real.new_zeros(())
    real = grad_real.reshape(grad_real.shape[0], -1)
    syn = grad_syn.reshape(grad_syn.shape[0], -1)
    cos = (real * syn).sum(-1) / (real.norm(dim=-1) * syn.norm(dim=-1) + 1e-6)
    return (1.0 - cos).sum()


@dataclass
class MatchingConfig:
    """What every objective trains or embeds with: a net of the registry (MTT: the experts' architecture)."""

    net: str = option("convnet", choices=NET_NAMES, help="the matching / embedding / student net (nets registry)")


@dataclass
class DCConfig(MatchingConfig):
    """DC/DSA gradient matching (`diffdistill.config` dataclass; LD3M's `ld3m.dc`)."""

    batch_real: int = option(256, min=1, help="real images per class and round")
    batch_train: int = option(256, min=1, help="minibatch of the inner-loop net update on synthetic data")
    lr_net: float = option(0.01, gt=0, help="SGD learning rate of the inner-loop net update")
    # (outer_loop, inner_loop) when both are not given: "dc_table" = DC_LOOPS[ipc] (DC/DSA in pixel space),
    # "glad" = 1/1 (GLaD's and LD3M's default in prior spaces: one matching round, the net never trained on the set);
    # None = the caller's default (LD3M: "glad" in prior spaces, "dc_table" in pixel space; alone: "dc_table").
    schedule: str | None = option(None, choices=DC_SCHEDULES, help="loop schedule when the loops are not both set")
    outer_loop: int | None = option(None, min=1, help="matching rounds per iteration (with inner_loop: overrides "
                                                      "schedule)")
    inner_loop: int | None = option(None, min=0, help="net training epochs on the set between rounds")

    def loops(self, ipc: int) -> tuple[int, int]:
        """(outer_loop, inner_loop) for `ipc` images per class."""
        if self.outer_loop is not None and self.inner_loop is not None:
            return self.outer_loop, self.inner_loop
        if self.schedule == "glad":
            return 1, 1
        if ipc not in DC_LOOPS:
            raise ValueError(
                f"DC has no loop table entry for ipc={ipc} (known: {sorted(DC_LOOPS)}); "
                "set dc.outer_loop and dc.inner_loop"
            )
        return DC_LOOPS[ipc]


class GradientMatching:
    """DC/DSA: match the gradients a fresh random net gets from real and synthetic batches, per class."""

    def __init__(
        self,
        real: RealImages,
        config: DCConfig,
        *,
        ipc: int,
        net_factory: NetFactory,
        augment: Augment | None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.real, self.config, self.net_factory, self.augment, self.device = real, config, net_factory, augment, device
        self.outer_loop, self.inner_loop = config.loops(ipc)
        self.net: nn.Module | None = None

    def extra_parameters(self) -> dict[str, tuple[torch.Tensor, float]]:
        return {}

    def start_iteration(self, generator: torch.Generator) -> int:
        self.net = self.net_factory(generator).to(self.device).train()
        _freeze_batchnorm(self.net, self.real, generator, self.device)
        return self.outer_loop

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        params = [p for p in self.net.parameters() if p.requires_grad]
        total = images.new_zeros(())
        for label, index, real, syn in _class_batches(self, images, labels, generator):
            grads_real = torch.autograd.grad(
                F.cross_entropy(self.net(real), torch.full((real.shape[0],), label, device=real.device)), params
            )
            grads_syn = torch.autograd.grad(F.cross_entropy(self.net(syn), labels[index]), params, create_graph=True)
            for g_real, g_syn in zip(grads_real, grads_syn, strict=True):
                total = total + match_distance(g_real.detach(), g_syn)
        return total

    def prepare_round(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> None:
        """Between outer loops: `inner_loop` epochs of SGD on the (detached) synthetic set."""
        optimizer = torch.optim.SGD(self.net.parameters(), lr=self.config.lr_net)
        syn = self.real.normalize(images.detach())
        for _ in range(self.inner_loop):
            order = torch.randperm(syn.shape[0], generator=generator).to(syn.device)
            for batch in order.split(self.config.batch_train):
                x = augment_per_sample(self.augment, syn[batch], generator)
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(self.net(x), labels[batch]).backward()
                optimizer.step()


def _freeze_batchnorm(net: nn.Module, real: RealImages, generator: torch.Generator, device) -> None:
    """BN nets (reference DC): set running stats from 16 real images per class, then use them."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    batch = torch.cat([real.sample(k, 16, generator, device) for k in range(real.num_classes)])
    with torch.no_grad():
        net(batch)
    for module in norms:
        module.eval()


# --- DM: distribution matching ---


@dataclass
class DMConfig(MatchingConfig):
    """DM distribution matching (`diffdistill.config` dataclass; LD3M's `ld3m.dm`)."""

    batch_real: int = option(256, min=1, help="real images per class and iteration")


class DistributionMatching:
    """DM: per class, squared distance between mean embeddings of real and synthetic batches
    under a fresh, frozen random net; summed over classes."""

    def __init__(self, real: RealImages, config: DMConfig, *, net_factory: NetFactory, augment: Augment | None,
                 device: torch.device | str = "cpu") -> None:
        self.real, self.config, self.net_factory, self.augment, self.device = real, config, net_factory, augment, device
        self.net: nn.Module | None = None

    def extra_parameters(self) -> dict[str, tuple[torch.Tensor, float]]:
        return {}

    def start_iteration(self, generator: torch.Generator) -> int:
        self.net = self.net_factory(generator).to(self.device).train()
        for p in self.net.parameters():
            p.requires_grad_(False)
        return 1

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        total = images.new_zeros(())
        for _label, _index, real, syn in _class_batches(self, images, labels, generator):
            gap = self.net.features(real).mean(0) - self.net.features(syn).mean(0)
            total = total + gap.square().sum()
        return total

    def prepare_round(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> None:
        return None


# --- MTT: trajectory matching ---


def flatten_parameters(net: nn.Module) -> torch.Tensor:
    """All parameters, in `named_parameters` order, as one flat vector (the expert snapshot format)."""
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def unflatten_parameters(net: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of `flat` shaped like `net`'s parameters, keyed for `functional_call`."""
    size = sum(p.numel() for p in net.parameters())
    if flat.numel() != size:
        raise ValueError(f"flat parameter vector has {flat.numel()} entries but the net has {size}")
    out, offset = {}, 0
    for name, p in net.named_parameters():
        out[name] = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return out


def unroll_student(
    net: nn.Module,
    start: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    syn_lr: torch.Tensor,
    syn_steps: int,
    batch_syn: int,
    augment: Augment | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """`syn_steps` SGD steps (lr = syn_lr) of `net`'s architecture from flat params `start` on
    minibatches of (already normalised) `images`, keeping the graph (create_graph) so the final
    params are differentiable in images and syn_lr. Minibatches walk a random permutation and
    redraw it when exhausted, as MTT does."""
    theta = start.detach().clone().requires_grad_(True)
    order: list[torch.Tensor] = []
    for _ in range(syn_steps):
        if not order:
            order = list(torch.randperm(images.shape[0], generator=generator).to(images.device).split(batch_syn))
        batch = order.pop(0)
        x = augment_per_sample(augment, images[batch], generator)
        logits = functional_call(net, unflatten_parameters(net, theta), (x,))
        grad = torch.autograd.grad(F.cross_entropy(logits, labels[batch]), theta, create_graph=True)[0]
        theta = theta - syn_lr * grad
    return theta


@dataclass
class MTTConfig(MatchingConfig):
    """MTT trajectory matching (`diffdistill.config` dataclass; LD3M's `ld3m.mtt`)."""

    expert_epochs: int = option(3, min=1, help="M: target = start + M")
    max_start_epoch: int = option(5, min=1, help="start epoch drawn from [0, max_start_epoch)")
    syn_steps: int = option(20, min=1, help="N student steps")
    batch_syn: int | None = option(None, min=1, help="student minibatch; None: the whole synthetic set per step")
    lr_teacher: float = option(0.01, gt=0, help="initial syn_lr")
    lr_lr: float = option(1e-6, min=0, help="learning rate of syn_lr")


class TrajectoryMatching:
    """MTT: N student steps on synthetic data from expert epoch t should land near expert epoch t + M.
    loss = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2; syn_lr is learnable."""

    def __init__(
        self,
        real: RealImages,
        experts: Sequence[torch.Tensor] | torch.Tensor,
        config: MTTConfig,
        *,
        net_factory: NetFactory,
        augment: Augment | None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.real, self.config, self.augment, self.device = real, config, augment, device
        self.experts = list(experts)
        if not self.experts:
            raise ValueError("MTT needs at least one expert trajectory (run the experts pipeline first)")
        needed = config.max_start_epoch + config.expert_epochs
        shortest = min(e.shape[0] for e in self.experts)
        if shortest < needed:
            raise ValueError(
                f"expert trajectories hold {shortest} snapshots but mtt.max_start_epoch + mtt.expert_epochs = "
                f"{needed} are needed; train longer experts or lower those settings"
            )
        # Architecture template for functional calls; its own weights are never used.
        self.net = net_factory(torch.Generator().manual_seed(0)).to(device).train()
        size = sum(p.numel() for p in self.net.parameters())
        if self.experts[0].shape[1] != size:
            raise ValueError(
                f"expert snapshots have {self.experts[0].shape[1]} parameters but mtt.net={config.net!r} has {size}; "
                "use the net the experts were trained with"
            )
        self.syn_lr = torch.tensor(config.lr_teacher, device=device, requires_grad=True)
        self.start_epoch, self.expert = 0, 0

    def extra_parameters(self) -> dict[str, tuple[torch.Tensor, float]]:
        return {"syn_lr": (self.syn_lr, self.config.lr_lr)}

    def start_iteration(self, generator: torch.Generator) -> int:
        self.expert = int(torch.randint(len(self.experts), (1,), generator=generator))
        self.start_epoch = int(torch.randint(self.config.max_start_epoch, (1,), generator=generator))
        return 1

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        trajectory = self.experts[self.expert]
        start = trajectory[self.start_epoch].to(images.device)
        target = trajectory[self.start_epoch + self.config.expert_epochs].to(images.device)
        final = unroll_student(
            self.net,
            start,
            self.real.normalize(images),
            labels,
            syn_lr=self.syn_lr,
            syn_steps=self.config.syn_steps,
            batch_syn=self.config.batch_syn or images.shape[0],
            augment=self.augment,
            generator=generator,
        )
        return (final - target).square().sum() / (start - target).square().sum()

    def prepare_round(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> None:
        return None
