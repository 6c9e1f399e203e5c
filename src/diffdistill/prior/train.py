"""Train a small latent prior here (AutoencoderKL + class-conditional UNet2DModel), or fine-tune one.

Recipe (docs/digits_prior.md: the probe's variant B, tuned): a 16 px image maps to a
4×4×4 latent; the VAE trains on MSE + L1 + a weak KL with posterior samples; latents are then
standardised from data (shift = mean, scale = 1/std of the training posterior means); the
denoiser is an eps-predicting UNet (~0.7 M params) under DDPM's 1000 linear betas, with the class
condition fed as a learned label-table row (`class_embed_type="identity"`, last row = null),
10 % label dropout for classifier-free guidance, AdamW, gradient clipping and EMA weights
(the returned prior carries the EMA weights).

Training is a resumable loop: with `checkpoint_dir`, each phase saves model, EMA, optimizer,
step and generator state atomically every `checkpoint_every` steps and resumes to exactly the
bytes of an uninterrupted run. Metrics go to `on_step(step, metrics)` every `log_every` steps; progress to
`diffdistill.progress` (a bar on a terminal, sparse log lines elsewhere).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DModel
from torch import nn

from diffdistill.data.bundle import from_signed
from diffdistill.diffusion.ddim import ddim_sample
from diffdistill.prior.adapter import LatentPrior, psnr_signed, vae_downsampling_factor, vae_latent_channels
from diffdistill.prior.config import (
    AutoencoderConfig,
    DenoiserConfig,
    DenoiserTrainConfig,
    PriorTrainConfig,
)
from diffdistill.progress import Progress
from diffdistill.workdir import WorkDir, fingerprint

OnStep = Callable[[int, dict[str, float]], None]
# --------------------------------------------------------------------------- init
@torch.no_grad()
def init_weights_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter from `generator` with PyTorch's default init schemes.

    diffusers models initialise from the global RNG; this makes a fresh model a pure function of
    the seed. Raises if a parameter belongs to a layer type it does not know.
    """
    covered: set[int] = set()
    for sub in module.modules():
        if isinstance(sub, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(sub.weight, a=math.sqrt(5), generator=generator)
            if sub.bias is not None:
                fan_in = sub.weight[0].numel()
                nn.init.uniform_(sub.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)
        elif isinstance(sub, (nn.GroupNorm, nn.LayerNorm)):
            if sub.weight is not None:
                nn.init.ones_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, generator=generator)
        else:
            continue
        covered.update(id(p) for p in sub.parameters(recurse=False))
    missing = [name for name, p in module.named_parameters() if id(p) not in covered]
    if missing:
        raise ValueError(f"init_weights_ does not know the layers of parameters {missing[:5]}")


def build_autoencoder(config: AutoencoderConfig, channels: int, image_size: int,
                      generator: torch.Generator) -> AutoencoderKL:
    blocks = len(config.block_out_channels)
    factor = 2 ** (blocks - 1)
    if image_size % factor:
        raise ValueError(f"image_size={image_size} is not divisible by the autoencoder's factor {factor}; "
                         "change autoencoder.block_out_channels or resize the data")
    vae = AutoencoderKL(
        in_channels=channels, out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels, norm_num_groups=config.norm_num_groups,
        sample_size=image_size, mid_block_add_attention=config.mid_block_attention,
        scaling_factor=1.0, shift_factor=0.0)
    init_weights_(vae, generator)
    return vae


def build_denoiser(config: DenoiserConfig, latent_channels: int, latent_size: int,
                   generator: torch.Generator) -> UNet2DModel:
    if len(config.down_block_types) != len(config.block_out_channels) or \
            len(config.up_block_types) != len(config.block_out_channels):
        raise ValueError("denoiser: down_block_types, up_block_types and block_out_channels must have equal length")
    factor = 2 ** (len(config.block_out_channels) - 1)
    if latent_size % factor:
        raise ValueError(f"latent size {latent_size} is not divisible by the denoiser's factor {factor}; "
                         "use fewer denoiser blocks")
    unet = UNet2DModel(
        sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
        down_block_types=tuple(config.down_block_types), up_block_types=tuple(config.up_block_types),
        attention_head_dim=config.attention_head_dim, norm_num_groups=config.norm_num_groups,
        class_embed_type="identity")
    init_weights_(unet, generator)
    return unet


# --------------------------------------------------------------------------- resumable loop
def _data_signature(tensor: torch.Tensor, chunk: int = 1024) -> list[Any]:
    """Shape, sum and sum of squares (float64, in chunks so big datasets are not copied whole)."""
    total = squares = 0.0
    for start in range(0, tensor.shape[0], chunk):
        part = tensor[start:start + chunk].detach().double()
        total += float(part.sum())
        squares += float(part.square().sum())
    return [list(tensor.shape), round(total, 6), round(squares, 6)]


@dataclass
class Phase:
    """One resumable optimisation loop: `step_fn(step) -> metrics` does a full update."""

    name: str
    module: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    total_steps: int
    step_fn: Callable[[int], dict[str, float]]
    fingerprint: str
    ema_decay: float | None = None
    max_seconds: float | None = None
    ema: dict[str, torch.Tensor] = field(default_factory=dict)

    def trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.module.named_parameters() if p.requires_grad}

    def state(self, step: int) -> dict[str, Any]:
        return {"step": step, "fingerprint": self.fingerprint, "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "ema": dict(self.ema)}

    def load(self, state: dict[str, Any]) -> int:
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(f"checkpoint for phase {self.name!r} was written with other settings or data; "
                             "use a fresh checkpoint_dir (or delete the old one)")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.ema = {k: v.clone() for k, v in state["ema"].items()}
        return int(state["step"])

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        if self.ema_decay is None:
            return
        params = self.trainable()
        if not self.ema:
            self.ema = {n: p.detach().clone() for n, p in params.items()}
            return
        decay = min(self.ema_decay, (1 + step) / (10 + step))  # warm-up: early EMA follows the weights
        for name, p in params.items():
            self.ema[name].lerp_(p.detach(), 1.0 - decay)

    @torch.no_grad()
    def copy_ema_to_model(self) -> None:
        params = self.trainable()
        for name, value in self.ema.items():
            params[name].copy_(value)


def _resume_settings(train: Any) -> dict[str, Any]:
    """The settings a checkpoint must share to be resumed. The step budget is not one under a constant learning
    rate (nothing else depends on it: going on from a run of N steps is the run asked for more), nor is the
    wall-clock cap; under a cosine schedule the budget shapes every step, so it is."""
    values = asdict(train)
    values.pop("max_seconds", None)
    if getattr(train, "lr_schedule", "constant") == "constant":
        values.pop("steps")
    return values


def run_phase(phase: Phase, *, checkpoint_dir: str | Path | None, checkpoint_every: int,
              log_every: int, on_step: OnStep | None) -> int:
    """Run (or resume) `phase` to its last step; returns the number of steps done."""
    work = WorkDir(checkpoint_dir) if checkpoint_dir is not None else None
    saved = work.load_torch(phase.name) if work is not None else None
    step = phase.load(saved) if saved is not None else 0
    if step > phase.total_steps:
        raise ValueError(f"the checkpoint of phase {phase.name!r} in {checkpoint_dir} is {step} steps in, past the "
                         f"{phase.total_steps} asked; ask for at least {step} steps or use a fresh checkpoint_dir")
    phase.module.train()
    started = time.monotonic()
    with Progress(f"prior {phase.name}", phase.total_steps, done=step) as bar:
        while step < phase.total_steps:
            metrics = phase.step_fn(step)
            phase.update_ema(step)
            step += 1
            bar.advance(loss=metrics["loss"])
            out_of_time = phase.max_seconds is not None and time.monotonic() - started > phase.max_seconds
            if on_step is not None and (step % log_every == 0 or step == phase.total_steps or out_of_time):
                on_step(step, {f"{phase.name}/{k}": v for k, v in metrics.items()})
            if work is not None and (step % checkpoint_every == 0 or step == phase.total_steps or out_of_time):
                work.save_torch(phase.name, phase.state(step))
            if out_of_time:
                break
    phase.module.eval()
    return step


def _learning_rate(config: DenoiserTrainConfig, step: int) -> float:
    lr = config.lr * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else config.lr
    if config.lr_schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * step / max(config.steps, 1)))
    return lr


# --------------------------------------------------------------------------- phases
def train_autoencoder(images: torch.Tensor, config: PriorTrainConfig, *, checkpoint_dir: str | Path | None = None,
                      on_step: OnStep | None = None) -> AutoencoderKL:
    """Phase 1: an AutoencoderKL on [-1, 1] images (MSE + L1 + weak KL, posterior samples)."""
    device = torch.device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    vae = build_autoencoder(config.autoencoder, images.shape[1], images.shape[-1], generator).to(device)
    train = config.autoencoder_train
    optimizer = torch.optim.AdamW(vae.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    data = images.to(device)

    def step_fn(step: int) -> dict[str, float]:
        index = torch.randint(0, data.shape[0], (train.batch_size,), generator=generator)
        x = data[index.to(device)]
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(device)
        z = posterior.mean + posterior.std * noise
        recon = vae.decode(z).sample
        mse = F.mse_loss(recon, x)
        l1 = (recon - x).abs().mean()
        kl = posterior.kl().mean() / z[0].numel()
        loss = mse + train.l1_weight * l1 + train.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(vae.parameters(), train.grad_clip)
        optimizer.step()
        return {"loss": loss.item(), "mse": mse.item(), "kl_per_dim": kl.item()}

    phase = Phase("autoencoder", vae, optimizer, generator, train.steps, step_fn,
                  fingerprint([asdict(config.autoencoder), _resume_settings(train), config.seed, _data_signature(images)]),
                  max_seconds=train.max_seconds)
    run_phase(phase, checkpoint_dir=checkpoint_dir, checkpoint_every=config.checkpoint_every,
              log_every=config.log_every, on_step=on_step)
    return vae


@torch.no_grad()
def encode_dataset(prior_or_vae: LatentPrior | AutoencoderKL, images: torch.Tensor,
                   batch_size: int = 512) -> torch.Tensor:
    """Latents of all images in batches (posterior mean; scaled when given a LatentPrior)."""
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size]
        if isinstance(prior_or_vae, LatentPrior):
            x = x.to(prior_or_vae.label_table.weight.device)
            chunks.append(prior_or_vae.encode(x))
        else:
            chunks.append(prior_or_vae.encode(x.to(prior_or_vae.device)).latent_dist.mean)
    return torch.cat(chunks)


def standardise_latents(vae_or_prior: AutoencoderKL | LatentPrior, images: torch.Tensor,
                        center: bool) -> torch.Tensor:
    """Set the VAE's shift/scaling factors from data: shift = mean, scale = 1/std of the latents. Given a
    `LatentPrior`, the latents are its encoder's (resized to a pretrained VAE's native size, as it will run).
    Returns the standardised latents, the bytes `encode_dataset` gives from now on (one pass over the data)."""
    vae = vae_or_prior.vae if isinstance(vae_or_prior, LatentPrior) else vae_or_prior
    vae.register_to_config(scaling_factor=1.0, shift_factor=0.0)  # measure the raw latents
    raw = encode_dataset(vae_or_prior, images)
    latents = raw.double()
    shift = float(latents.mean()) if center else 0.0
    std = float((latents - shift).pow(2).mean().sqrt()) if center else float(latents.std())
    vae.register_to_config(scaling_factor=1.0 / std, shift_factor=shift)
    return (raw - shift) * float(vae.config.scaling_factor)  # LatentPrior.encode's arithmetic


def train_denoiser(prior: LatentPrior, images: torch.Tensor, labels: torch.Tensor, config: PriorTrainConfig, *,
                   checkpoint_dir: str | Path | None = None, on_step: OnStep | None = None,
                   latents: torch.Tensor | None = None) -> LatentPrior:
    """Phase 2 (and fine-tuning): the prior's denoiser + label table on its own latents of `images`.

    eps-MSE at uniform timesteps, label dropout to the null row, EMA weights copied in at the end. `latents`:
    `encode_dataset(prior, images)` when already computed (`standardise_latents` returns them).
    """
    device = torch.device(config.device)
    prior.to(device)
    train = config.denoiser_train
    generator = torch.Generator().manual_seed(config.seed + 1)
    latents = (encode_dataset(prior, images) if latents is None else latents).to(device)
    rows = prior.class_ids.to(device)[labels.to(device)]
    null_row = prior.label_table.num_embeddings - 1
    alphas = prior.alphas_cumprod.to(device)
    module = nn.ModuleDict({"denoiser": prior.denoiser, "label_table": prior.label_table})
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=train.lr,
                                  weight_decay=train.weight_decay)

    def step_fn(step: int) -> dict[str, float]:
        index = torch.randint(0, latents.shape[0], (train.batch_size,), generator=generator).to(device)
        dropped = (torch.rand(train.batch_size, generator=generator) < train.label_dropout).to(device)
        t = torch.randint(0, alphas.numel(), (train.batch_size,), generator=generator).to(device)
        noise = torch.randn((train.batch_size, *latents.shape[1:]), generator=generator).to(device)
        z0 = latents[index]
        alpha = alphas[t].view(-1, 1, 1, 1)
        z_t = alpha.sqrt() * z0 + (1 - alpha).sqrt() * noise
        c = prior.label_table(torch.where(dropped, null_row, rows[index]))
        loss = F.mse_loss(prior.denoise(z_t, t, c), noise)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(train, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), train.grad_clip)
        optimizer.step()
        return {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]}

    phase = Phase("denoiser", module, optimizer, generator, train.steps, step_fn,
                  fingerprint([config.mode, asdict(config.denoiser), _resume_settings(train), config.seed,
                               _data_signature(latents), _data_signature(labels)]),
                  ema_decay=train.ema_decay, max_seconds=train.max_seconds)
    run_phase(phase, checkpoint_dir=checkpoint_dir, checkpoint_every=config.checkpoint_every,
              log_every=config.log_every, on_step=on_step)
    if phase.ema:
        phase.copy_ema_to_model()
    prior.eval()
    return prior


def _check_training_data(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float N×C×H×W in [-1, 1] (use to_signed(to_unit(x))), "
                         f"got {images.dtype} shape {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square, got {tuple(images.shape[-2:])}")
    low, high = float(images.min()), float(images.max())
    if low < -1.001 or high > 1.001:
        raise ValueError(f"images must lie in [-1, 1], got range [{low:.3f}, {high:.3f}]; use to_signed(to_unit(x))")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
        raise ValueError(f"labels must be int64 (N,) matching images, got {labels.dtype} {tuple(labels.shape)}")


def train_prior(images: torch.Tensor, labels: torch.Tensor, config: PriorTrainConfig | None = None, *,
                num_classes: int | None = None, class_names: list[str] | None = None,
                prior: LatentPrior | None = None, vae: nn.Module | None = None, native_size: int | None = None,
                checkpoint_dir: str | Path | None = None, on_step: OnStep | None = None) -> LatentPrior:
    """The prior phase: `mode="train"` trains VAE + denoiser from scratch; `"fine_tune"` continues `prior`.

    `vae` (mode "train"): a pretrained autoencoder (e.g. TAEF2), kept frozen; only the denoiser and the label
    table are trained, on its latents standardised from the data. `native_size`: the side it runs at (the data
    is resized to it and back, as for any pretrained prior); None = the data's own side.
    """
    config = config or PriorTrainConfig()
    PriorTrainConfig.from_dict(config.to_dict())  # a config built in code obeys the same checks
    _check_training_data(images, labels)
    if config.mode == "fine_tune":
        if prior is None:
            raise ValueError("mode='fine_tune' needs prior= (a loaded LatentPrior to continue training)")
        prior.check_dataset(num_classes=num_classes, image_size=images.shape[-1], channels=images.shape[1])
        return train_denoiser(prior, images, labels, config, checkpoint_dir=checkpoint_dir, on_step=on_step)
    if prior is not None:
        raise ValueError("mode='train' builds a new prior; pass prior= only with mode='fine_tune'")
    num_classes = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    pretrained, data_size, data_channels = vae is not None, None, None
    if not pretrained:
        if native_size is not None:
            raise ValueError("native_size applies to a pretrained autoencoder (vae=); a VAE trained here runs at "
                             "the data's size")
        vae = train_autoencoder(images, config, checkpoint_dir=checkpoint_dir, on_step=on_step)
        latents = standardise_latents(vae, images, config.center_latents)
        latent_size = images.shape[-1] // 2 ** (len(config.autoencoder.block_out_channels) - 1)
    else:
        vae.requires_grad_(False).eval()
        size, factor = native_size or int(images.shape[-1]), vae_downsampling_factor(vae)
        if size % factor:
            raise ValueError(f"the pretrained VAE downsamples by {factor}; its native size {size} must be a "
                             f"multiple of it (set prior.native_size)")
        latent_size, data_size, data_channels = size // factor, int(images.shape[-1]), int(images.shape[1])
    generator = torch.Generator().manual_seed(config.seed + 2)
    unet = build_denoiser(config.denoiser, vae_latent_channels(vae), latent_size, generator)
    table = torch.randn(num_classes + 1, unet.time_embedding.linear_1.out_features, generator=generator)
    schedule = dict(asdict(config.schedule), prediction_type="epsilon")
    new_prior = LatentPrior(vae, unet, schedule, label_table=table, class_names=class_names,
                            default_guidance=config.default_guidance, data_size=data_size,
                            data_channels=data_channels)
    if pretrained:  # measured through the prior: a pretrained VAE runs at its native size
        latents = standardise_latents(new_prior, images, config.center_latents)
    return train_denoiser(new_prior, images, labels, config, checkpoint_dir=checkpoint_dir, on_step=on_step,
                          latents=latents)


# --------------------------------------------------------------------------- quality
@torch.no_grad()
def reconstruction_psnr(prior: LatentPrior, images: torch.Tensor, *, batch_size: int = 256) -> float:
    """PSNR (dB, peak-to-peak 2) of decode(encode(x)) against x, decodes clamped to [-1, 1]."""
    device = prior.label_table.weight.device
    recon = torch.cat([prior.decode(prior.encode(images[s:s + batch_size].to(device))).clamp(-1, 1).cpu()
                       for s in range(0, images.shape[0], batch_size)])
    return psnr_signed(images.cpu(), recon)


@torch.no_grad()
def class_fidelity(prior: LatentPrior, classify_fn: Callable[[torch.Tensor], torch.Tensor],
                   num_per_class: int = 50, guidance: float | None = None, num_steps: int = 50,
                   generator: torch.Generator | None = None, *, batch_size: int = 500) -> dict[str, Any]:
    """Accuracy of `classify_fn` on class-conditional samples from pure noise.

    `classify_fn` gets decoded images in [0, 1] (N×C×H×W) and returns logits (N×K) or labels (N,).
    Returns {"accuracy": float, "per_class": [float, ...]}.
    """
    if num_per_class < 1:
        raise ValueError(f"num_per_class={num_per_class} must be >= 1")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    guidance = prior.default_guidance if guidance is None else guidance
    device = prior.label_table.weight.device
    labels = torch.arange(prior.num_classes).repeat_interleave(num_per_class)
    noise = torch.randn((labels.numel(), *prior.latent_shape), generator=generator, device=generator.device)
    predictions = []
    with Progress("prior class fidelity", labels.numel(), unit="samples") as bar:
        for start in range(0, labels.numel(), batch_size):
            y = labels[start:start + batch_size].to(device)
            z = ddim_sample(prior, noise[start:start + batch_size].to(device), prior.condition(y),
                            num_steps=num_steps, guidance=guidance)
            out = classify_fn(from_signed(prior.decode(z)))
            predictions.append((out.argmax(dim=1) if out.dim() == 2 else out).cpu())
            bar.advance(len(y))
    correct = (torch.cat(predictions) == labels).float()
    per_class = correct.view(prior.num_classes, num_per_class).mean(dim=1)
    return {"accuracy": float(correct.mean()), "per_class": per_class.tolist()}
