"""Samplers over a `LatentPrior`: DDIM, DDIM inversion (ddim.py) and LD3M's residual sampler (residual.py)."""

from diffdistill.diffusion.ddim import (
    DDIMSchedule,
    ddim_invert,
    ddim_sample,
    ddim_schedule,
    ddim_step,
    predict_x0,
)
from diffdistill.diffusion.residual import residual_ddim_sample

__all__ = [
    "DDIMSchedule",
    "ddim_invert",
    "ddim_sample",
    "ddim_schedule",
    "ddim_step",
    "predict_x0",
    "residual_ddim_sample",
]
