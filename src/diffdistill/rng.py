"""Every seed the project derives, in one module: explicit `torch.Generator`s from parameters, never the global
RNG, never the clock. Each scheme below is the one an artifact was made with, so moving a caller here never
changes its bytes.

- `derive_seed(seed, *path)`: SplitMix64's finaliser over (seed, stream), folded along `path`; the per-iteration,
  per-expert, per-class and init streams of LD3M, MTT experts, DC/DM batches and DDIM inversion.
- `generator(seed, *path, device=None)`: a `torch.Generator` seeded with `derive_seed(seed, *path)` (just `seed`
  when `path` is empty).
- `named_seed(seed, purpose)`: sha256 of "seed:purpose"; data sources' independent streams per purpose, so capping
  the train split never moves the test draw.
- `mix64(*values)` / `splitmix64(x)`: D3HR's candidate streams (a candidate is the same wherever it is drawn).
- `split_seeds(seed, count)`: `count` seeds drawn from one generator of `seed`; the evaluation's net-init and
  data-order streams.
"""

from __future__ import annotations

import hashlib

import torch

MASK64 = 0xFFFFFFFFFFFFFFFF


def _finalise(seed: int, stream: int) -> int:
    x = (seed * 0x9E3779B97F4A7C15 + (stream + 1) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF


def derive_seed(seed: int, *path: int) -> int:
    """A well-mixed 63-bit seed for the sub-stream `path` of `seed` (each element folds one level deeper):
    generators that depend on nothing but (seed, path), so resuming or sharding reproduces them."""
    for stream in path:
        seed = _finalise(int(seed), int(stream))
    return int(seed)


def generator(seed: int, *path: int, device: torch.device | str | None = None) -> torch.Generator:
    """`torch.Generator(device).manual_seed(derive_seed(seed, *path))`."""
    made = torch.Generator() if device is None else torch.Generator(device=device)
    return made.manual_seed(derive_seed(seed, *path))


def named_seed(seed: int, purpose: str) -> int:
    """63-bit seed of the stream `purpose` of `seed` (sha256 of "seed:purpose")."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def splitmix64(x: int) -> int:
    """One SplitMix64 step (64-bit)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def mix64(*values: int) -> int:
    """A 63-bit hash of integers (SplitMix64 chained from a fixed start), non-negative for torch and JSON."""
    h = 0x6A09E667F3BCC908
    for v in values:
        h = splitmix64(h ^ (int(v) & MASK64))
    return h >> 1


def split_seeds(seed: int, count: int) -> list[int]:
    """`count` independent seeds drawn from one CPU generator of `seed`."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    root = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**62, (count,), generator=root).tolist()
