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
from diffdistill.nets import arch_family

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "warmup_cosine", "cosine", "constant")
AUGMENTS = ("dsa", "crop_flip", "none")
PRECISIONS = ("fp32", "bf16")
LOSSES = ("ce", "soft_label")


@dataclass(frozen=True)
class ProtocolConfig:
    name: str
    epochs: int
    batch_size: int
    optimizer: str = "sgd"
    lr: float = 0.01
    arch_lr: dict[str, float] = field(default_factory=dict)  # arch family -> lr, overrides `lr`
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True  # False: no weight decay on 1-D params (biases, norm affines)
    schedule: str = "step"
    step_gamma: float = 0.1  # `step`: lr × gamma from half of training on
    warmup_start_factor: float = 1e-7  # `warmup_cosine`: lr starts at factor · lr
    augment: str = "dsa"
    dsa_strategy: str | None = None  # None: dsa_strategy_for(train.meta dataset / source name)
    ema_decay: float | None = None  # test with the EMA weights when set
    loss: str = "ce"
    temperature: float = 20.0  # soft-label KL temperature
    cutmix: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    eval_batch_size: int = 512
    # "bf16": forward and loss under bfloat16 autocast (weights, optimiser state and the test pass stay float32).
    # ~1.8x faster on CPUs with AVX512-BF16/AMX and on recent GPUs; "fp32" is the papers' setting.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("augment", self.augment, AUGMENTS),
            ("loss", self.loss, LOSSES),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise ValueError(f"ProtocolConfig.{name} must be one of {allowed}, got {value!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProtocolConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("lr", "momentum", "weight_decay", "step_gamma", "warmup_start_factor", "temperature",
                     "ema_decay"):
            value = getattr(self, name)
            if not (name == "ema_decay" and value is None) and not _is_finite_number(value):
                raise ValueError(f"ProtocolConfig.{name} must be a finite number, got {value!r}")
        if not 0.0 <= self.momentum < 1.0 or self.weight_decay < 0 or self.step_gamma <= 0:
            raise ValueError(f"ProtocolConfig needs momentum in [0, 1), weight_decay >= 0 and step_gamma > 0; got "
                             f"momentum={self.momentum}, weight_decay={self.weight_decay}, "
                             f"step_gamma={self.step_gamma}")
        if not isinstance(self.arch_lr, dict) or not all(_is_finite_number(v) for v in self.arch_lr.values()):
            raise ValueError(f"ProtocolConfig.arch_lr must map arch names to numbers, got {self.arch_lr!r}")
        if self.dsa_strategy is not None:
            try:
                DSA(self.dsa_strategy)  # an unknown family fails here, before any training
            except ValueError as exc:
                raise ValueError(f"ProtocolConfig.dsa_strategy: {exc}") from exc
        if self.lr <= 0 or any(v <= 0 for v in self.arch_lr.values()):
            raise ValueError(f"learning rates must be > 0, got lr={self.lr}, arch_lr={self.arch_lr}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ProtocolConfig.ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.temperature <= 0:
            raise ValueError(f"ProtocolConfig.temperature must be > 0, got {self.temperature}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("ProtocolConfig.mean and .std must be given together")
        if self.std is not None and (len(self.std) != len(self.mean or ()) or min(self.std) <= 0):
            raise ValueError(f"ProtocolConfig.std must be positive and as long as mean, got {self.std}")

    def lr_for(self, arch: str) -> float:
        return float(self.arch_lr.get(arch_family(arch), self.lr))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


PROTOCOLS: dict[str, ProtocolConfig] = {
    "dc": ProtocolConfig(name="dc", epochs=1000, batch_size=256, optimizer="sgd", lr=0.01, schedule="step"),
    "glad": ProtocolConfig(
        name="glad",
        epochs=1000,
        batch_size=256,
        optimizer="sgd",
        lr=1e-3,
        arch_lr={"convnet": 1e-3, "resnet18": 1e-3, "vgg11": 1e-4, "alexnet": 1e-3, "vit": 1e-3},
        schedule="warmup_cosine",
        ema_decay=0.995,
    ),
    "soft_label": ProtocolConfig(
        name="soft_label",
        epochs=300,
        batch_size=50,
        optimizer="adamw",
        lr=1e-3,
        arch_lr={"convnet": 1e-3, "resnet18": 1e-3, "vgg11": 5e-4, "alexnet": 1e-4, "vit": 1e-4},
        momentum=0.0,
        weight_decay=0.01,
        decay_norm_and_bias=False,
        schedule="cosine",
        augment="crop_flip",
        loss="soft_label",
        temperature=20.0,
        cutmix=True,
    ),
}
PROTOCOL_NAMES: tuple[str, ...] = tuple(PROTOCOLS)


def get_protocol(protocol: str | ProtocolConfig, **overrides: Any) -> ProtocolConfig:
    """A named protocol (or a given config) with field overrides, e.g. `get_protocol("dc", epochs=300)`."""
    if isinstance(protocol, ProtocolConfig):
        base = protocol
    elif isinstance(protocol, str) and protocol in PROTOCOLS:
        base = PROTOCOLS[protocol]
    else:
        raise ValueError(f"unknown protocol {protocol!r}; valid protocols: {', '.join(PROTOCOL_NAMES)}")
    fields = {f.name for f in dataclasses.fields(ProtocolConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown ProtocolConfig fields {unknown}; valid fields: {sorted(fields)}")
    for key in ("mean", "std"):
        if overrides.get(key) is not None:
            values = overrides[key]
            if not isinstance(values, (list, tuple)) or not all(_is_finite_number(v) for v in values):
                raise ValueError(f"ProtocolConfig.{key} must be a list of per-channel numbers, got {values!r}")
            overrides[key] = tuple(float(v) for v in values)
    return dataclasses.replace(base, **overrides)


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
