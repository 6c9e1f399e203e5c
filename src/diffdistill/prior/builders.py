"""Builders for `LatentPrior` from local diffusers folders or modules (nothing is ever downloaded).

- `load_dit_folder`: a folder laid out like facebook/DiT-XL-2-256 (`transformer/`, `vae/`, `scheduler/`).
- `load_components`: any `AutoencoderKL` / `AutoencoderTiny` / `VQModel` + class-conditional
  `UNet2DModel` or `DiTTransformer2DModel`, as folders or modules.
Folders are read by `diffdistill.prior.load`; a prior trained here is built by `diffdistill.prior.train`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from diffdistill.prior.adapter import LatentPrior
from diffdistill.prior.load import DENOISER_CLASSES, load_model, load_vae, read_dit_parts, scheduler_config_from


def load_dit_folder(directory: str | Path, *, class_ids: Sequence[int] | None = None,
                    class_names: Sequence[str] | None = None, torch_dtype: torch.dtype | None = None,
                    device: str | torch.device = "cpu", default_guidance: float = 4.0,
                    data_size: int | None = None, data_channels: int | None = None) -> LatentPrior:
    """A DiT pipeline folder (`transformer/`, `vae/`, `scheduler/`) as a prior.

    ImageNet DiTs have 1000 classes + null row 1000; map a 10-class dataset with
    `class_ids=imagenet_class_ids("imagenette")`. Learned-sigma channels are dropped by the adapter.
    """
    vae, denoiser, scheduler_config = read_dit_parts(Path(directory), torch_dtype)
    prior = LatentPrior(vae, denoiser, scheduler_config, class_ids=class_ids,
                        class_names=class_names, default_guidance=default_guidance, data_size=data_size,
                        data_channels=data_channels)
    return prior.to(device)


def load_components(vae: str | Path | nn.Module, denoiser: str | Path | nn.Module,
                    scheduler: str | Path | dict[str, Any] | None = None, *,
                    label_table: str | Path | torch.Tensor | None = None,
                    class_ids: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                    scaling_factor: float | None = None, shift_factor: float | None = None,
                    torch_dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                    default_guidance: float = 1.0, data_size: int | None = None,
                    data_channels: int | None = None) -> LatentPrior:
    """A prior from separate components (folders or modules).

    `scheduler` None means DDPM's 1000 linear betas (1e-4..0.02), eps-prediction.
    `label_table` (tensor or safetensors file with key "weight") is required for an identity
    class-embedding UNet; its last row is the null class. `scaling_factor` / `shift_factor`
    override the VAE config (e.g. 1/std of your training latents for a VAE without one).
    """
    vae_model = vae if isinstance(vae, nn.Module) else load_vae(vae, torch_dtype)
    denoiser_model = denoiser if isinstance(denoiser, nn.Module) else load_model(denoiser, DENOISER_CLASSES, torch_dtype)
    if scaling_factor is not None:
        if not scaling_factor > 0:
            raise ValueError(f"scaling_factor={scaling_factor} must be positive")
        vae_model.register_to_config(scaling_factor=float(scaling_factor))
    if shift_factor is not None:
        vae_model.register_to_config(shift_factor=float(shift_factor))
    table = label_table
    if isinstance(label_table, (str, Path)):
        table = load_file(Path(label_table))["weight"]
    prior = LatentPrior(vae_model, denoiser_model, scheduler_config_from(scheduler), label_table=table,
                        class_ids=class_ids, class_names=class_names, default_guidance=default_guidance,
                        data_size=data_size, data_channels=data_channels)
    return prior.to(device)
