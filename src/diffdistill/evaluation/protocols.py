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

Schedules are per optimiser step (`lr_at`). Normalisation: per-channel mean/std from
`ProtocolConfig.mean/std` if given, else the train bundle's `meta["mean"]/meta["std"]`
(distilled sets should carry the real split's statistics there), else computed from the
train images.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from diffdistill.augment import DSA
from diffdistill.config import ConfigError, build, option
from diffdistill.nets import arch_family

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "warmup_cosine", "cosine", "constant")
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
    step_gamma: float = option(0.1, gt=0)  # `step`: lr × gamma from half of training on
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, ProtocolConfig] = {
    "dc": ProtocolConfig(name="dc", epochs=1000, batch_size=256, optimizer="sgd", lr=0.01, schedule="step"),
    # GLaD's evaluate_synset: per-arch lr, warm-up then cosine, weight EMA.
    "glad": ProtocolConfig(name="glad", epochs=1000, batch_size=256, optimizer="sgd", lr=1e-3, schedule="warmup_cosine",
                           ema_decay=0.995,
                           arch_lr={"convnet": 1e-3, "resnet18": 1e-3, "vgg11": 1e-4, "alexnet": 1e-3, "vit": 1e-3}),
    # RDED / D3HR: teacher soft labels (KL, T = 20) on CutMix-ed crops, AdamW without decay on biases / norms.
    "soft_label": ProtocolConfig(name="soft_label", epochs=300, batch_size=50, optimizer="adamw", lr=1e-3,
                                 momentum=0.0, weight_decay=0.01, decay_norm_and_bias=False, schedule="cosine",
                                 augment="crop_flip", loss="soft_label", temperature=20.0, cutmix=True,
                                 arch_lr={"convnet": 1e-3, "resnet18": 1e-3, "vgg11": 5e-4, "alexnet": 1e-4,
                                          "vit": 1e-4}),
}
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


def lr_at(protocol: ProtocolConfig, step: int, total_steps: int, base_lr: float | None = None) -> float:
    """Learning rate for optimiser step `step` (0-based) of `total_steps`; `base_lr` defaults to `protocol.lr`.

    step:          base until step total//2, then base·gamma.
    warmup_cosine: linear from start_factor·base to base over the first total//2 steps,
                   then base·½(1 + cos(π·p)), p going 0 → 1 over the rest (0 at step == total).
    cosine:        base·½(1 + cos(π·step/total)), 0 at step == total.
    """
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"need 0 <= step <= total_steps and total_steps >= 1, got step={step}, total={total_steps}")
    base = protocol.lr if base_lr is None else base_lr
    half = total_steps // 2
    if protocol.schedule == "constant":
        return base
    if protocol.schedule == "step":
        return base * protocol.step_gamma if step >= half else base
    if protocol.schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    # warmup_cosine
    if step < half:
        start = protocol.warmup_start_factor
        return base * (start + (1.0 - start) * step / half)
    progress = (step - half) / max(total_steps - half, 1)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))
