"""A pre-norm Vision Transformer with its LayerNorms (`vit`), and GLaD's evaluation ViT without them (`vit_glad`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffdistill.nets.base import Classifier, SeededDropout

TOKEN_INITS = ("trunc_normal", "normal")


@dataclass(frozen=True)
class ViTConfig:
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    # GLaD's ViT (`vit_glad`, lucidrains' vit-pytorch as GLaD vendors it) differs in these: its LayerNorms are
    # commented out, dropout 0.1 on the embedded tokens, the attention output and the MLP, q/k/v without bias,
    # and cls / position tokens drawn from N(0, 1).
    layer_norms: bool = True
    dropout: float = 0.0
    qkv_bias: bool = True
    token_init: str = "trunc_normal"  # trunc_normal: timm's N(0, 0.02²) cut at ±0.04; normal: N(0, 1)


GLAD_VIT = {"layer_norms": False, "dropout": 0.1, "qkv_bias": False, "token_init": "normal"}


def vit_config_for(image_size: int) -> ViTConfig:
    """Patch size so the grid has at least 4×4 patches; width/depth scaled down below 64 px.

    ≥ 64 px is GLaD's ViT (dim 512, depth 10, 8 heads, MLP 512); 16–32 px is GLaD's ViTCIFAR
    depth (6) at dim 256; below 16 px a 4-layer dim-128 net. The target patch is 2 (<16 px),
    4 (≤32 px), 8 (≤64 px) or 16; the largest divisor of `image_size` in [target/2, target]
    is used so no pixel is dropped, and if there is none (e.g. prime sizes) the target
    patch is used and the last `image_size % patch` rows/columns are ignored.
    """
    if image_size < 16:
        patch, dim, depth, heads, mlp = 2, 128, 4, 4, 256
    elif image_size <= 32:
        patch, dim, depth, heads, mlp = 4, 256, 6, 8, 512
    elif image_size <= 64:
        patch, dim, depth, heads, mlp = 8, 512, 10, 8, 512
    else:
        patch, dim, depth, heads, mlp = 16, 512, 10, 8, 512
    divisors = [p for p in range(patch, (patch + 1) // 2 - 1, -1) if p >= 1 and image_size % p == 0]
    patch = divisors[0] if divisors else patch
    return ViTConfig(patch_size=patch, dim=dim, depth=depth, heads=heads, mlp_dim=mlp)


def _norm(config: ViTConfig) -> nn.Module:
    return nn.LayerNorm(config.dim) if config.layer_norms else nn.Identity()


def _dropout(config: ViTConfig) -> nn.Module:
    # no module at p = 0: `vit` keeps its module list, state-dict keys and init draws
    return SeededDropout(config.dropout) if config.dropout else nn.Identity()


class Attention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        dim, heads = config.dim, config.heads
        if dim % heads:
            raise ValueError(f"ViT dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=config.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.drop = _dropout(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, dim)))


class Block(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        dim, mlp_dim = config.dim, config.mlp_dim
        self.norm1 = _norm(config)
        self.attn = Attention(config)
        self.norm2 = _norm(config)
        if config.dropout:
            self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), _dropout(config), nn.Linear(mlp_dim, dim),
                                     _dropout(config))
        else:
            self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(Classifier):
    """Patch embedding (conv k = stride = patch) + cls token + learned positions → pre-norm blocks → LayerNorm.

    `vit`: no dropout. `vit_glad` (`GLAD_VIT`): no LayerNorm anywhere, dropout 0.1 (`SeededDropout`, drawn from
    the net's own generator: torch's dropout draws from the global RNG, which the house rules forbid), exactly
    GLaD's ViT at 128 px (patch 16, dim 512, depth 10, 8 heads, MLP 512; 16.18 M parameters for 10 classes).
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, config: ViTConfig) -> None:
        super().__init__()
        grid = image_size // config.patch_size
        if config.token_init not in TOKEN_INITS:
            raise ValueError(f"ViT token_init must be one of {TOKEN_INITS}, got {config.token_init!r}")
        if grid < 2:
            raise ValueError(
                f"ViT patch_size {config.patch_size} leaves fewer than 2×2 patches at image_size {image_size}; "
                "use a smaller patch_size"
            )
        self.patch_embed = nn.Conv2d(in_channels, config.dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.empty(1, grid * grid + 1, config.dim))
        self.token_init = config.token_init
        self.embed_drop = _dropout(config)
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.depth)])
        self.norm = _norm(config)
        self.feature_dim = config.dim
        self.head = nn.Linear(config.dim, num_classes)

    def init_extra_parameters(self, generator: torch.Generator) -> list[nn.Parameter]:
        for param in (self.cls_token, self.pos_embed):
            if self.token_init == "normal":  # GLaD's torch.randn
                nn.init.normal_(param, generator=generator)
            else:  # timm's choice: truncated normal, std 0.02
                nn.init.trunc_normal_(param, std=0.02, a=-0.04, b=0.04, generator=generator)
        return [self.cls_token, self.pos_embed]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.embed_drop(torch.cat([cls, tokens], dim=1) + self.pos_embed)
        return self.norm(self.blocks(tokens))[:, 0]
