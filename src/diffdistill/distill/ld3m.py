"""LD3M (Moser et al.): distill per-image latents Z and conditions c through a frozen latent
diffusion prior with the residual sampler (Eq. 12), plus the paper's ablation spaces.

Spaces (what is learnable, and what turns it into images):
- `latent`:         Z and c, residual sampler (config.sampler.variant) + decoder  (LD3M)
- `no_residual`:    Z and c, plain DDIM (variant "none") + decoder                (Table 7, row 2)
- `condition_only`: c only (Z fixed at its init), plain DDIM + decoder            (Table 7, row 1)
- `decoder_only`:   Z only, decoder without diffusion                             (Table 6, "w/o diffusion")
- `pixel`:          the images themselves                                         (classic DC / DM / MTT)

Each iteration: generate every synthetic image without a graph, compute the objective on the
detached images, then regenerate chunk by chunk with grad (every denoiser call checkpointed) and
push dL/dX into Z and c (`diffusion.residual.generate_and_backprop`); SGD with momentum 0.5.
Randomness: the init (real picks, stored sampler noise) comes from one generator of `seed`, and
iteration i draws from its own generator derived from (seed, i), so a resumed run replays the
uninterrupted one byte for byte.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffdistill import rng
from diffdistill.data.atomic import write_atomic, write_json_atomic
from diffdistill.data.bundle import TensorBundle, to_signed, to_unit
from diffdistill.diffusion.residual import (
    ResidualNoise,
    check_variant,
    generate_and_backprop,
    generate_images,
    residual_ddim_sample,
    residual_schedule,
)
from diffdistill.distill.objectives import (
    DC_SCHEDULES,
    Augment,
    DCConfig,
    DistributionMatching,
    DMConfig,
    GradientMatching,
    MTTConfig,
    NetFactory,
    RealImages,
    TrajectoryMatching,
    default_net_factory,
)
from diffdistill.rng import derive_seed

OBJECTIVES = ("dc", "dm", "mtt")
BACKPROP_MODES = ("replay", "checkpoint", "plain")
SPACES = ("latent", "pixel", "decoder_only", "condition_only", "no_residual")
# The published LD3M code's lr_w for Z and c (the paper's A.3 lists GLaD's 1e-3 / 1e-2 / 10), and the classic
# pixel-space learning rates, a step in normalised space as in their code (DC/DSA lr_img 0.1, DM 1 on CIFAR,
# MTT 1000 on ImageNet subsets).
LATENT_LR = {"dc": 0.1, "dm": 1.0, "mtt": 1000.0}
PIXEL_LR = {"dc": 0.1, "dm": 1.0, "mtt": 1000.0}
CHECKPOINT_FILE = "ld3m_checkpoint.safetensors"
_INIT_STREAM = 2**40  # seed stream of the init generator, far from the iteration streams 0, 1, 2, ...


@dataclass(frozen=True)
class SpaceSpec:
    learn_latents: bool
    learn_conditions: bool
    diffusion: bool
    variant: str | None  # None: config.sampler.variant


SPACE_SPECS = {
    "latent": SpaceSpec(True, True, True, None),
    "no_residual": SpaceSpec(True, True, True, "none"),
    "condition_only": SpaceSpec(False, True, True, "none"),
    "decoder_only": SpaceSpec(True, False, False, None),
}


@dataclass
class SamplerConfig:
    num_steps: int = 10  # T (paper: 10 at 128 px, 20 at 256 px)
    guidance: float = 3.0
    eta: float = 0.0
    variant: str = "reference"  # the published code's x0 skip; "eq12" (as printed) | "none" (diffusion/residual.py)
    # How pass 2 back-propagates through the T steps: "replay" (pass 1 keeps each step's output
    # latent, backward recomputes one step at a time), "checkpoint" (torch.utils.checkpoint around
    # every step, the chain runs forward again: the reference scheme), "plain" (whole graph kept).
    backprop: str = "replay"
    chunk_size: int = 10  # images regenerated with a graph at once (GLaD's sg_batch)


@dataclass
class LD3MConfig:
    objective: str = "dc"
    space: str = "latent"
    ipc: int = 1
    iterations: int = 1000
    lr: float | None = None  # None: LATENT_LR / PIXEL_LR of the objective
    momentum: float = 0.5
    init: str = "real"  # "real": encode a random real image of the class; "noise"
    seed: int = 0
    checkpoint_every: int = 100
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"  # "none" disables DSA
    device: str = "cpu"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    dc: DCConfig = field(default_factory=DCConfig)
    dm: DMConfig = field(default_factory=DMConfig)
    mtt: MTTConfig = field(default_factory=MTTConfig)

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> LD3MConfig:
        """From a (Kedro parameters) dict; nested sections may be partial; unknown keys are errors."""
        nested = {"sampler": SamplerConfig, "dc": DCConfig, "dm": DMConfig, "mtt": MTTConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown ld3m config keys {unknown}; known keys: {sorted(known)}")
        kwargs = {}
        for key, value in params.items():
            if key in nested and not isinstance(value, (dict, nested[key])):
                raise ValueError(f"ld3m.{key} must be a mapping of its settings, got {value!r}")
            if key in nested and isinstance(value, dict):
                sub_known = {f.name for f in dataclasses.fields(nested[key])}
                if set(value) - sub_known:
                    raise ValueError(
                        f"unknown ld3m.{key} keys {sorted(set(value) - sub_known)}; known: {sorted(sub_known)}"
                    )
                value = nested[key](**value)
            kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dc_config(self) -> DCConfig:
        """`dc` with its loop schedule resolved: GLaD / LD3M's 1/1 in prior spaces, DC/DSA's table in pixel space."""
        if self.dc.schedule is not None:
            return self.dc
        return dataclasses.replace(self.dc, schedule="dc_table" if self.space == "pixel" else "glad")

    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return (PIXEL_LR if self.space == "pixel" else LATENT_LR)[self.objective]

    def validate(self) -> None:
        sampler = self.sampler
        for name, value, kind in (("ipc", self.ipc, int), ("iterations", self.iterations, int),
                                  ("checkpoint_every", self.checkpoint_every, int), ("seed", self.seed, int),
                                  ("momentum", self.momentum, float), ("lr", self.lr, float),
                                  ("sampler.num_steps", sampler.num_steps, int),
                                  ("sampler.chunk_size", sampler.chunk_size, int),
                                  ("sampler.guidance", sampler.guidance, float), ("sampler.eta", sampler.eta, float)):
            if name == "lr" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or \
                    (kind is float and not math.isfinite(value)):
                raise ValueError(f"ld3m.{name}={value!r} must be {'an int' if kind is int else 'a finite number'}")
        if sampler.backprop not in BACKPROP_MODES:
            raise ValueError(f"sampler.backprop must be one of {BACKPROP_MODES}, got {sampler.backprop!r}")
        if sampler.eta < 0:
            raise ValueError(f"sampler.eta must be >= 0, got {sampler.eta}")
        if not isinstance(self.dsa_strategy, str):
            raise ValueError(f"ld3m.dsa_strategy must be a string such as 'none', got {self.dsa_strategy!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.init not in ("real", "noise"):
            raise ValueError(f"init must be 'real' or 'noise', got {self.init!r}")
        check_variant(self.sampler.variant, "ld3m.sampler.variant")
        if self.dc.schedule is not None and self.dc.schedule not in DC_SCHEDULES:
            raise ValueError(f"ld3m.dc.schedule must be one of {', '.join(DC_SCHEDULES)}, got {self.dc.schedule!r}")
        if self.ipc < 1 or self.iterations < 0 or self.checkpoint_every < 1:
            raise ValueError(f"ipc and checkpoint_every must be >= 1 and iterations >= 0; got ipc={self.ipc}, "
                             f"checkpoint_every={self.checkpoint_every}, iterations={self.iterations}")
        if self.sampler.num_steps < 1 or self.sampler.chunk_size < 1:
            raise ValueError(f"sampler.num_steps and sampler.chunk_size must be >= 1; got num_steps="
                             f"{self.sampler.num_steps}, chunk_size={self.sampler.chunk_size}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}; the paper uses 0.5")
        if self.learning_rate() <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}; set a positive lr or None for the paper's default")


class DivergenceError(RuntimeError):
    """The loss or the learnable tensors became NaN/inf; the message names iteration and learning rate."""


# --- learnable state ---


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

    def learnable(self, space: str) -> dict[str, torch.Tensor]:
        if space == "pixel":
            return {"images": self.images}
        spec = SPACE_SPECS[space]
        out = {}
        if spec.learn_latents:
            out["latents"] = self.latents
        if spec.learn_conditions:
            out["conditions"] = self.conditions
        return out


def init_state(real: RealImages, prior, config: LD3MConfig, classes: tuple[int, int] | None = None) -> LD3MState:
    """Labels class-major over `classes` [start, stop) (None: all); per class, a generator of (seed, class)
    picks the real images to encode (or draws N(0, 1)) and then draws the sampler's stored noise, so a
    class shard starts from exactly the state the full run has for its classes. c = prior.condition(class)."""
    first, stop = (0, real.num_classes) if classes is None else classes
    generators = [rng.generator(config.seed, _INIT_STREAM, k) for k in range(first, stop)]
    device = torch.device(config.device)
    labels = torch.arange(first, stop).repeat_interleave(config.ipc)
    if config.init == "real":
        picks = []
        for label, generator in zip(range(first, stop), generators, strict=True):
            pool = real.by_class[label]
            if pool.shape[0] < config.ipc:
                raise ValueError(f"class {label} has {pool.shape[0]} real images, fewer than ipc={config.ipc}")
            picks.append(to_unit(pool[torch.randperm(pool.shape[0], generator=generator)[: config.ipc]]))
        picks = torch.cat(picks)
    elif config.space == "pixel":
        picks = torch.cat([real.mean.view(1, -1, 1, 1) + real.std.view(1, -1, 1, 1)
                           * torch.randn((config.ipc, *real.image_shape), generator=g) for g in generators])
    else:
        picks = None
    if config.space == "pixel":
        return LD3MState(labels=labels, images=picks).to(device)
    spec = SPACE_SPECS[config.space]
    if picks is None:
        latents = torch.cat([torch.randn((config.ipc, *prior.latent_shape), generator=g) for g in generators])
        latents = latents.to(device)
    else:
        latents = _encode(prior, picks.to(device), config.sampler.chunk_size)
    state = LD3MState(labels=labels.to(device), latents=latents)
    if spec.diffusion:
        with torch.no_grad():
            state.conditions = prior.condition(state.labels).detach().clone().float()
        parts = [ResidualNoise.draw(config.ipc, tuple(prior.latent_shape), num_steps=config.sampler.num_steps,
                                    eta=config.sampler.eta, generator=g, device=device) for g in generators]
        state.noise = ResidualNoise(torch.cat([n.start for n in parts]),
                                    None if parts[0].steps is None else torch.cat([n.steps for n in parts]))
    return state


def computed_classes(classes: tuple[int, int], config: LD3MConfig, num_classes: int) -> tuple[int, int]:
    """The classes a class shard [start, stop) actually optimises: widened to the nearest boundaries where the full
    run's chunk grid (`sampler.chunk_size` images from image 0) meets a class boundary, i.e. multiples of
    lcm(ipc, chunk_size) / ipc classes. Batched kernels are not bit-identical across batch compositions, so a shard
    must run the very chunks of the full run; DM keeps classes independent, so the extra ("ghost") classes evolve
    exactly as in the shards that own them and are dropped at the end (at most 2 (L - 1) of them)."""
    step = math.lcm(config.ipc, config.sampler.chunk_size) // config.ipc
    start, stop = classes
    return start // step * step, min(num_classes, -(-stop // step) * step)


def _encode(prior, images_unit: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Encode real images (at the data's size: the prior resizes them to its native one) to init Z."""
    with torch.no_grad():
        out = [prior.encode(to_signed(batch), sample=False) for batch in images_unit.split(chunk_size)]
    return torch.cat(out).detach().clone()


# --- images from the state ---


def decode_unit(prior, z: torch.Tensor) -> torch.Tensor:
    """Clean latents -> images in [0, 1] at the data's size (the prior's decode returns [-1, 1])."""
    return ((prior.decode(z) + 1.0) * 0.5).clamp(0.0, 1.0)


_SENSITIVITY_STREAM = 2**41  # seed stream of the diagnostic's probe direction
PSNR_CAP_DB = 100.0  # identical images (decoder_only) report this instead of infinity


def latent_sensitivity(synthesize: Synthesizer, seed: int) -> dict[str, float]:
    """How much a prior space's images depend on the learnable latent Z, on the first chunk of the state.

    - `init_psnr_db`: PSNR (peak 1) of the generated images X against decode(Z), the images Z alone stands
      for (the encoded-real init at iteration 0);
    - `init_grad_norm_latents` / `init_grad_norm_noise`: ||J_Z^T v|| and ||J_n^T v|| for one probe v ~ N(0, I)
      of the images' shape, J the Jacobian of X in Z and in the stored start noise n; E||J^T v||^2 = ||J||_F^2,
      so their ratio `init_sensitivity_ratio` estimates ||dX/dZ||_F / ||dX/dn||_F (> 1: Z drives the images,
      << 1: the fixed noise does). Spaces without diffusion (decoder_only) have no n and no ratio.
    Runs the sampler once with grad (every step checkpointed); the state is not touched."""
    state, config, prior = synthesize.state, synthesize.config, synthesize.prior
    index = slice(0, min(config.sampler.chunk_size, state.labels.shape[0]))
    latents = state.latents[index].detach().clone().requires_grad_(True)
    with torch.no_grad():
        reference = decode_unit(prior, latents)
    wrt = [latents]
    with torch.enable_grad():
        if synthesize.schedule is None:
            images = decode_unit(prior, latents)
        else:
            noise = state.noise[index]
            start = noise.start.detach().clone().requires_grad_(True)
            wrt.append(start)
            z = residual_ddim_sample(
                prior, latents, state.conditions[index].detach(), ResidualNoise(start, noise.steps),
                num_steps=config.sampler.num_steps, guidance=config.sampler.guidance, eta=config.sampler.eta,
                variant=synthesize.variant, checkpoint=True, schedule=synthesize.schedule)
            images = decode_unit(prior, z)
        probe = torch.randn(images.shape, generator=torch.Generator().manual_seed(
            derive_seed(seed, _SENSITIVITY_STREAM))).to(images.device)
        grads = torch.autograd.grad((images * probe).sum(), wrt, allow_unused=True)
    mse = float((images.detach() - reference).double().square().mean())
    out = {"init_psnr_db": PSNR_CAP_DB if mse <= 10 ** (-PSNR_CAP_DB / 10) else -10.0 * math.log10(mse)}
    norms = [0.0 if g is None else float(g.norm()) for g in grads]
    out["init_grad_norm_latents"] = norms[0]
    if len(norms) > 1:
        out["init_grad_norm_noise"] = norms[1]
        out["init_sensitivity_ratio"] = norms[0] / norms[1] if norms[1] > 0 else float("inf")
    return out


class Synthesizer:
    """state[index] -> synthetic images in [0, 1] at the real images' size (B, C, H, W).

    With backprop "replay", a graph-free call records each step's latents for its chunk and the
    next call with grad (pass 2) replays them; `mismatches` gathers the replayed steps'
    recomputation errors (all 0 when generation is deterministic)."""

    def __init__(self, prior, state: LD3MState, config: LD3MConfig, image_shape: tuple[int, int, int]) -> None:
        self.prior, self.state, self.config, self.image_shape = prior, state, config, image_shape
        self.space = config.space
        self.schedule = None
        self.trajectories: dict[tuple[int, int], tuple[tuple[int, int], list[torch.Tensor]]] = {}
        self.mismatches: list[torch.Tensor] = []
        if self.space != "pixel":
            spec = SPACE_SPECS[self.space]
            self.variant = spec.variant or config.sampler.variant
            if spec.diffusion:
                self.schedule = residual_schedule(prior, config.sampler.num_steps, config.sampler.eta)

    def _versions(self) -> tuple[int, int]:
        """In-place updates bump these: recorded trajectories of older values are never replayed."""
        return self.state.latents._version, self.state.conditions._version

    def _sample(self, index: slice) -> torch.Tensor:
        state, sampler = self.state, self.config.sampler
        kwargs = {"checkpoint": sampler.backprop == "checkpoint"}
        if sampler.backprop == "replay":
            key = (index.start, index.stop)
            if not torch.is_grad_enabled():
                kwargs["record"] = []
                self.trajectories[key] = (self._versions(), kwargs["record"])
            elif key in self.trajectories and self.trajectories[key][0] == self._versions():
                kwargs.update(replay=self.trajectories.pop(key)[1], mismatches=self.mismatches)
            else:  # nothing recorded for these values: fall back to checkpointing
                kwargs["checkpoint"] = True
        return residual_ddim_sample(
            self.prior,
            state.latents[index],
            state.conditions[index],
            state.noise[index],
            num_steps=sampler.num_steps,
            guidance=sampler.guidance,
            eta=sampler.eta,
            variant=self.variant,
            schedule=self.schedule,
            **kwargs,
        )

    def __call__(self, index: slice) -> torch.Tensor:
        if self.space == "pixel":
            return self.state.images[index]
        z = self._sample(index) if self.schedule is not None else self.state.latents[index]
        return decode_unit(self.prior, z)

    def pop_mismatch(self) -> float:
        """Largest replay recomputation error since the last call (0.0 if nothing was replayed)."""
        worst = max((float(m) for m in self.mismatches), default=0.0)
        self.mismatches.clear()
        return worst


# --- checkpoints ---


def save_checkpoint(directory: str | Path, state: LD3MState, config: LD3MConfig) -> Path:
    """One safetensors file (tensors + JSON header), written to a temporary name and renamed into place,
    plus a readable JSON sidecar written the same way."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    info = {"format": 1, "step": state.step, "config": config.to_dict()}
    path = write_atomic(directory / CHECKPOINT_FILE, lambda tmp: save_file(
        state.tensors(), str(tmp), metadata={"ld3m": json.dumps(info, sort_keys=True)}))
    write_json_atomic(directory / "ld3m_checkpoint.json", info, indent=2, sort_keys=True)
    return path


def load_checkpoint(directory: str | Path) -> tuple[LD3MState, dict[str, Any]] | None:
    """(state, info) from `directory`, or None when it holds no checkpoint."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        info = json.loads(handle.metadata()["ld3m"])
    return LD3MState.from_tensors(load_file(str(path)), step=int(info["step"])), info


def _check_resumable(saved: dict[str, Any], config: LD3MConfig) -> None:
    """A checkpoint may continue with more iterations, another checkpoint cadence, device or learning
    rate (lower it after a divergence); nothing else."""
    free = {"iterations", "checkpoint_every", "device", "lr"}
    current = config.to_dict()
    changed = sorted(k for k in current if k not in free and saved.get(k) != current[k])
    if changed:
        raise ValueError(
            f"checkpoint_dir holds a run with different settings for {changed}; use a fresh checkpoint_dir "
            "or the saved settings"
        )


# --- the loop ---


@dataclass
class LD3MResult:
    images: TensorBundle  # the distilled set: images float32 [0, 1], labels, meta
    state: TensorBundle  # Z, c, labels, stored noise, extras: everything that regenerates `images`


def _build_objective(config, real, experts, net_factory, augment):
    channels, size = real.image_shape[0], real.image_shape[-1]
    section = getattr(config, config.objective)
    factory = net_factory or default_net_factory(section.net, channels, real.num_classes, size)
    device = torch.device(config.device)
    if config.objective == "dc":
        return GradientMatching(real, config.dc_config(), ipc=config.ipc, net_factory=factory, augment=augment, device=device)
    if config.objective == "dm":
        return DistributionMatching(real, section, net_factory=factory, augment=augment, device=device)
    if experts is None:
        raise ValueError("objective 'mtt' needs expert trajectories: pass experts=...")
    return TrajectoryMatching(real, experts, section, net_factory=factory, augment=augment, device=device)


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process_max_rss"


def pixel_step_scale(real: RealImages, device: torch.device | str = "cpu") -> torch.Tensor:
    """std^2 per channel, (1, C, 1, 1). The references learn images x_n = (x - mean) / std; we learn x in [0, 1]
    (the objectives normalise inside), where dL/dx = (dL/dx_n) / std. A step of lr * std^2 on x is then exactly
    the references' step of lr on x_n (momentum included: the buffer is linear in the gradients), so pixel-space
    learning rates mean what DC / DSA / DM / MTT's mean; without it one step would move x_n std^-2 times as far
    (~10x on digits, std 0.32; ~16x for CIFAR-10; ~19-20x for ImageNet)."""
    return real.std.to(device).square().view(1, -1, 1, 1)


@torch.no_grad()
def _sgd_momentum(
    params: dict[str, torch.Tensor], momentum: dict[str, torch.Tensor], lrs: dict[str, float | torch.Tensor],
    beta: float,
):
    """torch.optim.SGD(momentum=beta, dampening=0) written out, so its buffers are plain saved tensors.
    A learning rate may be a tensor broadcasting against its parameter (pixel space: one per channel)."""
    for name, param in params.items():
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        buffer = momentum[name]
        buffer.mul_(beta).add_(grad)
        if isinstance(lrs[name], torch.Tensor):
            param.sub_(buffer * lrs[name])
        else:
            param.add_(buffer, alpha=-lrs[name])
        param.grad = None


def _freeze(prior) -> None:
    """The prior stays frozen: no .grad ever lands in its weights."""
    for module in vars(prior).values() if prior is not None else ():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    if isinstance(prior, torch.nn.Module):
        prior.requires_grad_(False)


def distill_ld3m(
    real: TensorBundle | Sequence[torch.Tensor],
    prior,
    config: LD3MConfig | dict[str, Any],
    *,
    experts: Sequence[torch.Tensor] | None = None,
    checkpoint_dir: str | Path | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    net_factory: NetFactory | None = None,
    augment: Augment | None = None,
    class_names: Sequence[str] | None = None,
    classes: tuple[int, int] | None = None,
) -> LD3MResult:
    """Run LD3M (or a pixel-space / ablation space) and return the distilled set and the learned state.

    `real`: the real train split (TensorBundle) or one image tensor per class. `prior`: a
    `LatentPrior` already on `config.device` (unused for space "pixel"). `experts`: MTT
    trajectories (E × (epochs + 1, P)). `checkpoint_dir`: resume from / checkpoint to (every
    `checkpoint_every` iterations and at the end). `on_step(metrics)` after each iteration.
    `net_factory` / `augment` override the nets and DSA built from the config (tests).
    `classes` = [start, stop): distill only those classes (a class shard; DM only: per-class loss and draws, and
    the full run's chunks via `computed_classes`, make the result equal the full run's rows for those classes).
    """
    config = LD3MConfig.from_dict(config) if isinstance(config, dict) else config
    config.validate()
    device = torch.device(config.device)
    if isinstance(real, TensorBundle):
        class_names = class_names or real.class_names
        real = RealImages.from_bundle(real)
    else:
        real = RealImages.from_classes(real)
    class_names = list(class_names or [str(k) for k in range(real.num_classes)])
    _check_classes(classes, config, real.num_classes)
    if config.space != "pixel":
        if prior is None:
            raise ValueError(f"space {config.space!r} needs a prior; pass prior=... or use space='pixel'")
        if prior.image_channels != real.image_shape[0]:
            raise ValueError(
                f"the prior makes {prior.image_channels}-channel images but the real images have "
                f"{real.image_shape[0]} channels; use a prior trained on this dataset"
            )
        _freeze(prior)
    if augment is None and config.dsa_strategy.lower() not in ("", "none"):
        from diffdistill.augment import DSA

        augment = DSA(config.dsa_strategy)

    loaded = load_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if loaded is not None:
        _check_resumable(loaded[1]["config"], config)
        state = loaded[0].to(device)
        checkpoint_step = state.step
    else:
        state = init_state(real, prior, config, None if classes is None else
                           computed_classes(classes, config, real.num_classes))
        checkpoint_step = None
    objective = _build_objective(config, real, experts, net_factory, augment)

    lr = config.learning_rate()
    params = state.learnable(config.space)
    lrs: dict[str, float | torch.Tensor] = dict.fromkeys(params, lr)
    if config.space == "pixel":  # pixels live in [0, 1]; the step is the references' step in normalised space
        lrs["images"] = pixel_step_scale(real, device) * lr
    for name, (tensor, extra_lr) in objective.extra_parameters().items():
        if name in state.extras:
            with torch.no_grad():
                tensor.copy_(state.extras[name])
        state.extras[name] = tensor
        params[f"extra.{name}"] = tensor
        lrs[f"extra.{name}"] = extra_lr
    for name, tensor in params.items():
        tensor.requires_grad_(True)
        state.momentum.setdefault(name, torch.zeros_like(tensor))

    synthesize = Synthesizer(prior, state, config, real.image_shape)
    num_samples, chunk = state.labels.shape[0], config.sampler.chunk_size
    # Iteration 0 of a prior space: does the learnable latent drive the images? (into iteration 0's metrics)
    sensitivity = latent_sensitivity(synthesize, config.seed) if config.space != "pixel" and state.step == 0 else {}

    def diverged(iteration: int, what: str) -> DivergenceError:
        where = (
            f"last good checkpoint: {Path(checkpoint_dir) / CHECKPOINT_FILE} (saved after {checkpoint_step} iterations)"
            if checkpoint_step is not None
            else "no checkpoint was written yet"
        )
        return DivergenceError(
            f"LD3M diverged at iteration {iteration} ({config.objective}, space {config.space}): {what} with "
            f"learning rate lr={lr:g}; lower `lr` and resume. {where}"
        )

    for iteration in range(state.step, config.iterations):
        generator = torch.Generator().manual_seed(derive_seed(config.seed, iteration))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        losses, grad_norms, regen_errors = [], {name: [] for name in params}, []
        rounds = objective.start_iteration(generator)
        for round_index in range(rounds):
            loss_fn = functools.partial(objective.loss, labels=state.labels, generator=generator)
            if config.space == "pixel":
                if round_index > 0:
                    objective.prepare_round(state.images.detach(), state.labels, generator)
                loss = loss_fn(state.images)
                loss.backward()
                loss = loss.detach()
            else:
                images = generate_images(synthesize, num_samples, chunk)
                if round_index > 0:  # DC: the net trains on the set as it is after the last update
                    objective.prepare_round(images, state.labels, generator)
                loss, images, regenerated = generate_and_backprop(
                    synthesize, num_samples, loss_fn, chunk_size=chunk, images=images
                )
                regen_errors.append(max(float((regenerated - images).abs().max()), synthesize.pop_mismatch()))
            if not torch.isfinite(loss):
                raise diverged(iteration, f"loss is {float(loss)}")
            losses.append(float(loss))
            for name, tensor in params.items():
                grad = tensor.grad
                grad_norms[name].append(0.0 if grad is None else float(grad.norm()))
            _sgd_momentum(params, state.momentum, lrs, config.momentum)
            bad = [name for name, tensor in params.items() if not torch.isfinite(tensor).all()]
            if bad:
                raise diverged(iteration, f"{bad} became non-finite after the update")
        state.step = iteration + 1
        if on_step is not None:
            peak, kind = _peak_memory(device)
            metrics = {
                "iteration": iteration,
                "loss": sum(losses) / len(losses),
                "time_s": time.perf_counter() - started,
                "peak_memory_bytes": peak,
                "memory_kind": kind,
                "lr": lr,
                "rounds": rounds,
            }
            metrics.update({f"grad_norm_{name}": sum(v) / len(v) for name, v in grad_norms.items()})
            if regen_errors:
                metrics["regeneration_max_abs_diff"] = max(regen_errors)
            metrics.update({name: float(t.detach()) for name, t in state.extras.items() if t.numel() == 1})
            if iteration == 0:
                metrics.update(sensitivity)
            on_step(metrics)
        if checkpoint_dir is not None and (
            state.step % config.checkpoint_every == 0 or state.step == config.iterations
        ):
            save_checkpoint(checkpoint_dir, state, config)
            checkpoint_step = state.step
    return _result(state, synthesize, config, class_names, real, classes)


def _check_classes(classes: tuple[int, int] | None, config: LD3MConfig, num_classes: int) -> None:
    if classes is None:
        return
    if config.objective != "dm":
        raise ValueError(f"a class range (class shard) needs objective 'dm', whose classes are independent; "
                         f"{config.objective!r} couples classes (one net over the whole set): run it unsharded")
    first, stop = classes
    if not 0 <= first < stop <= num_classes:
        raise ValueError(f"classes=[{first}, {stop}) must be a non-empty range inside [0, {num_classes})")


def _result(state: LD3MState, synthesize: Synthesizer, config: LD3MConfig, class_names, real,
            classes: tuple[int, int] | None = None) -> LD3MResult:
    """The distilled set and the state; a class shard keeps only its own classes' rows (not the ghost ones)."""
    for tensor in state.learnable(config.space).values():
        tensor.requires_grad_(False)
    # The distilled set: float32 images clamped to [0, 1] (pixels learn unclamped; no 8-bit quantisation).
    images = generate_images(synthesize, state.labels.shape[0], config.sampler.chunk_size).clamp(0.0, 1.0)
    synthesize.trajectories.clear()
    meta = {
        "method": "ld3m" if config.space != "pixel" else config.objective,
        "ipc": config.ipc,
        "objective": config.objective,
        "space": config.space,
        "class_names": list(class_names),
        "num_classes": real.num_classes,
        "iterations": state.step,
        "lr": config.learning_rate(),
        "seed": config.seed,
        "init": config.init,
        "image_size": real.image_shape[-1],
    }
    if config.objective == "dc":
        meta["dc_loops"] = list(config.dc_config().loops(config.ipc))  # (outer, inner) rounds per iteration
    if config.space == "pixel":
        meta["lr_space"] = "normalised"  # lr is the step on (x - mean) / std, as in the references
    if config.space != "pixel":
        spec = SPACE_SPECS[config.space]
        meta.update(
            num_steps=config.sampler.num_steps if spec.diffusion else 0,
            guidance=config.sampler.guidance,
            eta=config.sampler.eta,
            variant=(spec.variant or config.sampler.variant) if spec.diffusion else "decoder",
        )
    tensors, labels = state.tensors(), state.labels.cpu()
    if classes is not None:
        rows = (labels >= classes[0]) & (labels < classes[1])
        tensors = {k: v if k.startswith("extra.") else v[rows].clone() for k, v in tensors.items()}
        images, labels = images[rows.to(images.device)], labels[rows]
    state_bundle = TensorBundle(
        {k: v for k, v in tensors.items() if not k.startswith("momentum.")},
        {**meta, "config": config.to_dict(), "step": state.step},
    )
    bundle = TensorBundle(
        {"images": images.detach().float().cpu().contiguous(), "labels": labels},
        meta,
    )
    return LD3MResult(images=bundle, state=state_bundle)
