"""Shared pieces of the evaluation nets: the `Classifier` base, norm layers, seeded dropout, seeded init."""

from __future__ import annotations

import abc
import math

import torch
from torch import nn

NORMS = ("instance", "batch", "none")


class Classifier(nn.Module, abc.ABC):
    """A net split into `features(x) -> (B, F)` and a linear `head`; `forward = head ∘ features`."""

    feature_dim: int
    head: nn.Linear

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate representation, flattened to (B, feature_dim)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_norm(kind: str, channels: int) -> nn.Module:
    """`instance` = GroupNorm(C, C, affine) as in DC/DSA/MTT/GLaD; `batch` = BatchNorm2d; `none`."""
    if kind == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class SeededDropout(nn.Module):
    """Dropout whose masks come from the module's own generator, never from the global RNG (`nn.Dropout`'s).

    The seed is drawn from the init generator by `init_parameters` (`init_extra_parameters`), so two nets built
    from equal generators drop the same units at every step; each device gets its own generator with that seed.
    A copy (`copy.deepcopy`, e.g. the weight EMA) starts its mask stream afresh from the seed. Eval mode and
    `p = 0` pass the input through.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.seed = 0
        self._generators: dict[torch.device, torch.Generator] = {}

    def init_extra_parameters(self, generator: torch.Generator) -> list[nn.Parameter]:
        self.seed = int(torch.randint(0, 2**62, (), generator=generator))
        self._generators.clear()
        return []

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_generators": {}}  # device generators do not copy (CUDA ones cannot be pickled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        generator = self._generators.get(x.device)
        if generator is None:
            generator = self._generators[x.device] = torch.Generator(device=x.device).manual_seed(self.seed)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@torch.no_grad()
def init_parameters(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every parameter and buffer with PyTorch's default scheme, drawing from `generator`.

    Conv/Linear: kaiming_uniform(a=sqrt(5)) weights and U(±1/sqrt(fan_in)) biases (what
    `reset_parameters` does, but seeded); norms: weight 1, bias 0, fresh running stats;
    modules with extra tensors (ViT tokens) provide `init_extra_parameters(generator)`.
    Raises if any parameter is left untouched, so a new layer type cannot slip through
    with uninitialised (meta / `to_empty`) memory.
    """
    touched: set[int] = set()
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            touched.add(id(module.weight))
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
                touched.add(id(module.bias))
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                touched.update((id(module.weight), id(module.bias)))
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
        init_extra = getattr(module, "init_extra_parameters", None)
        if init_extra is not None:
            touched.update(id(p) for p in init_extra(generator))
    missed = [name for name, p in net.named_parameters() if id(p) not in touched]
    if missed:
        raise RuntimeError(f"init_parameters does not know how to initialise {missed}")
    return net
