"""DDIM sampling and DDIM inversion over a `LatentPrior`, on diffusers' scheduler arrays.

Noise levels come from the prior's `DDIMScheduler` after `set_timesteps(num_steps)`: sampling
step i evaluates the denoiser at `timesteps[i]` and moves the latent from level
`alphas_cumprod[timesteps[i]]` to the next entry's level (after the last entry: the final
alpha, 1, i.e. clean). For the uniform spacings ("leading", the default, and "trailing") this is
exactly `DDIMScheduler.step` (eta = 0 and eta > 0); the update is written out here with
precomputed per-step coefficients so the loop costs little beyond the denoiser calls.

Inversion runs the same arithmetic backwards: inversion step j undoes sampling step
i = N-1-j, moving from level `alphas_next[i]` up to `alphas[i]` with eps evaluated at
`timesteps[i]` (diffusers' `DDIMInverseScheduler` convention, eps at the target timestep).
So `ddim_invert(..., invert_steps=k)` ends at the level of `timesteps[N-k]`, exactly where
`ddim_sample(..., start_step=N-k)` starts (D3HR's reference code starts one step off).

Nothing here disables autograd: gradients flow to `z`, `c` and the prior when the caller
enables them. `prior` needs only `make_scheduler(num_steps)` and `predict_noise(z, t, c, guidance)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DDIMSchedule:
    """Per-step noise levels of an N-step DDIM schedule (sampling order, noisiest first)."""

    timesteps: torch.Tensor  # (N,) int64, descending: the denoiser's t at sampling step i
    alphas: tuple[float, ...]  # alphas_cumprod[timesteps[i]]: the level sampling step i starts from
    alphas_next: tuple[float, ...]  # the level sampling step i lands on (final alpha after the last)

    @property
    def num_steps(self) -> int:
        return len(self.alphas)


def ddim_schedule(prior: Any, num_steps: int) -> DDIMSchedule:
    """The prior's DDIM noise levels for `num_steps`, read from its scheduler's own arrays."""
    scheduler = prior.make_scheduler(num_steps)
    timesteps = scheduler.timesteps.to(torch.long).cpu()
    alphas_cumprod = scheduler.alphas_cumprod.double()
    alphas = tuple(float(alphas_cumprod[t]) for t in timesteps)
    final = float(scheduler.final_alpha_cumprod)
    return DDIMSchedule(timesteps=timesteps, alphas=alphas, alphas_next=alphas[1:] + (final,))


def predict_x0(z: torch.Tensor, eps: torch.Tensor, alpha: float) -> torch.Tensor:
    """Clean-latent estimate at level `alpha` (alphas_cumprod): (z - sqrt(1-a) eps) / sqrt(a)."""
    return (z - math.sqrt(1.0 - alpha) * eps) / math.sqrt(alpha)


def ddim_step(z: torch.Tensor, eps: torch.Tensor, alpha: float, alpha_next: float, *,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Move `z` from level `alpha` to `alpha_next` along eps (DDIM, eq. 12); works in both directions.

    eta > 0 (only for sampling, alpha_next > alpha) adds `sigma * noise` with DDIM's sigma.
    """
    sqrt_ratio = math.sqrt(alpha_next / alpha)
    if eta == 0.0:
        eps_coef = math.sqrt(1.0 - alpha_next) - sqrt_ratio * math.sqrt(1.0 - alpha)
        return torch.add(z * sqrt_ratio, eps, alpha=eps_coef)
    variance = (1.0 - alpha_next) / (1.0 - alpha) * (1.0 - alpha / alpha_next)
    sigma = eta * math.sqrt(variance)
    eps_coef = math.sqrt(max(1.0 - alpha_next - sigma ** 2, 0.0)) - sqrt_ratio * math.sqrt(1.0 - alpha)
    if noise is None:
        raise ValueError("ddim_step with eta > 0 needs `noise` (a standard normal tensor like z)")
    return torch.add(z * sqrt_ratio, eps, alpha=eps_coef) + sigma * noise


def _check_common(z: torch.Tensor, c: torch.Tensor, num_steps: int, guidance: float) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be a positive int")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
        raise ValueError(f"guidance={guidance!r} must be a finite number (1.0 = conditional only, no CFG)")
    if z.dim() < 2:
        raise ValueError(f"z must be batched (B, ...), got shape {tuple(z.shape)}")
    if c.shape[0] != z.shape[0]:
        raise ValueError(f"c has batch {c.shape[0]} but z has batch {z.shape[0]}; pass one condition per latent")


def ddim_sample(prior: Any, z: torch.Tensor, c: torch.Tensor, *, num_steps: int, start_step: int = 0,
                guidance: float = 1.0, eta: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoise `z` (at the level of `timesteps[start_step]`) to a clean latent in N - start_step steps."""
    _check_common(z, c, num_steps, guidance)
    if isinstance(start_step, bool) or not isinstance(start_step, int) or not 0 <= start_step <= num_steps:
        raise ValueError(f"start_step={start_step!r} must be an int in 0..num_steps={num_steps}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < math.inf:
        raise ValueError(f"eta={eta!r} must be a number >= 0 (0 = deterministic DDIM, 1 = DDPM-like noise)")
    if eta > 0 and generator is None:
        raise ValueError("eta > 0 draws noise: pass generator=torch.Generator(...).manual_seed(seed)")
    schedule = ddim_schedule(prior, num_steps)
    timesteps = schedule.timesteps.to(z.device)
    for i in range(start_step, num_steps):
        eps = prior.predict_noise(z, timesteps[i], c, guidance)
        noise = None
        if eta > 0:
            noise = torch.randn(z.shape, generator=generator, device=generator.device, dtype=z.dtype).to(z.device)
        z = ddim_step(z, eps, schedule.alphas[i], schedule.alphas_next[i], eta=eta, noise=noise)
    return z


def ddim_invert(prior: Any, z0: torch.Tensor, c: torch.Tensor, *, num_steps: int, invert_steps: int,
                guidance: float = 1.0) -> torch.Tensor:
    """Deterministic DDIM inversion of clean latents `z0` up `invert_steps` levels of an N-step schedule.

    The result sits at the level of `timesteps[num_steps - invert_steps]`, i.e. where
    `ddim_sample(..., start_step=num_steps - invert_steps)` starts.
    """
    _check_common(z0, c, num_steps, guidance)
    if isinstance(invert_steps, bool) or not isinstance(invert_steps, int) or not 0 <= invert_steps <= num_steps:
        raise ValueError(f"invert_steps={invert_steps!r} must be an int in 0..num_steps={num_steps}")
    schedule = ddim_schedule(prior, num_steps)
    timesteps = schedule.timesteps.to(z0.device)
    z = z0
    for j in range(invert_steps):
        i = num_steps - 1 - j  # the sampling step this inversion step undoes
        eps = prior.predict_noise(z, timesteps[i], c, guidance)
        z = ddim_step(z, eps, schedule.alphas_next[i], schedule.alphas[i])
    return z
