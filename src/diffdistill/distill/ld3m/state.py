"""What an LD3M run learns: `LD3MState`, its seeded init (`init_state`), the classes a class shard computes, and
its checkpoint in a `diffdistill.workdir.WorkDir` (the one resume mechanism)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diffdistill import rng
from diffdistill.data.bundle import to_unit
from diffdistill.diffusion.residual import ResidualNoise
from diffdistill.distill.ld3m.config import RESUMABLE_KEYS
from diffdistill.distill.objectives import RealImages
from diffdistill.workdir import WorkDir

if TYPE_CHECKING:
    from diffdistill.distill.ld3m.config import LD3MConfig
    from diffdistill.distill.ld3m.spaces import SpaceSpec

_INIT_STREAM = 2**40  # seed stream of the init generator, far from the iteration streams 0, 1, 2, ...
CHECKPOINT = "ld3m_checkpoint"  # the WorkDir unit: <dir>/ld3m_checkpoint.safetensors (+ a readable .json)
CHECKPOINT_FILE = f"{CHECKPOINT}.safetensors"


@dataclass
class LD3MState:
    """Everything a distillation run learns or must keep fixed to regenerate its images."""

    labels: torch.Tensor  # (N,) int64
    latents: torch.Tensor | None = None  # Z (N, C, h, w)
    conditions: torch.Tensor | None = None  # c (N, D)
    images: torch.Tensor | None = None  # pixel space: (N, C, H, W) in [0, 1] (unclamped while learning)
    noise: ResidualNoise | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # objective-owned, e.g. MTT syn_lr
    momentum: dict[str, torch.Tensor] = field(default_factory=dict)
    step: int = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"labels": self.labels}
        for name in ("latents", "conditions", "images"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.noise is not None:
            out.update(self.noise.tensors())
        out.update({f"extra.{k}": v for k, v in self.extras.items()})
        out.update({f"momentum.{k}": v for k, v in self.momentum.items()})
        return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], step: int) -> LD3MState:
        noise = ResidualNoise.from_tensors(tensors) if "noise.start" in tensors else None
        return cls(
            labels=tensors["labels"],
            latents=tensors.get("latents"),
            conditions=tensors.get("conditions"),
            images=tensors.get("images"),
            noise=noise,
            extras={k[6:]: v for k, v in tensors.items() if k.startswith("extra.")},
            momentum={k[9:]: v for k, v in tensors.items() if k.startswith("momentum.")},
            step=step,
        )

    def to(self, device: torch.device | str) -> LD3MState:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return dataclasses.replace(
            self,
            labels=self.labels.to(device),
            latents=move(self.latents),
            conditions=move(self.conditions),
            images=move(self.images),
            noise=None if self.noise is None else self.noise.to(device),
            extras={k: v.to(device) for k, v in self.extras.items()},
            momentum={k: v.to(device) for k, v in self.momentum.items()},
        )

    def learnable(self, spec: SpaceSpec) -> dict[str, torch.Tensor]:
        """The tensors the space's SGD step updates, in `spec.learnable` order."""
        return {name: getattr(self, name) for name in spec.learnable}


def init_state(real: RealImages, prior: Any, config: LD3MConfig, classes: tuple[int, int] | None = None) -> LD3MState:
    """Labels class-major over `classes` [start, stop) (None: all); per class, a generator of (seed, class)
    picks the real images to encode (or draws N(0, 1)) and then draws the sampler's stored noise, so a
    class shard starts from exactly the state the full run has for its classes. c = prior.condition(class).
    What is drawn and learnt is the space's (`SpaceSpec.init`)."""
    first, stop = (0, real.num_classes) if classes is None else classes
    generators = [rng.generator(config.seed, _INIT_STREAM, k) for k in range(first, stop)]
    labels = torch.arange(first, stop).repeat_interleave(config.ipc).to(torch.device(config.device))
    picks = None
    if config.init == "real":
        picks = []
        for label, generator in zip(range(first, stop), generators, strict=True):
            pool = real.by_class[label]
            if pool.shape[0] < config.ipc:
                raise ValueError(f"class {label} has {pool.shape[0]} real images, fewer than ipc={config.ipc}")
            picks.append(to_unit(pool[torch.randperm(pool.shape[0], generator=generator)[: config.ipc]]))
        picks = torch.cat(picks)
    return LD3MState(labels=labels, **config.spec.init(picks, real, prior, config, generators, labels))


def computed_classes(classes: tuple[int, int], config: LD3MConfig, num_classes: int) -> tuple[int, int]:
    """The classes a class shard [start, stop) actually optimises: widened to the nearest boundaries where the full
    run's chunk grid (`sampler.chunk_size` images from image 0) meets a class boundary, i.e. multiples of
    lcm(ipc, chunk_size) / ipc classes. Batched kernels are not bit-identical across batch compositions, so a shard
    must run the very chunks of the full run; DM keeps classes independent, so the extra ("ghost") classes evolve
    exactly as in the shards that own them and are dropped at the end (at most 2 (L - 1) of them)."""
    step = math.lcm(config.ipc, config.sampler.chunk_size) // config.ipc
    start, stop = classes
    return start // step * step, min(num_classes, -(-stop // step) * step)


# --- checkpoints ---


def _workdir(where: str | Path | WorkDir) -> WorkDir:
    return where if isinstance(where, WorkDir) else WorkDir(where)


def save_checkpoint(where: str | Path | WorkDir, state: LD3MState, config: LD3MConfig) -> Path:
    """The state (tensors + a JSON header with the step and the config) as the work directory's checkpoint unit,
    written atomically, with a readable JSON sidecar."""
    info = {"format": 1, "step": state.step, "config": config.to_dict()}
    return _workdir(where).save_state(CHECKPOINT, state.tensors(), info)


def load_checkpoint(where: str | Path | WorkDir, config: LD3MConfig | None = None,
                    ) -> tuple[LD3MState, dict[str, Any]] | None:
    """(state, info) of the checkpoint in `where`, or None when it holds none. With `config`, the saved run must
    have had the same settings but for `RESUMABLE_KEYS` (else `workdir.CompatibilityError`, naming them)."""
    loaded = _workdir(where).load_state(CHECKPOINT, None if config is None else config.to_dict(), RESUMABLE_KEYS)
    if loaded is None:
        return None
    tensors, info = loaded
    return LD3MState.from_tensors(tensors, step=int(info["step"])), info
