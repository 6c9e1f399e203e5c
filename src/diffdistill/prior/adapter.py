"""`LatentPrior`: one adapter over a diffusers VAE, a class-conditional denoiser and a DDPM schedule.

Backends differ only in how they are built (see `builders.py` and `train.py`); everything
downstream (DDIM, LD3M, D3HR) sees this one interface.

Continuous conditioning. LD3M learns the class condition `c` per image, so the denoiser must
take a float vector rather than a label id. Every backend is wired so that the float `c` goes in
through the denoiser's `class_labels` argument:
- `UNet2DModel(class_embed_type="identity")`: `c` is added to the time embedding as is; the
  adapter owns the label table (`c = table[label]`).
- `UNet2DModel(num_class_embeds=K+1)`: its `class_embedding` (an `nn.Embedding`) is replaced by
  `ContinuousEmbedding`, which passes a float input through and still looks up integer labels.
- `DiTTransformer2DModel`: in each block, adaLN-Zero computes
  `norm1.emb(t, y) = timestep_embedder(time_proj(t)) + class_embedder(y)` and projects it to
  shift/scale/gate; the output layer reuses block 0's `norm1.emb`. Each block's
  `class_embedder` (a `LabelEmbedding`) is replaced by `ContinuousLabelEmbedding`, so passing
  `class_labels=c` (float, B×D) makes the conditioning `time_emb + c`, i.e. `c` *is* the class
  embedding vector. Converted DiT checkpoints carry the same table in every block (one `c`
  of size D feeds all blocks); if the blocks' tables differ, `c` is their concatenation (B×L·D)
  and block i reads its own slice.
The wired modules keep the original weights under the original state-dict keys, and
`save_pretrained` writes the label table back into them, so the saved `denoiser/` folder stays
a plain diffusers model. The last row of every label table is the null (unconditional) class.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    DiTTransformer2DModel,
    UNet2DModel,
    VQModel,
)
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from diffdistill.prior.load import (
    DENOISER_CLASSES,
    VAE_CLASSES,
    load_model,
    read_dit_parts,
    read_json_object,
    require_parts,
)

ADAPTER_CONFIG_NAME = "adapter_config.json"
LABEL_TABLE_NAME = "label_table.safetensors"
ADAPTER_FORMAT = 1
PREDICTION_TYPES = ("epsilon", "v_prediction")


class ContinuousEmbedding(nn.Embedding):
    """An `nn.Embedding` that also accepts a float condition: float input passes through.

    `part`/`parts` pick this module's slice when a condition concatenates several tables.
    """

    def __init__(self, weight: torch.Tensor, part: int = 0) -> None:
        super().__init__(weight.shape[0], weight.shape[1], _weight=weight.detach().clone())
        self.part = part

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():
            width = self.embedding_dim
            return labels[:, self.part * width:(self.part + 1) * width]
        return super().forward(labels)


class ContinuousLabelEmbedding(nn.Module):
    """Stand-in for diffusers' `LabelEmbedding` (DiT): same `embedding_table` key, float pass-through.

    It never drops labels on its own (diffusers' version draws from the global RNG in training
    mode); label dropout for classifier-free guidance is done by the trainer with its generator.
    """

    def __init__(self, table: ContinuousEmbedding) -> None:
        super().__init__()
        self.embedding_table = table

    def forward(self, labels: torch.Tensor, force_drop_ids: Any = None) -> torch.Tensor:
        return self.embedding_table(labels)


def wire_continuous_condition(denoiser: nn.Module) -> tuple[str, torch.Tensor | None]:
    """Make `denoiser` take a float `c` as `class_labels`; return (mode, its own label table or None)."""
    if isinstance(denoiser, UNet2DModel):
        cfg = denoiser.config
        if cfg.class_embed_type == "identity":
            return "unet_identity", None
        if cfg.class_embed_type is None and cfg.num_class_embeds:
            if not isinstance(denoiser.class_embedding, ContinuousEmbedding):
                denoiser.class_embedding = ContinuousEmbedding(denoiser.class_embedding.weight)
            return "unet_embedding", denoiser.class_embedding.weight.detach().clone()
        raise ValueError(
            "denoiser: a UNet2DModel prior must be class-conditional, with class_embed_type='identity' "
            f"(plus a label table) or num_class_embeds=K+1 (last row = null); got class_embed_type="
            f"{cfg.class_embed_type!r}, num_class_embeds={cfg.num_class_embeds!r}")
    if isinstance(denoiser, DiTTransformer2DModel):
        embedders = [block.norm1.emb for block in denoiser.transformer_blocks]
        tables = [emb.class_embedder.embedding_table.weight.detach() for emb in embedders]
        shared = all(torch.equal(tables[0], t) for t in tables[1:])
        for index, emb in enumerate(embedders):
            part = 0 if shared else index
            emb.class_embedder = ContinuousLabelEmbedding(ContinuousEmbedding(tables[index], part=part))
        table = tables[0].clone() if shared else torch.cat(tables, dim=1)
        return ("dit_shared" if shared else "dit_per_block"), table
    raise ValueError(f"denoiser must be one of {sorted(DENOISER_CLASSES)}, got {type(denoiser).__name__}")


def vae_downsampling_factor(vae: nn.Module) -> int:
    cfg = vae.config
    if isinstance(vae, AutoencoderTiny):
        return 2 ** (len(cfg.encoder_block_out_channels) - 1)
    return 2 ** (len(cfg.block_out_channels) - 1)


def vae_latent_channels(vae: nn.Module) -> int:
    cfg = vae.config
    if isinstance(vae, VQModel):
        return cfg.vq_embed_dim or cfg.latent_channels
    return cfg.latent_channels


def denoiser_sample_size(denoiser: nn.Module) -> int:
    size = denoiser.config.sample_size
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"denoiser sample_size={size} is not square; only square latents are supported")
        size = size[0]
    return int(size)


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """dtype of a module's first parameter (diffusers' `.dtype` walks all submodules: slow per step)."""
    return next(module.parameters()).dtype


def ddim_config_from(config: dict[str, Any]) -> dict[str, Any]:
    """A `DDIMScheduler` config from any DDPM-family scheduler config: no clipping, final alpha = 1."""
    scheduler = DDIMScheduler.from_config(dict(config), clip_sample=False, set_alpha_to_one=True)
    return {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}


class LatentPrior(nn.Module):
    """VAE + class-conditional noise predictor + DDPM schedule, behind one small interface.

    Latents are `(vae_latent - shift_factor) * scaling_factor`, both from the VAE's config
    (for a prior trained here they are computed from the training latents). Images are in [-1, 1].
    """

    def __init__(
        self,
        vae: nn.Module,
        denoiser: nn.Module,
        scheduler_config: dict[str, Any],
        *,
        label_table: torch.Tensor | None = None,
        class_ids: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        default_guidance: float = 1.0,
        data_size: int | None = None,
        data_channels: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(vae, tuple(VAE_CLASSES.values())):
            raise ValueError(f"vae must be one of {sorted(VAE_CLASSES)}, got {type(vae).__name__}")
        self.vae = vae
        self.denoiser = denoiser
        self.conditioning, own_table = wire_continuous_condition(denoiser)
        table = label_table if label_table is not None else own_table
        if table is None:
            raise ValueError("label_table is required for a UNet2DModel with class_embed_type='identity' "
                             "(rows = prior classes + 1 null row, width = its time-embedding size)")
        self.label_table = nn.Embedding(table.shape[0], table.shape[1], _weight=table.detach().clone().float())
        self._check_shapes()

        prediction_type = scheduler_config.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"scheduler prediction_type={prediction_type!r} is not supported; "
                             f"the denoiser must predict one of {PREDICTION_TYPES}")
        self.prediction_type = prediction_type
        self._ddim_config = ddim_config_from(scheduler_config)
        alphas = DDIMScheduler.from_config(self._ddim_config).alphas_cumprod
        self.register_buffer("alphas_cumprod", alphas.float(), persistent=False)

        prior_classes = self.label_table.num_embeddings - 1
        ids = list(range(prior_classes)) if class_ids is None else [int(i) for i in class_ids]
        if not ids:
            raise ValueError("class_ids must map at least one dataset class to a prior class")
        bad = [i for i in ids if not 0 <= i < prior_classes]
        if bad:
            raise ValueError(f"class_ids {bad} are outside the prior's classes 0..{prior_classes - 1} "
                             f"(row {prior_classes} is the null class)")
        if len(set(ids)) != len(ids):
            raise ValueError(f"class_ids={ids} maps two dataset classes to the same prior class")
        if class_names is not None and len(class_names) != len(ids):
            raise ValueError(f"class_names has {len(class_names)} entries but class_ids has {len(ids)}")
        self.register_buffer("class_ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        self.class_names = list(class_names) if class_names is not None else None
        self.default_guidance = float(default_guidance)
        if data_size is not None and (isinstance(data_size, bool) or not isinstance(data_size, int) or data_size < 1):
            raise ValueError(f"data_size={data_size!r} must be a positive int (the dataset's image side) or None")
        # Data at another resolution (ImageNet subsets at 128 px through a 256-px DiT, as in the papers):
        # encode resizes up to the native size and decode resizes back, so the LDM always runs on its own latent size.
        self._data_size = None if data_size == self.image_size else data_size
        # Grayscale data through an RGB autoencoder (Fashion-MNIST through TAEF2): encode repeats the one channel,
        # decode returns the channel mean, so the rest of the project sees the data's own channel count.
        vae_channels = int(vae.config.in_channels)
        if data_channels not in (None, 1, vae_channels):
            raise ValueError(f"data_channels={data_channels!r}: the data has {data_channels}-channel images but the "
                             f"prior's VAE takes {vae_channels}, and only grayscale (1) data is converted; convert "
                             "the data or use another VAE")
        self._data_channels = None if data_channels in (None, vae_channels) else 1
        self.eval()

    # ----------------------------------------------------------------- properties
    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = denoiser_sample_size(self.denoiser)
        return (vae_latent_channels(self.vae), size, size)

    @property
    def image_size(self) -> int:
        return self.latent_shape[1] * vae_downsampling_factor(self.vae)

    @property
    def data_size(self) -> int:
        """Side of the images `encode` takes and `decode` returns (the native `image_size` unless set)."""
        return self._data_size or self.image_size

    @property
    def image_channels(self) -> int:
        """Channels of the images `encode` takes and `decode` returns (the VAE's own unless `data_channels`)."""
        return self._data_channels or int(self.vae.config.in_channels)

    @property
    def num_classes(self) -> int:
        """Dataset classes this prior serves (= len(class_ids))."""
        return int(self.class_ids.numel())

    @property
    def cond_dim(self) -> int:
        return self.label_table.embedding_dim

    @property
    def learned_sigma(self) -> bool:
        return self._out_channels() == 2 * self.latent_shape[0]

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """`DDIMScheduler` config for sampling with `predict_noise` (which always returns eps)."""
        return dict(self._ddim_config, prediction_type="epsilon")

    def make_scheduler(self, num_steps: int) -> DDIMScheduler:
        num_train = int(self._ddim_config["num_train_timesteps"])
        if not isinstance(num_steps, int) or not 1 <= num_steps <= num_train:
            raise ValueError(f"num_steps={num_steps!r} must be an int in 1..{num_train}")
        scheduler = DDIMScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_steps)
        return scheduler

    # ----------------------------------------------------------------- checks
    def _out_channels(self) -> int:
        cfg = self.denoiser.config
        return int(cfg.out_channels if cfg.out_channels is not None else cfg.in_channels)

    def _cond_width(self) -> int:
        if isinstance(self.denoiser, UNet2DModel):
            return int(self.denoiser.time_embedding.linear_1.out_features if self.conditioning == "unet_identity"
                       else self.denoiser.class_embedding.embedding_dim)
        width = self.denoiser.inner_dim
        return width * (len(self.denoiser.transformer_blocks) if self.conditioning == "dit_per_block" else 1)

    def _check_shapes(self) -> None:
        latent_channels = vae_latent_channels(self.vae)
        in_channels = int(self.denoiser.config.in_channels)
        if in_channels != latent_channels:
            raise ValueError(f"channel mismatch: the VAE makes {latent_channels}-channel latents but the denoiser "
                             f"takes {in_channels} input channels; pair components trained together")
        if self._out_channels() not in (in_channels, 2 * in_channels):
            raise ValueError(f"denoiser out_channels={self._out_channels()} must be {in_channels} (eps) or "
                             f"{2 * in_channels} (eps + learned sigma)")
        if self.vae.config.in_channels != self.vae.config.out_channels:
            raise ValueError("vae in_channels and out_channels differ; the prior needs an image autoencoder")
        if self.label_table.embedding_dim != self._cond_width():
            raise ValueError(f"label_table width {self.label_table.embedding_dim} does not match the denoiser's "
                             f"condition width {self._cond_width()}")
        if self.label_table.num_embeddings < 2:
            raise ValueError("label_table needs at least one class row plus the null row")

    def check_images(self, images: torch.Tensor, name: str = "images") -> None:
        """Raise a ValueError naming what to change if `images` cannot go through this prior."""
        if images.dim() != 4:
            raise ValueError(f"{name} must be N×C×H×W, got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8 or not images.is_floating_point():
            raise ValueError(f"{name} must be float in [-1, 1] (use to_signed(to_unit(x))), got {images.dtype}")
        channels, height, width = images.shape[1:]
        if channels != self.image_channels:
            raise ValueError(f"{name} have {channels} channels but the prior's VAE takes {self.image_channels}")
        if height != width:
            raise ValueError(f"{name} are {height}×{width}; the prior takes square {self.data_size}-px images")
        self.check_dataset(image_size=height)

    def check_dataset(self, *, num_classes: int | None = None, image_size: int | None = None,
                      channels: int | None = None) -> None:
        """Raise a ValueError saying what to change if a dataset with this shape cannot use this prior."""
        if num_classes is not None and num_classes != self.num_classes:
            prior_classes = self.label_table.num_embeddings - 1
            raise ValueError(f"the dataset has {num_classes} classes but the prior maps {self.num_classes} "
                             f"(class_ids over its {prior_classes} classes); pass class_ids with one prior class "
                             "per dataset class, e.g. imagenet_class_ids('imagenette') for an ImageNet prior")
        if channels is not None and channels != self.image_channels:
            raise ValueError(f"the dataset has {channels}-channel images but the prior's VAE takes "
                             f"{self.image_channels}; convert the data or use another VAE")
        if image_size is not None and self._data_size is not None:
            if image_size != self._data_size:
                raise ValueError(f"image_size={image_size} but this prior was set up for {self._data_size}-px data "
                                 f"(resized to its native {self.image_size} px); rebuild the prior for this data")
        elif image_size is not None:
            factor = vae_downsampling_factor(self.vae)
            if image_size % factor:
                raise ValueError(f"image_size={image_size} is not divisible by the VAE's downsampling factor "
                                 f"{factor}; resize the data to {self.image_size} px")
            if image_size != self.image_size:
                raise ValueError(f"image_size={image_size} but the denoiser works on {self.latent_shape[1]}-px "
                                 f"latents, i.e. {self.image_size}-px images; resize the data to {self.image_size} "
                                 "or build the prior with data_size (prior.data_size in parameters)")

    def check_latents(self, latents: torch.Tensor, name: str = "latents") -> None:
        if latents.dim() != 4 or tuple(latents.shape[1:]) != self.latent_shape:
            raise ValueError(f"{name} must be N×{'×'.join(map(str, self.latent_shape))}, got {tuple(latents.shape)}")

    # ----------------------------------------------------------------- VAE
    def encode(self, images: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """[-1, 1] images -> scaled latents (posterior mean unless `sample`)."""
        self.check_images(images)
        x = images.to(parameter_dtype(self.vae))
        if self._data_channels is not None:
            x = x.expand(-1, int(self.vae.config.in_channels), -1, -1)
        if self._data_size is not None:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        if isinstance(self.vae, AutoencoderKL):
            posterior = self.vae.encode(x).latent_dist
            z = posterior.sample(generator=generator) if sample else posterior.mean
        else:
            if sample:
                raise ValueError(f"sample=True needs a VAE with a posterior (AutoencoderKL); "
                                 f"{type(self.vae).__name__} encodes deterministically")
            z = self.vae.encode(x).latents
        return ((z - self.shift_factor) * self.scaling_factor).to(images.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in about [-1, 1] (unclamped). VQ VAEs quantise (straight-through)."""
        self.check_latents(latents)
        z = latents.to(parameter_dtype(self.vae)) / self.scaling_factor + self.shift_factor
        images = self.vae.decode(z).sample
        if self._data_channels is not None:
            images = images.mean(dim=1, keepdim=True)
        if self._data_size is not None:
            images = F.interpolate(images, size=(self._data_size,) * 2, mode="bilinear", antialias=True,
                                   align_corners=False)
        return images.to(latents.dtype)

    # ----------------------------------------------------------------- conditioning
    def condition(self, labels: torch.Tensor) -> torch.Tensor:
        """Dataset labels (B,) -> continuous condition c (B, cond_dim): the prior's label-table rows."""
        if labels.dim() != 1 or labels.is_floating_point():
            raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} shape {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1} (the prior's class_ids mapping), "
                             f"got range {int(labels.min())}..{int(labels.max())}")
        return self.label_table(self.class_ids.to(labels.device)[labels])

    def null_condition(self, batch_size: int) -> torch.Tensor:
        """The unconditional condition (the table's last row), (B, cond_dim)."""
        return self.label_table.weight[-1].expand(batch_size, -1)

    # ----------------------------------------------------------------- denoiser
    def timestep_tensor(self, t: int | torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device)
        if t.is_floating_point():
            t = t.long()
        return t.expand(batch_size) if t.dim() == 0 else t

    def denoise(self, z_t: torch.Tensor, t: int | torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """One denoiser forward with condition `c`; returns eps (learned sigma dropped, v converted)."""
        t = self.timestep_tensor(t, z_t.shape[0], z_t.device)
        dtype = parameter_dtype(self.denoiser)
        out = self.denoiser(z_t.to(dtype), t, class_labels=c.to(dtype)).sample.to(z_t.dtype)
        if out.shape[1] != z_t.shape[1]:  # learned-sigma models: keep the eps half
            out = out[:, :z_t.shape[1]]
        if self.prediction_type == "v_prediction":
            alpha = self.alphas_cumprod.to(z_t.device)[t].to(z_t.dtype).view(-1, 1, 1, 1)
            out = alpha.sqrt() * out + (1 - alpha).sqrt() * z_t
        return out

    def predict_noise(self, z_t: torch.Tensor, t: int | torch.Tensor, c: torch.Tensor,
                      guidance: float = 1.0) -> torch.Tensor:
        """Classifier-free guided eps: `eps_u + g (eps_c - eps_u)`; g == 1 -> conditional only."""
        if c.dim() != 2 or c.shape[0] != z_t.shape[0] or c.shape[1] != self.cond_dim:
            raise ValueError(f"c must be (B={z_t.shape[0]}, cond_dim={self.cond_dim}), got {tuple(c.shape)}")
        if guidance == 1.0:
            return self.denoise(z_t, t, c)
        batch = z_t.shape[0]
        t = self.timestep_tensor(t, batch, z_t.device)
        eps = self.denoise(torch.cat([z_t, z_t]), torch.cat([t, t]),
                           torch.cat([c, self.null_condition(batch).to(c.dtype)]))
        eps_c, eps_u = eps.chunk(2)
        return eps_u + guidance * (eps_c - eps_u)

    # ----------------------------------------------------------------- persistence
    def adapter_config(self) -> dict[str, Any]:
        return {
            "format": ADAPTER_FORMAT,
            "vae_class": type(self.vae).__name__,
            "denoiser_class": type(self.denoiser).__name__,
            "conditioning": self.conditioning,
            "class_ids": self.class_ids.tolist(),
            "class_names": self.class_names,
            "default_guidance": self.default_guidance,
            "image_size": self.image_size,
            "data_size": self._data_size,
            "data_channels": self._data_channels,
            "latent_shape": list(self.latent_shape),
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
        }

    @torch.no_grad()
    def _write_back_label_table(self) -> None:
        """Copy the label table into the denoiser's own tables so `denoiser/` stays a plain model."""
        table = self.label_table.weight
        if self.conditioning == "unet_embedding":
            self.denoiser.class_embedding.weight.copy_(table)
        elif self.conditioning.startswith("dit"):
            for block in self.denoiser.transformer_blocks:
                embedding = block.norm1.emb.class_embedder.embedding_table
                width = embedding.embedding_dim
                embedding.weight.copy_(table[:, embedding.part * width:(embedding.part + 1) * width])

    def save_pretrained(self, save_directory: str | Path) -> None:
        root = Path(save_directory)
        root.mkdir(parents=True, exist_ok=True)
        self._write_back_label_table()
        self.vae.save_pretrained(root / "vae")
        self.denoiser.save_pretrained(root / "denoiser")
        DDIMScheduler.from_config(self._ddim_config).save_pretrained(root / "scheduler")
        save_file({"weight": self.label_table.weight.detach().float().cpu().contiguous()}, root / LABEL_TABLE_NAME)
        (root / ADAPTER_CONFIG_NAME).write_text(json.dumps(self.adapter_config(), indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu") -> LatentPrior:
        """Load a folder written by `save_pretrained`, or a DiT pipeline folder (transformer/, vae/, scheduler/)."""
        root = Path(directory)
        if not root.is_dir():
            raise ValueError(f"prior folder {root} does not exist")
        if not (root / ADAPTER_CONFIG_NAME).is_file() and (root / "transformer").is_dir():  # a DiT pipeline folder
            return cls(*read_dit_parts(root, torch_dtype), default_guidance=4.0).to(device)
        require_parts(root, ["vae", "denoiser", "scheduler", ADAPTER_CONFIG_NAME, LABEL_TABLE_NAME])
        config = read_json_object(root / ADAPTER_CONFIG_NAME)
        if "class_ids" not in config:
            raise ValueError(f"{root / ADAPTER_CONFIG_NAME} lacks class_ids; the file was edited: re-save the prior")
        if config.get("format") != ADAPTER_FORMAT:
            raise ValueError(f"{root / ADAPTER_CONFIG_NAME} has format {config.get('format')!r}; "
                             f"this version reads format {ADAPTER_FORMAT}")
        vae = load_model(root / "vae", VAE_CLASSES, torch_dtype)
        denoiser = load_model(root / "denoiser", DENOISER_CLASSES, torch_dtype)
        scheduler_config = dict(DDIMScheduler.load_config(root / "scheduler"))
        try:
            table = load_file(root / LABEL_TABLE_NAME)["weight"]
        except Exception as exc:  # safetensors' own error types, or no "weight" tensor
            raise ValueError(f"{root / LABEL_TABLE_NAME} is not a readable label table ({type(exc).__name__}: "
                             f"{exc}); it was truncated or edited: re-save the prior") from exc
        prior = cls(vae, denoiser, scheduler_config, label_table=table, class_ids=config["class_ids"],
                    class_names=config.get("class_names"), default_guidance=config.get("default_guidance", 1.0),
                    data_size=config.get("data_size"), data_channels=config.get("data_channels"))
        return prior.to(device)


def psnr_signed(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """PSNR in dB for images in [-1, 1] (peak-to-peak 2), over the whole batch."""
    mse = (reference.double() - estimate.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10.0 * math.log10(4.0 / mse)
