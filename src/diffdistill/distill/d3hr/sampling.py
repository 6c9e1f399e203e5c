"""Group sampling: per class, the best of m candidate groups of IPC noises (paper) or of m^3 (factorised).

Paper sampler: candidate k is `mu + sigma * z_k`, z_k (ipc, D) standard normals of stream ("group", k);
the kept group minimises the D3HR loss (`scoring`). Candidates stream through a buffer of `chunk_size`
groups (the reference materialises [10000, ipc, D]). Factorised sampler (off by default, not in the
paper): group mean, group std and standardised residuals are independent for Gaussian groups and the
loss is a sum of one term in each, so each is selected from m candidates of its own and recombined:
the best of m^3 exact Gaussian groups at about twice the cost of m.

A kept group is stored as a recipe (JSON, a few hundred bytes: class seed, candidate indices, ...) from
which `regenerate_group` rebuilds its noise bit for bit; `select_class_groups` keeps finished classes as
recipes in a `WorkDir`, so a killed run continues where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from diffdistill.distill.d3hr.config import GroupSamplingConfig, checked
from diffdistill.distill.d3hr.moments import ClassGaussians
from diffdistill.distill.d3hr.scoring import _power_sums, _terms_from_sums, check_gaussian, group_terms
from diffdistill.distill.d3hr.streams import class_seed, draw_candidate, seed_in_stream, stream_key
from diffdistill.progress import Progress
from diffdistill.workdir import WorkDir

RECIPE_FORMAT = "diffdistill.d3hr.group/1"
CONFIG_PATH = "d3hr.group_sampling"


@dataclass(frozen=True)
class GroupSelection:
    """The group kept for one class.

    `noise` (ipc, D) float32; `score` the weighted loss; `terms` the unweighted
    {"mean", "std", "skew"} norms; `candidate_index` (i,) for the paper sampler or
    (i_mean, i_std, i_residual) for the factorised one ((i_mean,) at IPC 1); `seed` the class
    seed; `recipe` a JSON-able dict from which `regenerate_group` rebuilds `noise` bit for bit.
    """

    noise: Tensor
    score: float
    terms: dict[str, float]
    candidate_index: tuple[int, ...]
    class_index: int
    seed: int
    recipe: dict[str, Any] = field(repr=False)


def _best_candidate(seed_of_class: int, stream: str, shape: tuple[int, ...], count: int, chunk_size: int,
                    device: torch.device, score_chunk, reduce_row=None) -> int:
    """Index of the lowest-scoring candidate of `stream` among the first `count` (first one on ties).

    Candidates are drawn `chunk_size` at a time into one preallocated buffer, each from its
    own seeded stream; `reduce_row(j, row)` (optional) runs right after row j is drawn, while
    it is still in cache; `score_chunk(chunk) -> (k,)` then scores the chunk.
    """
    size = min(chunk_size, count)
    buf = torch.empty((size, *shape), dtype=torch.float32, device=device)
    gen, key = torch.Generator(device=device), stream_key(seed_of_class, stream)
    best_index, best_value = 0, math.inf
    for start in range(0, count, size):
        chunk = buf[: min(size, count - start)]
        for j, row in enumerate(chunk.unbind(0)):  # row j is the same stream as draw_candidate(..., start + j)
            row.normal_(generator=gen.manual_seed(seed_in_stream(key, start + j)))
            if reduce_row is not None:
                reduce_row(j, row)
        scores = score_chunk(chunk)
        j = int(torch.argmin(scores))
        value = float(scores[j])
        if value < best_value:
            best_index, best_value = start + j, value
    return best_index


def _best_group(seed_of_class: int, stream: str, n: int, sigma: Tensor, count: int, chunk_size: int,
                weights: tuple[float, float, float], device: torch.device) -> int:
    """`_best_candidate` for whole groups (n, D) under the weighted D3HR loss. On CPU the member power
    sums are taken per candidate right after its draw, while it is in cache; elsewhere per chunk
    (fewer kernel launches). The rest of the loss runs on (chunk, D)."""
    d, size = sigma.shape[0], min(chunk_size, count)
    sums = torch.empty(3, size, d, dtype=torch.float32, device=device)
    per_row = device.type == "cpu"
    scratch = torch.empty((n, d) if per_row else (size, n, d), dtype=torch.float32, device=device)

    def reduce_row(j: int, row: Tensor) -> None:
        _power_sums(row, scratch, out=(sums[0, j], sums[1, j], sums[2, j]))

    def score_chunk(chunk: Tensor) -> Tensor:
        k = chunk.shape[0]
        if not per_row:
            _power_sums(chunk, scratch[:k], out=(sums[0, :k], sums[1, :k], sums[2, :k]))
        t = _terms_from_sums(sums[0, :k], sums[1, :k], sums[2, :k], n, sigma)
        return weights[0] * t[0] + weights[1] * t[1] + weights[2] * t[2]

    return _best_candidate(seed_of_class, stream, (n, d), count, chunk_size, device, score_chunk,
                           reduce_row if per_row else None)


def _mean_part_term(u: Tensor, sigma: Tensor, n: int) -> Tensor:
    """||mean - mu|| of mean parts mu + sigma * u / sqrt(n), u (k, D) standard normal."""
    return torch.linalg.vector_norm(u * sigma, dim=1) / math.sqrt(n)


def _std_factor(w: Tensor) -> Tensor:
    """std / sigma from (k, n-1, D) standard normals: sqrt(chi^2_{n-1} / (n-1)) per dimension."""
    return torch.sqrt(w.square().sum(1) / w.shape[1])


def _std_part_term(w: Tensor, sigma: Tensor) -> Tensor:
    return torch.linalg.vector_norm((_std_factor(w) - 1.0) * sigma, dim=1)


def _standardised_residuals(z: Tensor) -> Tensor:
    """(z - zbar) / s per dimension over the members (dim -2), s with ddof=1: zero mean, unit sample std."""
    zc = z - z.mean(-2, keepdim=True)
    s = torch.sqrt(zc.square().sum(-2, keepdim=True) / (z.shape[-2] - 1))
    return zc / torch.where(s > 0, s, 1.0)


def _select(mu: Tensor, sigma: Tensor, cfg: GroupSamplingConfig, n: int, factorised: bool, seed_of_class: int,
            device: torch.device) -> tuple[tuple[int, ...], dict[str, int]]:
    """Candidate indices of the kept group of n members and the number of candidates drawn per stream."""
    d, w, m = mu.shape[0], cfg.weights, cfg.m
    if not factorised:
        index = _best_group(seed_of_class, "group", n, sigma, m, cfg.chunk_size, w, device)
        return (index,), {"group": m}
    # A part whose term is switched off (zero weight) or identically zero (skew at n <= 2) needs one draw only.
    counts = {"mean": m if w[0] > 0 else 1}
    if n >= 2:
        counts["std"] = m if w[1] > 0 else 1
        counts["residual"] = m if (w[2] > 0 and n >= 3) else 1
    index = [_best_candidate(seed_of_class, "mean", (d,), counts["mean"], cfg.chunk_size, device,
                             lambda u: _mean_part_term(u, sigma, n))]
    if n >= 2:
        index.append(_best_candidate(seed_of_class, "std", (n - 1, d), counts["std"], cfg.chunk_size, device,
                                     lambda chi: _std_part_term(chi, sigma)))
        # skewness is shift- and scale-free: a residual configuration is scored by the skew of its raw draw
        index.append(_best_group(seed_of_class, "residual", n, sigma, counts["residual"], cfg.chunk_size,
                                 (0.0, 0.0, 1.0), device))
    return tuple(index), counts


def _group_from_recipe(mu: Tensor, sigma: Tensor, recipe: dict[str, Any],
                       device: torch.device) -> tuple[Tensor, dict[str, float]]:
    """The kept group's noise (ipc, D) and its unweighted terms, rebuilt from the recipe alone."""
    n, d, cs, index = recipe["ipc"], mu.shape[0], recipe["class_seed"], recipe["candidate_index"]
    if recipe["sampler"] == "paper":
        z = draw_candidate(cs, "group", index[0], (n, d), device=device)
        noise = torch.addcmul(mu, sigma, z)
        terms = group_terms(z.unsqueeze(0), sigma)
        return noise, {"mean": float(terms[0]), "std": float(terms[1]), "skew": float(terms[2])}
    u = draw_candidate(cs, "mean", index[0], (d,), device=device)
    mean = mu + sigma * u / math.sqrt(n)
    terms = {"mean": float(_mean_part_term(u.unsqueeze(0), sigma, n)), "std": 0.0, "skew": 0.0}
    if n == 1:
        return mean.unsqueeze(0), terms
    w = draw_candidate(cs, "std", index[1], (n - 1, d), device=device).unsqueeze(0)
    std = sigma * _std_factor(w)[0]
    z = draw_candidate(cs, "residual", index[2], (n, d), device=device)
    noise = torch.addcmul(mean, std, _standardised_residuals(z))
    terms["std"] = float(_std_part_term(w, sigma))
    terms["skew"] = float(group_terms(z.unsqueeze(0), sigma)[2])
    return noise, terms


def _check_ipc(ipc: Any) -> None:
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise ValueError(f"ipc must be an int >= 1 (samples per class of the distilled set), got {ipc!r}")


def sample_group(mu: Tensor, sigma: Tensor, config: GroupSamplingConfig | Mapping[str, Any], *, ipc: int,
                 factorised: bool = False, class_index: int = 0, device: torch.device | str = "cpu") -> GroupSelection:
    """D3HR group sampling for one class with Gaussian N(mu, diag sigma^2), mu and sigma (D,).

    Paper sampler (default): candidate k is `mu + sigma * z_k`, z_k (ipc, D) standard normals
    from stream ("group", k); the kept group minimises
    L = l_mean ||mean - mu|| + l_std ||std - sigma|| + l_skew ||skew||, moments per dimension
    across the ipc members: mean; std with ddof=1; skewness g1 = m3 / m2^1.5 (biased moment
    estimator; 0 where all members are equal). IPC = 1: std and skewness are undefined, only
    the mean term applies (L = l_mean ||x - mu||), no NaN. With m = 1 this is plain random sampling.

    Factorised sampler (`factorised=True`): for Gaussian groups, mean ~ N(mu, sigma^2/n),
    std ~ sigma sqrt(chi^2_{n-1}/(n-1)) and the standardised residuals r are independent, and
    L is a sum of one term in each. m candidates of each are drawn, the best of each kept and
    recombined, x_j = mean + std * r_j: every recombination is an exact N(mu, sigma^2) group,
    so this is the best of m^3 valid groups.

    `config`: a GroupSamplingConfig or the mapping of its settings (the YAML section `d3hr.group_sampling`).
    """
    cfg = checked(GroupSamplingConfig, config, CONFIG_PATH)
    _check_ipc(ipc)
    check_gaussian(mu, sigma)
    if isinstance(class_index, bool) or not isinstance(class_index, int) or class_index < 0:
        raise ValueError(f"class_index must be an int >= 0, got {class_index!r}")
    device = torch.device(device)
    mu32, sigma32 = mu.to(device=device, dtype=torch.float32), sigma.to(device=device, dtype=torch.float32)
    seed_of_class = class_seed(cfg.seed, class_index)
    index, counts = _select(mu32, sigma32, cfg, ipc, bool(factorised), seed_of_class, device)
    recipe = {
        "format": RECIPE_FORMAT, "sampler": "factorised" if factorised else "paper",
        "class_index": class_index, "base_seed": cfg.seed, "class_seed": seed_of_class,
        "candidate_index": list(index), "num_candidates": counts, "ipc": ipc, "dim": int(mu.shape[0]),
        "weights": list(cfg.weights), "device_type": device.type, "dtype": "float32",
    }
    noise, terms = _group_from_recipe(mu32, sigma32, recipe, device)
    score = sum(wk * terms[key] for wk, key in zip(cfg.weights, ("mean", "std", "skew"), strict=True))
    recipe.update(score=score, terms=terms)
    return GroupSelection(noise, score, terms, index, class_index, seed_of_class, recipe)


def sample_class_groups(gaussians: ClassGaussians, config: GroupSamplingConfig | Mapping[str, Any], *, ipc: int,
                        factorised: bool = False, classes: Iterable[int] | None = None,
                        device: torch.device | str = "cpu") -> list[GroupSelection]:
    """`sample_group` for every class of `gaussians` (or the given `classes`), each with its own seed."""
    chosen = range(gaussians.num_classes) if classes is None else list(classes)
    return [sample_group(*gaussians.class_params(k), config, ipc=ipc, factorised=factorised, class_index=k,
                         device=device) for k in chosen]


def regenerate_group(gaussians: ClassGaussians | tuple[Tensor, Tensor], recipe: dict[str, Any], *,
                     device: torch.device | str | None = None) -> Tensor:
    """Rebuild a kept group's noise (ipc, D) from its recipe, bit-identical to `GroupSelection.noise`.

    `gaussians`: the ClassGaussians it was drawn from (the recipe names the class) or that
    class's (mu, sigma). `device` defaults to the recipe's device type; another device type
    is refused (its random streams differ).
    """
    needed = ("format", "sampler", "class_index", "class_seed", "candidate_index", "ipc", "dim", "device_type")
    if not isinstance(recipe, dict) or any(k not in recipe for k in needed):
        raise ValueError(f"recipe must be a dict with keys {list(needed)} (GroupSelection.recipe)")
    if recipe["format"] != RECIPE_FORMAT or recipe["sampler"] not in ("paper", "factorised"):
        raise ValueError(f"unknown recipe format {recipe['format']!r} / sampler {recipe['sampler']!r}; "
                         f"expected {RECIPE_FORMAT!r} and 'paper' or 'factorised'")
    device = torch.device(recipe["device_type"] if device is None else device)
    if device.type != recipe["device_type"]:
        raise ValueError(f"recipe was drawn on {recipe['device_type']!r}; regenerate it there "
                         f"(random streams differ between device types), not on {device.type!r}")
    mu, sigma = gaussians.class_params(recipe["class_index"]) if isinstance(gaussians, ClassGaussians) else gaussians
    check_gaussian(mu, sigma)
    if mu.shape[0] != recipe["dim"]:
        raise ValueError(f"recipe is for D={recipe['dim']} but the Gaussian has D={mu.shape[0]}")
    mu32, sigma32 = mu.to(device=device, dtype=torch.float32), sigma.to(device=device, dtype=torch.float32)
    return _group_from_recipe(mu32, sigma32, recipe, device)[0]


def stack_selections(selections: Sequence[GroupSelection],
                     sample_shape: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """All kept groups as one batch: noise (sum of ipc, *sample_shape) and int64 class labels."""
    if not selections:
        raise ValueError("selections is empty")
    noise = torch.cat([s.noise for s in selections])
    labels = torch.cat([torch.full((s.noise.shape[0],), s.class_index, dtype=torch.long, device=s.noise.device)
                        for s in selections])
    if sample_shape is not None:
        noise = noise.reshape(noise.shape[0], *sample_shape)
    return noise, labels


def select_class_groups(gaussians: ClassGaussians, config: GroupSamplingConfig | Mapping[str, Any], *, ipc: int,
                        factorised: bool = False, classes: tuple[int, int] | None = None,
                        resume: WorkDir | None = None, device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """The kept group of each class in [first, stop) (None: all) as JSON entries {"recipe", "score", "terms"}.

    With `resume`, every finished class is saved there as its entry (a few hundred bytes): a killed run
    started again with the same folder finds them and searches only the rest; the folder is cleared once
    every class is done. `kept_noise(gaussians, entries)` rebuilds the noises bit for bit.
    """
    _check_ipc(ipc)
    counts = gaussians.counts
    if ipc > int(counts.min()):
        small = int(counts.argmin())
        raise ValueError(f"ipc={ipc} is larger than class {small} ({int(counts[small])} train images); "
                         "lower `ipcs` or use more data")
    config = checked(GroupSamplingConfig, config, CONFIG_PATH)
    first, stop = (0, gaussians.num_classes) if classes is None else classes
    chosen = []
    sampler = "factorised" if factorised else "paper"
    with Progress(f"d3hr group sampling ({sampler}, ipc {ipc}, m {config.m})", stop - first, unit="classes") as bar:
        for k in range(first, stop):
            entry = resume.get_json(f"class{k}") if resume is not None else None
            if entry is None:
                selection = sample_group(*gaussians.class_params(k), config, ipc=ipc, factorised=factorised,
                                         class_index=k, device=device)
                entry = {"recipe": selection.recipe, "score": selection.score, "terms": selection.terms}
                if resume is not None:
                    resume.put_json(f"class{k}", entry)
            chosen.append(entry)
            bar.advance(score=float(entry["score"]))
    if resume is not None:
        resume.clear()
    return chosen


def kept_noise(gaussians: ClassGaussians, entries: Sequence[Mapping[str, Any]]) -> tuple[Tensor, Tensor]:
    """The kept groups of `select_class_groups`' entries, regenerated from their recipes, class-major:
    noise (sum of ipc, *sample_shape) float32 and int64 class labels."""
    if not entries:
        raise ValueError("entries is empty: select at least one class")
    ipc, shape = entries[0]["recipe"]["ipc"], gaussians.sample_shape
    noise = torch.stack([regenerate_group(gaussians, e["recipe"]).reshape(ipc, *shape) for e in entries])
    labels = torch.tensor([e["recipe"]["class_index"] for e in entries], dtype=torch.long)
    return noise.flatten(0, 1), labels.repeat_interleave(ipc)
