"""Candidate streams: every D3HR candidate is drawn from its own generator, seeded from (class, stream, index).

The seed of candidate i of stream s of class k is a SplitMix64 hash (`diffdistill.rng.mix64` /
`splitmix64`) of (base seed, k), then of s, keyed with i: any candidate can be regenerated alone, and the
chunk size never changes a result. Streams: "group" (whole groups, the paper sampler), "mean", "std" and
"residual" (the factorised sampler's parts). CPU generators (mt19937) use only the low 32 bits of a seed,
so two streams coincide by chance with probability about 2^-32 per pair; nothing is shared systematically.
Streams differ between device types (CPU mt19937 vs CUDA Philox); a recipe records the device type it was
drawn on. On CUDA the per-candidate streams cost one kernel launch per candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from diffdistill.rng import MASK64, mix64, splitmix64

STREAMS = {"group": 1, "mean": 2, "std": 3, "residual": 4}


def class_seed(base_seed: int, class_index: int) -> int:
    """Seed of one class's candidate streams, derived from the run's base seed and the class index."""
    return mix64(0xC1A55, base_seed, class_index)


def stream_key(seed_of_class: int, stream: str) -> int:
    """Key of one stream of a class; `seed_in_stream(key, i)` is candidate i's seed."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {sorted(STREAMS)}, got {stream!r}")
    return splitmix64(mix64(0xCA4D1, seed_of_class, STREAMS[stream]))


def seed_in_stream(key: int, index: int) -> int:
    return splitmix64(key ^ index) >> 1


def candidate_seed(seed_of_class: int, stream: str, index: int) -> int:
    """Seed of candidate `index` in `stream` ("group" for whole groups; "mean", "std", "residual"
    for the factorised sampler's parts): SplitMix64 of (class seed, stream) keyed with the index."""
    return seed_in_stream(stream_key(seed_of_class, stream), int(index) & MASK64)


def draw_candidate(seed_of_class: int, stream: str, index: int, shape: Sequence[int], *,
                   device: torch.device | str = "cpu", out: Tensor | None = None) -> Tensor:
    """Standard normals of one candidate: `torch.Generator(device).manual_seed(candidate_seed(...))`,
    one `normal_` over `shape` (float32). Candidate i is the same wherever it is drawn."""
    seed = candidate_seed(seed_of_class, stream, index)
    if out is None:
        out = torch.empty(tuple(shape), dtype=torch.float32, device=device)
    return out.normal_(generator=torch.Generator(device=out.device).manual_seed(seed))
