"""Images from an LD3M state: the `Synthesizer` (state[index] -> images, as the state's space makes them), the
prior's decoder in [0, 1] (`decode_unit`) and iteration 0's latent-sensitivity diagnostic."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from diffdistill.diffusion.residual import ResidualNoise, residual_ddim_sample, residual_schedule
from diffdistill.rng import derive_seed

if TYPE_CHECKING:
    from diffdistill.distill.ld3m.config import LD3MConfig
    from diffdistill.distill.ld3m.state import LD3MState

_SENSITIVITY_STREAM = 2**41  # seed stream of the diagnostic's probe direction
PSNR_CAP_DB = 100.0  # identical images (decoder_only) report this instead of infinity


def decode_unit(prior: Any, z: torch.Tensor) -> torch.Tensor:
    """Clean latents -> images in [0, 1] at the data's size (the prior's decode returns [-1, 1])."""
    return ((prior.decode(z) + 1.0) * 0.5).clamp(0.0, 1.0)


class Synthesizer:
    """state[index] -> synthetic images in [0, 1] at the real images' size (B, C, H, W), made as the config's
    space makes them (`SpaceSpec.images`: the learnt pixels, decode(Z), or the residual sampler + decoder).

    With backprop "replay", a graph-free call records each step's latents for its chunk and the
    next call with grad (pass 2) replays them; `mismatches` gathers the replayed steps'
    recomputation errors (all 0 when generation is deterministic)."""

    def __init__(self, prior: Any, state: LD3MState, config: LD3MConfig, image_shape: tuple[int, int, int]) -> None:
        self.prior, self.state, self.config, self.image_shape = prior, state, config, image_shape
        self.spec = config.spec
        self.variant = self.spec.variant(config)  # None: the space runs no sampler
        self.schedule = None
        self.trajectories: dict[tuple[int, int], tuple[tuple[int, int], list[torch.Tensor]]] = {}
        self.mismatches: list[torch.Tensor] = []
        if self.variant is not None:
            self.schedule = residual_schedule(prior, config.sampler.num_steps, config.sampler.eta)

    def _versions(self) -> tuple[int, int]:
        """In-place updates bump these: recorded trajectories of older values are never replayed."""
        return self.state.latents._version, self.state.conditions._version

    def sample(self, index: slice) -> torch.Tensor:
        """The residual sampler's clean latents for state[index] (recording / replaying per `sampler.backprop`)."""
        state, sampler = self.state, self.config.sampler
        kwargs: dict[str, Any] = {"checkpoint": sampler.backprop == "checkpoint"}
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
        return self.spec.images(self, index)

    def pop_mismatch(self) -> float:
        """Largest replay recomputation error since the last call (0.0 if nothing was replayed)."""
        worst = max((float(m) for m in self.mismatches), default=0.0)
        self.mismatches.clear()
        return worst


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
