"""LD3M's residual reverse diffusion and the two-pass backprop through it.

Paper notation, t = T..1 over the T DDIM timesteps of `scheduler.timesteps`:

    z_T     = sqrt(a_T) * Z + sqrt(1 - a_T) * n                      (q(z_T | Z), n fixed per sample)
    z_{t-1} = (1 - t/T) * mu(c, z_t) + (t/T) * z_T + sigma_t * eps_t  (variant "eq12", Eq. 12 as printed)

where mu is the DDIM mean `sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma_t^2) eps_hat` and
sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev) (DDIM's eta family;
the paper's `sigma_t^2 eps` is read as the standard `sigma_t eps`). At t = T the mean has weight
0, so the first step calls no denoiser: T steps cost T - 1 denoiser calls, as in the paper's
Figure 1 ("denoised T - 1 times").

Variants:
- "reference" (the default; what the published LD3M code runs, `prune_and_distill` ddim.py): inside
  every step the predicted clean latent is replaced by (1 - k/K) x0_hat + (k/K) Z, k the remaining-step
  index and K = T - 1 (the first step uses Z alone, the last the pure prediction), then the usual DDIM
  update. The reference's VQ quantisation of Z is not applied.
- "eq12": Eq. 12 as printed. Its skip carries the *noisy* start z_T, in which Z is scaled by
  sqrt(a_T) (2.7e-4 at the first of 10 steps of a linear 1e-4..0.02 schedule, 8.6e-4 on the LDM's):
  the images hardly depend on Z. Eq. 12 and "none" see (Z, n) only through z_T, so the sensitivity
  ratio ||dX/dZ|| / ||dX/dn|| is exactly sqrt(a_T / (1 - a_T)): 0.016 at T = 10 (0.030 at T = 6);
  through a tiny LatentPrior (guidance 3) "reference" gives 10.5 (3.5 at T = 6). Under Eq. 12 the
  learnable latent barely matters: the fixed noise n and c drive the set.
- "none": plain DDIM (Eq. 10), the no-residual ablation.
The names "paper" and "x0_skip" of earlier versions are refused with the new name.

Unlike the reference code, which draws fresh q_sample noise on every call (so the image a loss
saw is not the one its gradient is taken through), all noise lives in `ResidualNoise`, drawn once
per synthetic sample and stored with the learnable state: each regeneration is the same function
of (Z, c).

Two-pass backprop (GLaD / LD3M Sec. 3.3): pass 1 generates every image without a graph, the loss
is taken on detached images, pass 2 regenerates chunk by chunk with grad and back-propagates
dL/dX. Inside pass 2 the T steps cost either a checkpoint per step (the chain runs forward again,
then each step once more in backward) or a replay of the latents pass 1 recorded (each step runs
only in backward). Either way only per-step latents are held, never per-step activations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint as activation_checkpoint

VARIANTS = ("reference", "eq12", "none")
RENAMED_VARIANTS = {"x0_skip": "reference", "paper": "eq12"}  # names before the reference became the default


def check_variant(variant: object, key: str = "variant") -> str:
    """The variant, or a ValueError naming the valid ones (and the new name of a renamed one)."""
    if isinstance(variant, str) and variant in RENAMED_VARIANTS:
        raise ValueError(f"{key}={variant!r} was renamed {RENAMED_VARIANTS[variant]!r}; valid: {', '.join(VARIANTS)}")
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(f"{key} must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return variant


@dataclass
class ResidualNoise:
    """Stored noise for N synthetic samples: `start` (N, C, h, w) makes z_T from Z; `steps`
    (N, T, C, h, w) holds eps_t for every step, or is None when the sampler is deterministic (eta = 0)."""

    start: torch.Tensor
    steps: torch.Tensor | None = None

    @classmethod
    def draw(
        cls,
        num_samples: int,
        latent_shape: tuple[int, ...],
        *,
        num_steps: int,
        eta: float,
        generator: torch.Generator,
        device: torch.device | str | None = None,
    ) -> ResidualNoise:
        """Draw on the generator's device (CPU by default, so bytes do not depend on `device`), then move."""
        if num_samples < 1 or num_steps < 1:
            raise ValueError(f"num_samples and num_steps must be >= 1, got {num_samples} and {num_steps}")
        start = torch.randn((num_samples, *latent_shape), generator=generator, device=generator.device)
        steps = None
        if eta > 0:
            steps = torch.randn((num_samples, num_steps, *latent_shape), generator=generator, device=generator.device)
        return cls(start, steps).to(device or start.device)

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def __getitem__(self, index: slice | torch.Tensor) -> ResidualNoise:
        return ResidualNoise(self.start[index], None if self.steps is None else self.steps[index])

    def to(self, device: torch.device | str) -> ResidualNoise:
        return ResidualNoise(self.start.to(device), None if self.steps is None else self.steps.to(device))

    def tensors(self, prefix: str = "noise.") -> dict[str, torch.Tensor]:
        out = {prefix + "start": self.start}
        if self.steps is not None:
            out[prefix + "steps"] = self.steps
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "noise.") -> ResidualNoise:
        return cls(tensors[prefix + "start"], tensors.get(prefix + "steps"))


@dataclass(frozen=True)
class ResidualSchedule:
    """Per-step scalars (index k = 0..T-1, paper t = T - k): the denoiser's timestep, the level the
    step starts from and lands on (`ddim.ddim_schedule`, the scheduler's own arrays), and sigma_t."""

    timesteps: tuple[int, ...]
    alphas: tuple[float, ...]
    alphas_prev: tuple[float, ...]
    sigmas: tuple[float, ...]

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


def residual_schedule(prior, num_steps: int, eta: float = 0.0) -> ResidualSchedule:
    """The same noise levels as `ddim_sample` (so variant "none" is exactly DDIM), plus DDIM's sigma(eta)."""
    from diffdistill.diffusion.ddim import ddim_schedule

    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    schedule = ddim_schedule(prior, num_steps)
    sigmas = tuple(
        eta * math.sqrt(max((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev), 0.0))
        for a_t, a_prev in zip(schedule.alphas, schedule.alphas_next, strict=True)
    )
    return ResidualSchedule(tuple(int(t) for t in schedule.timesteps), schedule.alphas, schedule.alphas_next, sigmas)


def noised_start(latents: torch.Tensor, noise_start: torch.Tensor, schedule: ResidualSchedule) -> torch.Tensor:
    """z_T ~ q(z_T | Z) with the stored draw: sqrt(a_T) Z + sqrt(1 - a_T) n."""
    a_start = schedule.alphas[0]
    return math.sqrt(a_start) * latents + math.sqrt(1.0 - a_start) * noise_start


def _residual_step(
    z: torch.Tensor,
    z_start: torch.Tensor,
    latents: torch.Tensor,
    conditions: torch.Tensor,
    step_noise: torch.Tensor | None,
    *,
    prior,
    schedule: ResidualSchedule,
    k: int,
    guidance: float,
    variant: str,
) -> torch.Tensor:
    """One reverse step k (paper t = T - k): z_t -> z_{t-1}."""
    num_steps = schedule.num_steps
    skip_weight = (num_steps - k) / num_steps  # the paper's t/T
    if variant == "eq12" and k == 0:
        z_prev = z_start  # (1 - T/T) * mu == 0: the mean does not enter, no denoiser call needed
    else:
        a_t, a_prev, sigma = schedule.alphas[k], schedule.alphas_prev[k], schedule.sigmas[k]
        eps = prior.predict_noise(z, schedule.timesteps[k], conditions, guidance)
        x0 = (z - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
        if variant == "reference" and num_steps > 1:
            remaining = (num_steps - 1 - k) / (num_steps - 1)  # 1 at the first step, 0 at the last
            x0 = (1.0 - remaining) * x0 + remaining * latents
        z_prev = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
        if variant == "eq12":
            z_prev = (1.0 - skip_weight) * z_prev + skip_weight * z_start
    if schedule.sigmas[k] > 0:
        z_prev = z_prev + schedule.sigmas[k] * step_noise
    return z_prev


class _ReplayStep(torch.autograd.Function):
    """A reverse step whose forward returns the output stored by a graph-free pass and whose
    backward recomputes the step from its saved inputs: only per-step latents stay alive, and
    the denoiser runs once forward (pass 1) and once again only inside backward."""

    @staticmethod
    def forward(ctx, step, stored, mismatches, *inputs):
        ctx.step, ctx.mismatches = step, mismatches
        ctx.save_for_backward(stored, *inputs)
        return stored.clone()

    @staticmethod
    def backward(ctx, grad_out):
        stored, *inputs = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        with torch.enable_grad():
            leaves = [
                None if x is None else x.detach().requires_grad_(need) for x, need in zip(inputs, needs, strict=True)
            ]
            out = ctx.step(*leaves)
        if ctx.mismatches is not None:  # the recomputation must reproduce pass 1 exactly
            ctx.mismatches.append((out.detach() - stored).abs().max())
        wrt = [i for i, (x, need) in enumerate(zip(leaves, needs, strict=True)) if need and x is not None]
        grads = torch.autograd.grad(out, [leaves[i] for i in wrt], grad_out, allow_unused=True) if wrt else ()
        full = [None] * len(inputs)
        for i, grad in zip(wrt, grads, strict=True):
            full[i] = grad
        return (None, None, None, *full)


def residual_ddim_sample(
    prior,
    latents: torch.Tensor,
    conditions: torch.Tensor,
    noise: ResidualNoise,
    *,
    num_steps: int,
    guidance: float = 1.0,
    eta: float = 0.0,
    variant: str = "reference",
    checkpoint: bool = False,
    schedule: ResidualSchedule | None = None,
    record: list[torch.Tensor] | None = None,
    replay: list[torch.Tensor] | None = None,
    mismatches: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Clean latents z_0 from learnable latents Z (B, C, h, w) and conditions c (B, D).

    Backprop memory, three ways:
    - default: plain autograd, every step's activations kept (memory grows with T);
    - `checkpoint=True`: every step (denoiser + update) under `torch.utils.checkpoint`; only the
      per-step latents are kept, the chain runs forward again and each step once more in backward;
    - `record` / `replay`: a graph-free call appends every step's output to `record`; a later call
      with grad and `replay=` that list returns the stored outputs and recomputes each step only in
      backward (one denoiser pass fewer than checkpointing). `mismatches` collects, per recomputed
      step, max |recomputed - stored| (0 when the prior is deterministic).
    `schedule` may be passed to skip rebuilding it.
    """
    check_variant(variant)
    if latents.shape[1:] != tuple(prior.latent_shape):
        raise ValueError(
            f"latents have shape {tuple(latents.shape[1:])} per sample but the prior's native latent shape is "
            f"{tuple(prior.latent_shape)}; encode images at prior.image_size"
        )
    if len(noise) != latents.shape[0] or conditions.shape[0] != latents.shape[0]:
        raise ValueError(
            f"latents ({latents.shape[0]}), conditions ({conditions.shape[0]}) and noise ({len(noise)}) "
            "must hold the same number of samples"
        )
    schedule = schedule or residual_schedule(prior, num_steps, eta)
    if schedule.num_steps != num_steps:
        raise ValueError(f"schedule has {schedule.num_steps} steps but num_steps={num_steps}")
    if any(s > 0 for s in schedule.sigmas) and (noise.steps is None or noise.steps.shape[1] != num_steps):
        raise ValueError(f"eta > 0 needs noise.steps of shape (N, {num_steps}, ...); draw ResidualNoise with eta > 0")
    if replay is not None and len(replay) != num_steps:
        raise ValueError(f"replay holds {len(replay)} step outputs, expected num_steps={num_steps}; record them first")
    z_start = noised_start(latents, noise.start, schedule)
    z = z_start
    grad = torch.is_grad_enabled()
    for k in range(num_steps):
        step = functools.partial(
            _residual_step, prior=prior, schedule=schedule, k=k, guidance=guidance, variant=variant
        )
        inputs = (z, z_start, latents, conditions, None if noise.steps is None else noise.steps[:, k])
        cheap = variant == "eq12" and k == 0  # no denoiser call: nothing worth saving
        if replay is not None and grad and not cheap:
            z = _ReplayStep.apply(step, replay[k], mismatches, *inputs)
        elif checkpoint and grad and not cheap:
            z = activation_checkpoint(step, *inputs, use_reentrant=False)
        else:
            z = step(*inputs)
        if record is not None:
            record.append(z.detach())
    return z


# --- two-pass backprop (GLaD / LD3M): loss on detached images, then regenerate chunk-wise with grad ---


def generate_images(synthesize: Callable[[slice], torch.Tensor], num_samples: int, chunk_size: int) -> torch.Tensor:
    """Pass 1: all images, chunk by chunk, without a graph."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    with torch.no_grad():
        return torch.cat(
            [synthesize(slice(s, min(s + chunk_size, num_samples))) for s in range(0, num_samples, chunk_size)]
        )


def backprop_images(
    synthesize: Callable[[slice], torch.Tensor],
    grad_images: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """Pass 2: regenerate each chunk with grad and push dL/dX into whatever `synthesize` reads
    (their `.grad` accumulates). Returns the regenerated images (detached) so callers can check
    that they equal pass 1's."""
    regenerated = []
    num_samples = grad_images.shape[0]
    for s in range(0, num_samples, chunk_size):
        index = slice(s, min(s + chunk_size, num_samples))
        with torch.enable_grad():
            images = synthesize(index)
            if images.requires_grad:
                images.backward(grad_images[index])
        regenerated.append(images.detach())
    return torch.cat(regenerated)


def generate_and_backprop(
    synthesize: Callable[[slice], torch.Tensor],
    num_samples: int,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    chunk_size: int,
    images: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """loss_fn(X) with X = synthesize(all), its gradient landing in synthesize's inputs.

    The loss sees detached leaf images (its own parameters, e.g. MTT's syn_lr, get their grads
    from the same backward); the generator graph only ever exists for one chunk at a time.
    `images` may carry pass 1's result if the caller already generated it.
    Returns (loss detached, pass-1 images, pass-2 images).
    """
    if images is None:
        images = generate_images(synthesize, num_samples, chunk_size)
    leaf = images.detach().requires_grad_(True)
    loss = loss_fn(leaf)
    loss.backward()
    if leaf.grad is None:
        raise ValueError("loss_fn(images) does not depend on the images; nothing to back-propagate")
    regenerated = backprop_images(synthesize, leaf.grad, chunk_size)
    return loss.detach(), images, regenerated
