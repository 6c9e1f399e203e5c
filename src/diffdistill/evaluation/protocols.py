"""Named training protocols for evaluating a (distilled) train set, and their LR schedules.

- `dc`: DC/DSA/DM/MTT hard-label protocol. SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256,
  lr × 0.1 at half of training, DSA (per-sample params), test once at the end.
- `glad`: GLaD's protocol. Same SGD but per-arch lr (ConvNet/ResNet18/AlexNet/ViT 1e-3,
  VGG11 1e-4), linear warm-up from 1e-7·lr over the first half then cosine to 0 over
  the second, DSA, and the test uses the weight EMA (β 0.995, ema-pytorch's
  `power=1` warm-up: the first ~200 updates are a running mean), updated once per epoch.
- `soft_label`: RDED / D3HR protocol. Student matches the teacher's temperature-softened
  outputs (KL, T = 20) on CutMix-ed (λ ~ Beta(1, 1)) random-resized-crop + flip batches;
  AdamW wd 0.01 with no decay on biases / norm weights; cosine to ZERO (the references'
  quarter-cosine stops at 0.5×); per-arch lr (ConvNet/ResNet18 1e-3, VGG11 5e-4,
  AlexNet/ViT 1e-4); batch 50.

The papers' own protocols, exactly as their code runs them (each set is also scored under its paper's protocol,
`evaluate.paper_protocols`):
- `dc_reference`: DC / DSA / DM / MTT `evaluate_synset`: `epochs` + 1 epochs (`range(Epoch + 1)`), lr × 0.1 once
  epoch `epochs // 2 + 1` has run, SGD recreated there (momentum reset); the set's learned `syn_lr` (MTT) as lr
  when its meta has one, else 0.01 (MTT's initial syn_lr: what its code trains a set without a learned one at);
  DC's VGG11 (`vgg11_dc`).
- `glad_reference`: `glad` with GLaD's evaluation nets (`vgg11_glad`: 7×7 pool; `vit_glad`: no LayerNorm, dropout).
- `soft_label_reference`: D3HR's `validate.py` (RDED's): `soft_label` with the batch size by IPC (15 below 10,
  50 below 50, else 100), the quarter cosine per epoch (ends at 0.5× lr), 300 epochs (ImageNet / Tiny; CIFAR
  400: override `epochs`), BatchNorm ConvNet / ResNet-18 (`convnet_bn`, `resnet18_bn`).

Schedules are per optimiser step (`lr_at`), the references' per epoch. Normalisation: per-channel mean/std from
`ProtocolConfig.mean/std` if given, else the train bundle's `meta["mean"]/meta["std"]`
(distilled sets should carry the real split's statistics there), else computed from the
train images.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diffdistill.augment import DSA
from diffdistill.config import ConfigError, build, option
from diffdistill.ddranking import NO_AUGMENT
from diffdistill.nets import NET_NAMES, arch_family

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "warmup_cosine", "cosine", "constant", "quarter_cosine")
# `step`: where lr × gamma starts. half_of_steps: optimiser step total // 2. after_epoch_half_plus_one: DC's
# `lr_schedule = [Epoch // 2 + 1]`, checked after each epoch: from epoch epochs // 2 + 2 (0-based) on.
DECAY_POINTS = ("half_of_steps", "after_epoch_half_plus_one")
AUGMENTS = ("dsa", "crop_flip", "none")
PRECISIONS = ("fp32", "bf16")
LOSSES = ("ce", "soft_label")


@dataclass(frozen=True)
class ProtocolConfig:
    """One training protocol; built and checked through `diffdistill.config` (`get_protocol`)."""

    name: str
    epochs: int = option(min=1)
    batch_size: int = option(min=1)
    optimizer: str = option("sgd", choices=OPTIMIZERS)
    lr: float = option(0.01, gt=0)
    arch_lr: dict[str, float] = field(default_factory=dict)  # arch family -> lr, overrides `lr`
    momentum: float = option(0.9, min=0, lt=1)
    weight_decay: float = option(5e-4, min=0)
    decay_norm_and_bias: bool = True  # False: no weight decay on 1-D params (biases, norm affines)
    schedule: str = option("step", choices=SCHEDULES)
    step_gamma: float = option(0.1, gt=0)  # `step`: lr × gamma from the decay point on
    decay_at: str = option("half_of_steps", choices=DECAY_POINTS)  # `step`: the decay point
    reset_optimizer_at_decay: bool = False  # `step`: a fresh optimiser (no momentum) at the decay, as DC recreates SGD
    extra_epoch: bool = False  # train epochs + 1 epochs, as DC / MTT's `range(Epoch + 1)`
    # {ipc: batch size}: a set whose meta `ipc` is >= a key trains with the largest such key's batch size (D3HR:
    # {1: 15, 10: 50, 50: 100}); sets without an ipc (the full data) and empty tables use `batch_size`
    batch_size_by_ipc: dict[int, int] = field(default_factory=dict)
    lr_from_meta: str | None = None  # a train-set meta key holding the lr (MTT's learned "syn_lr"); absent: `lr`
    nets: dict[str, str] = field(default_factory=dict)  # arch -> build_net name trained for it (reference nets)
    warmup_start_factor: float = 1e-7  # `warmup_cosine`: lr starts at factor · lr
    augment: str = option("dsa", choices=AUGMENTS)
    dsa_strategy: str | None = None  # None: dsa_strategy_for(train.meta dataset / source name)
    ema_decay: float | None = option(None, gt=0, lt=1)  # test with the EMA weights when set
    loss: str = option("ce", choices=LOSSES)
    temperature: float = option(20.0, gt=0)  # soft-label KL temperature
    cutmix: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    eval_batch_size: int = option(512, min=1)
    # "bf16": forward and loss under bfloat16 autocast (weights, optimiser state and the test pass stay float32).
    # ~1.8x faster on CPUs with AVX512-BF16/AMX and on recent GPUs; "fp32" is the papers' setting.
    precision: str = option("fp32", choices=PRECISIONS)

    def check(self, path: str) -> None:
        bad = {k: v for k, v in self.arch_lr.items() if v <= 0}
        if bad:
            raise ConfigError(f"{path}.arch_lr has learning rates <= 0: {bad}")
        if self.schedule != "step" and (self.decay_at != "half_of_steps" or self.reset_optimizer_at_decay):
            key = "reset_optimizer_at_decay" if self.reset_optimizer_at_decay else "decay_at"
            raise ConfigError(f"{path}.{key} applies to schedule 'step' only; this protocol's schedule is "
                              f"{self.schedule!r}")
        table = self.batch_size_by_ipc
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or isinstance(v, bool)
               or not isinstance(v, int) or v < 1 for k, v in table.items()):
            raise ConfigError(f"{path}.batch_size_by_ipc must map IPCs (ints >= 1) to batch sizes (ints >= 1), "
                              f"got {table}")
        unknown = {arch: net for arch, net in self.nets.items() if net not in NET_NAMES}
        if unknown:
            raise ConfigError(f"{path}.nets names unknown nets {unknown}; valid nets: {', '.join(NET_NAMES)}")
        if self.dsa_strategy is not None:
            try:
                DSA(self.dsa_strategy)  # an unknown family fails here, before any training
            except ValueError as exc:
                raise ConfigError(f"{path}.dsa_strategy: {exc}") from exc
        if (self.mean is None) != (self.std is None):
            raise ConfigError(f"{path}.mean and {path}.std must be given together")
        if self.std is not None and (len(self.std) != len(self.mean or ()) or min(self.std) <= 0):
            raise ConfigError(f"{path}.std must be positive and as long as {path}.mean, got {list(self.std)}")

    def lr_for(self, arch: str) -> float:
        return float(self.arch_lr.get(arch_family(arch), self.lr))

    def learning_rate(self, arch: str, meta: Mapping[str, Any]) -> tuple[float, str]:
        """(base lr, where it came from) for `arch` on a train set with this `meta`: the set's own lr
        (`lr_from_meta`, e.g. MTT's learned syn_lr: "meta.syn_lr") when it carries one, else `lr_for(arch)`
        ("protocol")."""
        if self.lr_from_meta is None or meta.get(self.lr_from_meta) is None:
            return self.lr_for(arch), "protocol"
        value = meta[self.lr_from_meta]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"the train set's meta {self.lr_from_meta!r} = {value!r} is not a positive learning rate; "
                             f"protocol {self.name!r} trains with it (MTT's learned syn_lr can go negative or "
                             "diverge: re-distill the set, or evaluate it under a protocol without lr_from_meta)")
        return float(value), f"meta.{self.lr_from_meta}"

    def batch_size_for(self, ipc: int | None) -> int:
        """The batch size for a set of `ipc` images per class (`batch_size_by_ipc`; None: `batch_size`)."""
        fitting = [k for k in self.batch_size_by_ipc if ipc is not None and k <= ipc]
        return self.batch_size_by_ipc[max(fitting)] if fitting else self.batch_size

    def net_for(self, arch: str) -> str:
        """The `build_net` name trained for the evaluation architecture `arch` (`nets`, else `arch` itself)."""
        return self.nets.get(arch, arch)

    @property
    def epochs_trained(self) -> int:
        return self.epochs + 1 if self.extra_epoch else self.epochs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_DC = ProtocolConfig(name="dc", epochs=1000, batch_size=256, optimizer="sgd", lr=0.01, schedule="step")
# GLaD's evaluate_synset: per-arch lr, warm-up then cosine, weight EMA.
_GLAD = ProtocolConfig(name="glad", epochs=1000, batch_size=256, optimizer="sgd", lr=1e-3, schedule="warmup_cosine",
                       ema_decay=0.995,
                       arch_lr={"convnet": 1e-3, "resnet18": 1e-3, "vgg11": 1e-4, "alexnet": 1e-3, "vit": 1e-3})
# RDED / D3HR: teacher soft labels (KL, T = 20) on CutMix-ed crops, AdamW without decay on biases / norms.
_SOFT_LABEL = ProtocolConfig(name="soft_label", epochs=300, batch_size=50, optimizer="adamw", lr=1e-3, momentum=0.0,
                             weight_decay=0.01, decay_norm_and_bias=False, schedule="cosine", augment="crop_flip",
                             loss="soft_label", temperature=20.0, cutmix=True,
                             arch_lr={"convnet": 1e-3, "resnet18": 1e-3, "vgg11": 5e-4, "alexnet": 1e-4, "vit": 1e-4})
PROTOCOLS: dict[str, ProtocolConfig] = {
    "dc": _DC,
    "glad": _GLAD,
    "soft_label": _SOFT_LABEL,
    # DC/DSA/DM/MTT's evaluate_synset (utils.py of both repositories): range(Epoch + 1), decay and a fresh SGD once
    # epoch Epoch // 2 + 1 has run; MTT trains with its learned syn_lr (lr_net = syn_lr.item()).
    "dc_reference": dataclasses.replace(
        _DC, name="dc_reference", extra_epoch=True, decay_at="after_epoch_half_plus_one",
        reset_optimizer_at_decay=True, lr_from_meta="syn_lr", nets={"vgg11": "vgg11_dc"}),
    "glad_reference": dataclasses.replace(_GLAD, name="glad_reference", nets={"vgg11": "vgg11_glad", "vit": "vit_glad"}),
    # D3HR's validate.py (RDED's): batch 15 / 50 / 100 by IPC, LambdaLR 0.5·(1 + cos(π·epoch / (2·epochs))).
    "soft_label_reference": dataclasses.replace(
        _SOFT_LABEL, name="soft_label_reference", schedule="quarter_cosine", batch_size_by_ipc={1: 15, 10: 50, 50: 100},
        nets={"convnet": "convnet_bn", "resnet18": "resnet18_bn"}),
}
# Each protocol also without its training augmentation (no DSA / crop-flip, no CutMix): DD-Ranking's
# augmentation-robust score compares a set with a random subset under both (diffdistill.ddranking).
PROTOCOLS.update({f"{name}{NO_AUGMENT}": dataclasses.replace(protocol, name=f"{name}{NO_AUGMENT}", augment="none",
                                                             cutmix=False)
                  for name, protocol in list(PROTOCOLS.items())})
PROTOCOL_NAMES: tuple[str, ...] = tuple(PROTOCOLS)


def get_protocol(protocol: str | ProtocolConfig, *, path: str = "protocol", **overrides: Any) -> ProtocolConfig:
    """A named protocol (or a given config) with field overrides, e.g. `get_protocol("dc", epochs=300)`, every
    field checked (`diffdistill.config`); errors name `<path>.<field>`."""
    if isinstance(protocol, ProtocolConfig):
        base = protocol
    elif isinstance(protocol, str) and protocol in PROTOCOLS:
        base = PROTOCOLS[protocol]
    else:
        raise ConfigError(f"unknown protocol {protocol!r}; valid protocols: {', '.join(PROTOCOL_NAMES)}")
    if not overrides and isinstance(protocol, ProtocolConfig):
        return protocol
    return build(ProtocolConfig, {**base.to_dict(), **overrides}, path)


def decay_step(protocol: ProtocolConfig, total_steps: int, steps_per_epoch: int = 1) -> int:
    """The first optimiser step at lr·gamma under `schedule: step` (>= total_steps: the run never decays)."""
    if protocol.decay_at == "half_of_steps":
        return total_steps // 2
    return (protocol.epochs // 2 + 2) * steps_per_epoch  # DC decays after epoch epochs // 2 + 1 has run


def lr_at(protocol: ProtocolConfig, step: int, total_steps: int, base_lr: float | None = None, *,
          steps_per_epoch: int = 1) -> float:
    """Learning rate for optimiser step `step` (0-based) of `total_steps`; `base_lr` defaults to `protocol.lr`.

    step:           base until `decay_step`, then base·gamma.
    warmup_cosine:  linear from start_factor·base to base over the first total//2 steps,
                    then base·½(1 + cos(π·p)), p going 0 → 1 over the rest (0 at step == total).
    cosine:         base·½(1 + cos(π·step/total)), 0 at step == total.
    quarter_cosine: per epoch e = step // steps_per_epoch, base·½(1 + cos(π·e / (2·epochs))): D3HR / RDED's
                    LambdaLR, stepped once per epoch; it ends near 0.5·base, not 0.
    """
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"need 0 <= step <= total_steps and total_steps >= 1, got step={step}, total={total_steps}")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    base = protocol.lr if base_lr is None else base_lr
    half = total_steps // 2
    if protocol.schedule == "constant":
        return base
    if protocol.schedule == "step":
        return base * protocol.step_gamma if step >= decay_step(protocol, total_steps, steps_per_epoch) else base
    if protocol.schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    if protocol.schedule == "quarter_cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * (step // steps_per_epoch) / (2 * protocol.epochs)))
    # warmup_cosine
    if step < half:
        start = protocol.warmup_start_factor
        return base * (start + (1.0 - start) * step / half)
    progress = (step - half) / max(total_steps - half, 1)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))
