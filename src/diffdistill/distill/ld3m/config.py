"""LD3M's settings: `LD3MConfig` and its `SamplerConfig`, typed dataclasses of the one config mechanism.

`diffdistill.config.build(LD3MConfig, params, "ld3m")` checks every key and value once, here: an error names
the key path (`ld3m.sampler.variant`) and the valid values. Nested sections (`sampler`, `dc`, `dm`, `mtt`) may be
partial. `RESUMABLE_KEYS` are the settings a checkpoint may continue with changed; every other one keys a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from diffdistill.config import ConfigError, option, to_dict
from diffdistill.diffusion.residual import check_variant
from diffdistill.distill.ld3m.spaces import SPACE_SPECS, SPACES, SpaceSpec
from diffdistill.distill.objectives import DCConfig, DMConfig, MTTConfig

OBJECTIVES = ("dc", "dm", "mtt")
BACKPROP_MODES = ("replay", "checkpoint", "plain")
INITS = ("real", "noise")
# A checkpoint may continue with more iterations, another checkpoint cadence, device or learning rate (lower it
# after a divergence); nothing else. They do not key a run's work directory either.
RESUMABLE_KEYS = frozenset({"iterations", "checkpoint_every", "device", "lr"})


@dataclass
class SamplerConfig:
    """`ld3m.sampler`: the residual DDIM sampler that turns (Z, c) into images."""

    num_steps: int = option(10, min=1, help="T (paper: 10 at 128 px, 20 at 256 px)")
    guidance: float = option(3.0, help="classifier-free guidance (paper A.3: 3)")
    eta: float = option(0.0, min=0, help="DDIM eta; > 0 stores one noise per step")
    variant: str = option("reference", help="reference (the published code's x0 skip) | eq12 (as printed) | none")
    # How pass 2 back-propagates through the T steps: "replay" (pass 1 keeps each step's output
    # latent, backward recomputes one step at a time), "checkpoint" (torch.utils.checkpoint around
    # every step, the chain runs forward again: the reference scheme), "plain" (whole graph kept).
    backprop: str = option("replay", choices=BACKPROP_MODES, help="how pass 2 back-propagates through the steps")
    chunk_size: int = option(10, min=1, help="images regenerated with a graph at once (GLaD's sg_batch)")

    def check(self, path: str) -> None:
        try:  # the variants and the renamed ones live with the sampler (diffusion.residual)
            check_variant(self.variant, f"{path}.variant")
        except ValueError as error:
            raise ConfigError(str(error)) from None


@dataclass
class LD3MConfig:
    """One LD3M run (or a pixel-space / ablation one): `ld3m` of the parameters, per run."""

    objective: str = option("dc", choices=OBJECTIVES, help="the matching objective")
    space: str = option("latent", choices=SPACES, help="what is learnt (distill.ld3m.spaces)")
    ipc: int = option(1, min=1, help="images per class")
    iterations: int = option(1000, min=0, help="distillation iterations")
    lr: float | None = option(None, gt=0, help="learning rate of the learnables; None: the space's default")
    momentum: float = option(0.5, min=0, lt=1, help="SGD momentum (paper Table 8: 0.5)")
    init: str = option("real", choices=INITS, help="real: encode a random real image of the class; noise")
    seed: int = option(0, help="the init and every iteration draw from generators of (seed, ...)")
    checkpoint_every: int = option(100, min=1, help="iterations between checkpoints")
    dsa_strategy: str = option("color_crop_cutout_flip_scale_rotate", help="DSA families; 'none' disables DSA")
    device: str = option("cpu", help="torch device")
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    dc: DCConfig = field(default_factory=DCConfig)
    dm: DMConfig = field(default_factory=DMConfig)
    mtt: MTTConfig = field(default_factory=MTTConfig)

    @property
    def spec(self) -> SpaceSpec:
        """The space's `SpaceSpec`."""
        return SPACE_SPECS[self.space]

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def run_key(self) -> dict[str, Any]:
        """The settings that key a run's work directory: all but `RESUMABLE_KEYS`."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_KEYS}

    def dc_config(self) -> DCConfig:
        """`dc` with its loop schedule resolved: the space's default (GLaD / LD3M's 1/1 in prior spaces, DC/DSA's
        table in pixel space) when `dc.schedule` is None."""
        if self.dc.schedule is not None:
            return self.dc
        return dataclasses.replace(self.dc, schedule=self.spec.dc_schedule)

    def learning_rate(self) -> float:
        return float(self.lr) if self.lr is not None else self.spec.default_lr[self.objective]
