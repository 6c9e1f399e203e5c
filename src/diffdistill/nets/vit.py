"""A pre-norm Vision Transformer with its LayerNorms (GLaD's copy had them all commented out)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffdistill.nets.base import Classifier


@dataclass(frozen=True)
class ViTConfig:
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int


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


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"ViT dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(Classifier):
    """Patch embedding (conv k = stride = patch) + cls token + learned positions → pre-norm blocks → LayerNorm.

    No dropout: torch's dropout draws from the global RNG, which the house rules forbid.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, config: ViTConfig) -> None:
        super().__init__()
        grid = image_size // config.patch_size
        if grid < 2:
            raise ValueError(
                f"ViT patch_size {config.patch_size} leaves fewer than 2×2 patches at image_size {image_size}; "
                "use a smaller patch_size"
            )
        self.patch_embed = nn.Conv2d(in_channels, config.dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.empty(1, grid * grid + 1, config.dim))
        self.blocks = nn.Sequential(*[Block(config.dim, config.heads, config.mlp_dim) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.dim)
        self.feature_dim = config.dim
        self.head = nn.Linear(config.dim, num_classes)

    def init_extra_parameters(self, generator: torch.Generator) -> list[nn.Parameter]:
        # timm's choice: truncated normal, std 0.02, for both learned tokens
        for param in (self.cls_token, self.pos_embed):
            nn.init.trunc_normal_(param, std=0.02, a=-0.04, b=0.04, generator=generator)
        return [self.cls_token, self.pos_embed]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.norm(self.blocks(tokens))[:, 0]
