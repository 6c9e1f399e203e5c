"""Tiny diffusers components for prior tests, seeded through init_weights_ (no global RNG)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DiTTransformer2DModel, UNet2DModel, VQModel

from diffdistill.prior import LatentPrior
from diffdistill.prior.train import init_weights_

SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
            "prediction_type": "epsilon"}


def seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    init_weights_(module, torch.Generator().manual_seed(seed))
    return module.eval()


def tiny_vae(kind: str, latent_channels: int = 2, channels: int = 1) -> torch.nn.Module:
    """8 px, 1 channel (or `channels`) -> 4×4 latents."""
    if kind == "kl":
        vae = AutoencoderKL(in_channels=channels, out_channels=channels, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8),
                            layers_per_block=1, latent_channels=latent_channels, norm_num_groups=4, sample_size=8,
                            mid_block_add_attention=False, scaling_factor=1.7, shift_factor=0.2)
    elif kind == "tiny":
        vae = AutoencoderTiny(in_channels=channels, out_channels=channels, encoder_block_out_channels=(8, 8),
                              decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                              num_decoder_blocks=(1, 1), latent_channels=latent_channels, scaling_factor=0.9)
    elif kind == "vq":
        vae = VQModel(in_channels=channels, out_channels=channels, down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                      latent_channels=latent_channels, num_vq_embeddings=16, norm_num_groups=4, sample_size=8,
                      scaling_factor=1.3)
    else:
        raise KeyError(kind)
    return seeded(vae, 1)


def tiny_unet(conditioning: str, in_channels: int = 2, num_classes: int = 3) -> UNet2DModel:
    kwargs = {"class_embed_type": "identity"} if conditioning == "identity" else {"num_class_embeds": num_classes + 1}
    unet = UNet2DModel(sample_size=4, in_channels=in_channels, out_channels=in_channels, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=4,
                       **kwargs)
    return seeded(unet, 2)


def tiny_dit(shared: bool, num_classes: int = 3, learned_sigma: bool = True) -> DiTTransformer2DModel:
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=2,
                                out_channels=4 if learned_sigma else 2, num_layers=2, sample_size=4, patch_size=2,
                                num_embeds_ada_norm=num_classes)
    dit = seeded(dit, 3)
    if shared:  # converted DiT checkpoints carry one table copied into every block
        first = dit.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight
        with torch.no_grad():
            for block in dit.transformer_blocks[1:]:
                block.norm1.emb.class_embedder.embedding_table.weight.copy_(first)
    return dit


def build_prior(vae_kind: str, denoiser_kind: str, **kwargs) -> LatentPrior:
    vae = tiny_vae(vae_kind)
    if denoiser_kind == "unet_identity":
        denoiser = tiny_unet("identity")
        kwargs.setdefault("label_table", torch.randn(4, 32, generator=torch.Generator().manual_seed(4)))
    elif denoiser_kind == "unet_embedding":
        denoiser = tiny_unet("embedding")
    else:
        denoiser = tiny_dit(shared=denoiser_kind == "dit_shared")
    return LatentPrior(vae, denoiser, dict(SCHEDULE), **kwargs)


def tiny_images(n: int = 5, seed: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1
