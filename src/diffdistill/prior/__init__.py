"""Generative priors: one `LatentPrior` adapter over diffusers VAEs + class-conditional denoisers."""

from diffdistill.data.imagenet_subsets import SUBSETS, imagenet_class_ids
from diffdistill.prior.adapter import LatentPrior, psnr_signed
from diffdistill.prior.builders import load_components, load_dit_folder
from diffdistill.prior.config import (
    AutoencoderConfig,
    AutoencoderTrainConfig,
    DenoiserConfig,
    DenoiserTrainConfig,
    NoiseScheduleConfig,
    PriorTrainConfig,
)
from diffdistill.prior.load import load_vae
from diffdistill.prior.train import (
    class_fidelity,
    encode_dataset,
    reconstruction_psnr,
    train_prior,
)

__all__ = [
    "SUBSETS",
    "AutoencoderConfig",
    "AutoencoderTrainConfig",
    "DenoiserConfig",
    "DenoiserTrainConfig",
    "LatentPrior",
    "NoiseScheduleConfig",
    "PriorTrainConfig",
    "class_fidelity",
    "encode_dataset",
    "reconstruction_psnr",
    "train_prior",
    "imagenet_class_ids",
    "load_components",
    "load_dit_folder",
    "load_vae",
    "psnr_signed",
]
