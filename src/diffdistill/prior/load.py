"""Loading local diffusers folders into modules (nothing is ever downloaded): model folders by their
`_class_name`, VAEs (TAESD-family folders with the extra "pool" branch included), schedulers, and the parts of a
saved prior folder or a DiT pipeline folder. `LatentPrior.from_pretrained` and the builders assemble priors
from what this module loads; it imports no prior class itself (so nothing cycles).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, DiTTransformer2DModel, UNet2DModel, VQModel
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file
from torch import nn

VAE_CLASSES: dict[str, type] = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny, "VQModel": VQModel}
DENOISER_CLASSES: dict[str, type] = {"UNet2DModel": UNet2DModel, "DiTTransformer2DModel": DiTTransformer2DModel}
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# TAESD's pool branch: 1x1 conv -> GroupNorm(4 groups) -> ReLU -> 1x1 conv (madebyollin/taesd layout).
TAESD_POOL_GROUPS = 4
TAESD_POOL_KEY = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.pool\.")
DEFAULT_DDPM_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                         "beta_schedule": "linear", "prediction_type": "epsilon"}


def require_parts(root: Path, names: Sequence[str]) -> None:
    missing = [name for name in names if not (root / name).exists()]
    if missing:
        raise ValueError(f"prior folder {root} is missing {missing}; expected {list(names)}")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or a ValueError naming the file (truncated, edited, not an object)."""
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the prior folder was truncated or edited: "
                         "re-save it (re-run the prior pipeline)") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}; re-save the prior folder")
    return value


def model_class_name(folder: Path) -> str:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder} is not a diffusers model folder (no config.json)")
    return read_json_object(config_path).get("_class_name", "")


def load_model(folder: str | Path, classes: dict[str, type], torch_dtype: torch.dtype | None = None) -> nn.Module:
    """`from_pretrained` of the class named in the folder's config.json, restricted to `classes`."""
    folder = Path(folder)
    name = model_class_name(folder)
    if name not in classes:
        raise ValueError(f"{folder} holds a {name or 'model without _class_name'}; expected one of {sorted(classes)}")
    if name == "AutoencoderTiny":
        return load_tiny_autoencoder(folder, torch_dtype)
    kwargs: dict[str, Any] = {"low_cpu_mem_usage": False}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    try:
        return classes[name].from_pretrained(str(folder), **kwargs)
    except Exception as exc:  # diffusers / safetensors / torch: truncated weights, mismatched config
        raise ValueError(f"{folder} cannot be loaded as a {name} ({type(exc).__name__}: {exc}); its weights or "
                         "config are truncated or from another model: re-save the prior (re-run the prior "
                         "pipeline)") from exc


def load_vae(folder: str | Path, torch_dtype: torch.dtype | None = None) -> nn.Module:
    return load_model(folder, VAE_CLASSES, torch_dtype)


def _add_pool(block: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    x = args[0]
    return (x + block.pool(x),)


def attach_pool_branches(vae: AutoencoderTiny, state: dict[str, torch.Tensor]) -> list[str]:
    """Give each block named in `*.layers.N.pool.*` keys its pool branch: x <- x + pool(x) before the block."""
    blocks = sorted({(m.group(1), int(m.group(2))) for key in state if (m := TAESD_POOL_KEY.match(key))})
    for part, index in blocks:
        block = getattr(vae, part).layers[index]
        if hasattr(block, "pool"):
            continue
        channels = block.conv[0].in_channels
        hidden = state[f"{part}.layers.{index}.pool.0.weight"].shape[0]
        block.pool = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.GroupNorm(TAESD_POOL_GROUPS, hidden),
            nn.ReLU(), nn.Conv2d(hidden, channels, 1, bias=False))
        block.register_forward_pre_hook(_add_pool)
    return [f"{part}.layers.{index}" for part, index in blocks]


def load_tiny_autoencoder(folder: Path, torch_dtype: torch.dtype | None = None) -> AutoencoderTiny:
    """`from_pretrained` an `AutoencoderTiny` folder, then add the TAESD pool branches its weights carry.

    diffusers loads every tensor it has a slot for and (with a warning we silence) skips the
    `*.pool.*` tensors; those are loaded here into the attached branches, and every tensor in the
    file must end up used.
    """
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{folder} has no {WEIGHTS_NAME}; only single-file safetensors weights are supported")
    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        vae = AutoencoderTiny.from_pretrained(str(folder), low_cpu_mem_usage=False)
    finally:
        diffusers_logging.set_verbosity(previous)
    state = load_file(weights)
    attach_pool_branches(vae, state)
    pool_state = {key: value for key, value in state.items() if TAESD_POOL_KEY.match(key)}
    vae.load_state_dict(pool_state, strict=False)
    unused = sorted(set(state) - set(vae.state_dict()))
    if unused:
        raise ValueError(f"{weights} has tensors this AutoencoderTiny cannot place: {unused[:5]}")
    if torch_dtype is not None:
        vae.to(torch_dtype)
    return vae.eval()


def scheduler_config_from(scheduler: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    if scheduler is None:
        return dict(DEFAULT_DDPM_SCHEDULE)
    if isinstance(scheduler, dict):
        return dict(scheduler)
    folder = Path(scheduler)
    if not (folder / "scheduler_config.json").is_file():
        raise ValueError(f"scheduler folder {folder} has no scheduler_config.json")
    return dict(DDIMScheduler.load_config(folder))


def read_dit_parts(root: Path, torch_dtype: torch.dtype | None = None) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(vae, denoiser, scheduler config) of a DiT pipeline folder (`transformer/`, `vae/`, `scheduler/`)."""
    if not root.is_dir():
        raise ValueError(f"DiT folder {root} does not exist")
    require_parts(root, ["transformer", "vae", "scheduler"])
    denoiser = load_model(root / "transformer", {"DiTTransformer2DModel": DiTTransformer2DModel}, torch_dtype)
    return load_vae(root / "vae", torch_dtype), denoiser, scheduler_config_from(root / "scheduler")
