"""The spaces LD3M distils in, one `SpaceSpec` each: what is learnable, how it becomes images, its metadata and
its learning rates. The loop and the result packaging ask the spec; a new space is a new entry in `SPACE_SPECS`.

- `latent`:         Z and c, residual sampler (config.sampler.variant) + decoder  (LD3M)
- `pixel`:          the images themselves                                         (classic DC / DM / MTT)
- `decoder_only`:   Z only, decoder without diffusion                             (Table 6, "w/o diffusion")
- `condition_only`: c only (Z fixed at its init), plain DDIM + decoder            (Table 7, row 1)
- `no_residual`:    Z and c, plain DDIM (variant "none") + decoder                (Table 7, row 2)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffdistill.data.bundle import to_signed
from diffdistill.diffusion.residual import ResidualNoise, generate_and_backprop
from diffdistill.distill.ld3m.synthesizer import decode_unit, latent_sensitivity
from diffdistill.distill.objectives import RealImages

if TYPE_CHECKING:
    from diffdistill.distill.ld3m.config import LD3MConfig
    from diffdistill.distill.ld3m.synthesizer import Synthesizer

# The published LD3M code's lr_w for Z and c (the paper's A.3 lists GLaD's 1e-3 / 1e-2 / 10), and the classic
# pixel-space learning rates, a step in normalised space as in their code (DC/DSA lr_img 0.1, DM 1 on CIFAR,
# MTT 1000 on ImageNet subsets).
LATENT_LR = {"dc": 0.1, "dm": 1.0, "mtt": 1000.0}
PIXEL_LR = {"dc": 0.1, "dm": 1.0, "mtt": 1000.0}
LossFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SpaceSpec(ABC):
    """One space. `learnable`: the `LD3MState` fields the SGD step updates (the first is the one the gradient
    record reports); `default_lr`: per objective when `lr` is None; `dc_schedule`: DC's loop schedule when
    `dc.schedule` is None; `uses_prior`: it needs a latent prior (then the prior is frozen and checked)."""

    name: str
    learnable: tuple[str, ...]
    default_lr: Mapping[str, float]
    dc_schedule: str
    uses_prior: bool

    @abstractmethod
    def variant(self, config: LD3MConfig) -> str | None:
        """The residual sampler's variant, None when the space runs no sampler."""

    @property
    def takes_variant(self) -> bool:
        """Whether `sampler.variant` (or a run's own variant) applies; the other spaces fix theirs."""
        return False

    @abstractmethod
    def method(self, config: LD3MConfig) -> str:
        """The distilled set's `method`."""

    @abstractmethod
    def meta(self, config: LD3MConfig) -> dict[str, Any]:
        """What the space adds to the distilled set's metadata."""

    @abstractmethod
    def prepare_prior(self, prior: Any, real: RealImages) -> Any:
        """The prior the space synthesises with, checked against the real images and frozen."""

    @abstractmethod
    def init(self, picks: torch.Tensor | None, real: RealImages, prior: Any, config: LD3MConfig,
             generators: list[torch.Generator], labels: torch.Tensor) -> dict[str, Any]:
        """The `LD3MState` fields at iteration 0 from `picks` (encoded-real init: one real image per slot in
        [0, 1]; None for the noise init, drawn from `generators`, one per class)."""

    @abstractmethod
    def images(self, synth: Synthesizer, index: slice) -> torch.Tensor:
        """state[index] -> images in [0, 1] at the real images' size."""

    @abstractmethod
    def backward(self, synth: Synthesizer, loss_fn: LossFn, images: torch.Tensor) -> tuple[torch.Tensor, float | None]:
        """The round's loss (detached), its gradient landing in the learnables' `.grad`; and the worst
        pass-2 regeneration error (None when nothing is regenerated). `images`: pass 1, without a graph."""

    def step_scales(self, real: RealImages, device: torch.device) -> dict[str, torch.Tensor]:
        """Per learnable, a factor on the learning rate (broadcasting against the tensor); absent: 1."""
        return {}

    def diagnostic(self, synth: Synthesizer, seed: int) -> dict[str, float]:
        """Iteration 0's extra metrics."""
        return {}


@dataclass(frozen=True)
class PriorSpace(SpaceSpec):
    """A space of the latent prior: Z (and c) through the residual sampler (`sampler`) or the decoder alone."""

    sampler: bool = True
    fixed_variant: str | None = None  # the variant the space always runs; None: config.sampler.variant

    def variant(self, config: LD3MConfig) -> str | None:
        return (self.fixed_variant or config.sampler.variant) if self.sampler else None

    @property
    def takes_variant(self) -> bool:
        return self.sampler and self.fixed_variant is None

    def method(self, config: LD3MConfig) -> str:
        return "ld3m"

    def meta(self, config: LD3MConfig) -> dict[str, Any]:
        return {"num_steps": config.sampler.num_steps if self.sampler else 0, "guidance": config.sampler.guidance,
                "eta": config.sampler.eta, "variant": self.variant(config) or "decoder"}

    def prepare_prior(self, prior: Any, real: RealImages) -> Any:
        if prior is None:
            raise ValueError(f"space {self.name!r} needs a prior; pass prior=... or use space='pixel'")
        if prior.image_channels != real.image_shape[0]:
            raise ValueError(f"the prior makes {prior.image_channels}-channel images but the real images have "
                             f"{real.image_shape[0]} channels; use a prior trained on this dataset")
        _freeze(prior)
        return prior

    def init(self, picks: torch.Tensor | None, real: RealImages, prior: Any, config: LD3MConfig,
             generators: list[torch.Generator], labels: torch.Tensor) -> dict[str, Any]:
        device = labels.device
        if picks is None:
            latents = torch.cat([torch.randn((config.ipc, *prior.latent_shape), generator=g) for g in generators])
            latents = latents.to(device)
        else:
            latents = _encode(prior, picks.to(device), config.sampler.chunk_size)
        fields: dict[str, Any] = {"latents": latents}
        if self.sampler:
            with torch.no_grad():
                fields["conditions"] = prior.condition(labels).detach().clone().float()
            parts = [ResidualNoise.draw(config.ipc, tuple(prior.latent_shape), num_steps=config.sampler.num_steps,
                                        eta=config.sampler.eta, generator=g, device=device) for g in generators]
            fields["noise"] = ResidualNoise(torch.cat([n.start for n in parts]),
                                            None if parts[0].steps is None else torch.cat([n.steps for n in parts]))
        return fields

    def images(self, synth: Synthesizer, index: slice) -> torch.Tensor:
        z = synth.sample(index) if self.sampler else synth.state.latents[index]
        return decode_unit(synth.prior, z)

    def backward(self, synth: Synthesizer, loss_fn: LossFn, images: torch.Tensor) -> tuple[torch.Tensor, float | None]:
        """Two passes (`generate_and_backprop`): the loss on detached images, then dL/dX pushed into Z and c chunk
        by chunk; the regenerated images must equal pass 1's."""
        loss, images, regenerated = generate_and_backprop(synth, images.shape[0], loss_fn,
                                                          chunk_size=synth.config.sampler.chunk_size, images=images)
        return loss, max(float((regenerated - images).abs().max()), synth.pop_mismatch())

    def diagnostic(self, synth: Synthesizer, seed: int) -> dict[str, float]:
        return latent_sensitivity(synth, seed)


@dataclass(frozen=True)
class PixelSpace(SpaceSpec):
    """The images themselves, learnt in [0, 1] (unclamped) with steps taken in normalised space."""

    def variant(self, config: LD3MConfig) -> str | None:
        return None

    def method(self, config: LD3MConfig) -> str:
        return config.objective

    def meta(self, config: LD3MConfig) -> dict[str, Any]:
        return {"lr_space": "normalised"}  # lr is the step on (x - mean) / std, as in the references

    def prepare_prior(self, prior: Any, real: RealImages) -> Any:
        return prior  # unused

    def init(self, picks: torch.Tensor | None, real: RealImages, prior: Any, config: LD3MConfig,
             generators: list[torch.Generator], labels: torch.Tensor) -> dict[str, Any]:
        if picks is None:  # noise init: N(mean, std^2) per channel, the real images' statistics
            picks = torch.cat([real.mean.view(1, -1, 1, 1) + real.std.view(1, -1, 1, 1)
                               * torch.randn((config.ipc, *real.image_shape), generator=g) for g in generators])
        return {"images": picks.to(labels.device)}

    def images(self, synth: Synthesizer, index: slice) -> torch.Tensor:
        return synth.state.images[index]

    def backward(self, synth: Synthesizer, loss_fn: LossFn, images: torch.Tensor) -> tuple[torch.Tensor, float | None]:
        """One pass: the loss straight on the learnable images."""
        loss = loss_fn(synth.state.images)
        loss.backward()
        return loss.detach(), None

    def step_scales(self, real: RealImages, device: torch.device) -> dict[str, torch.Tensor]:
        return {"images": pixel_step_scale(real, device)}


def pixel_step_scale(real: RealImages, device: torch.device | str = "cpu") -> torch.Tensor:
    """std^2 per channel, (1, C, 1, 1). The references learn images x_n = (x - mean) / std; we learn x in [0, 1]
    (the objectives normalise inside), where dL/dx = (dL/dx_n) / std. A step of lr * std^2 on x is then exactly
    the references' step of lr on x_n (momentum included: the buffer is linear in the gradients), so pixel-space
    learning rates mean what DC / DSA / DM / MTT's mean; without it one step would move x_n std^-2 times as far
    (~10x on digits, std 0.32; ~16x for CIFAR-10; ~19-20x for ImageNet)."""
    return real.std.to(device).square().view(1, -1, 1, 1)


def _encode(prior: Any, images_unit: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Encode real images (at the data's size: the prior resizes them to its native one) to init Z."""
    with torch.no_grad():
        out = [prior.encode(to_signed(batch), sample=False) for batch in images_unit.split(chunk_size)]
    return torch.cat(out).detach().clone()


def _freeze(prior: Any) -> None:
    """The prior stays frozen: no .grad ever lands in its weights."""
    for module in vars(prior).values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    if isinstance(prior, torch.nn.Module):
        prior.requires_grad_(False)


_PRIOR = {"default_lr": LATENT_LR, "dc_schedule": "glad", "uses_prior": True}
SPACE_SPECS: dict[str, SpaceSpec] = {spec.name: spec for spec in (
    PriorSpace("latent", ("latents", "conditions"), **_PRIOR),
    PixelSpace("pixel", ("images",), default_lr=PIXEL_LR, dc_schedule="dc_table", uses_prior=False),
    PriorSpace("decoder_only", ("latents",), **_PRIOR, sampler=False),
    PriorSpace("condition_only", ("conditions",), **_PRIOR, fixed_variant="none"),
    PriorSpace("no_residual", ("latents", "conditions"), **_PRIOR, fixed_variant="none"),
)}
SPACES = tuple(SPACE_SPECS)
