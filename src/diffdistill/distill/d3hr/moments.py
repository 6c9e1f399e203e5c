"""Moments: per-class mean, variance, skewness and kurtosis streamed in float64; the class Gaussians of D3HR.

D3HR's whole "dataset" is one diagonal Gaussian N(mu, diag sigma^2) per class of the DDIM-inverted noise
(`fit_class_gaussians` -> `ClassGaussians`). The same streamed sums up to order 4 (`fit_class_moments` ->
`ClassMoments`) give the normality check: the shape of the VAE latents before inversion against that of
the noise after it (`fit_noise_space` does both for the `gaussians` phase, per class range).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffdistill.data.bundle import TensorBundle
from diffdistill.distill.d3hr.config import GaussiansConfig

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# A class dimension counts as constant when its std is below this fraction of |mean|
# (float64 accumulation of identical values leaves ~1e-13 relative round-off, not 0).
ZERO_STD_RTOL = 1e-10
MOMENT_KEYS = ("counts", "mean", "var", "skewness", "excess_kurtosis", "constant")


class _CentralMomentSums:
    """Per-class count, mean and central moment sums M_2..M_order (float64), merged batch by batch.

    Each batch is reduced two-pass (its own mean, then centred powers), then merged into the
    running sums with the pairwise update of Chan et al. (order 2) / Pebay 2008 (orders 3, 4),
    which stays accurate when the mean is large compared with the spread.
    """

    def __init__(self, num_classes: int, order: int):
        self.num_classes, self.order = num_classes, order
        self.count: Tensor | None = None  # (K, 1) float64
        self.mean: Tensor | None = None  # (K, D)
        self.sums: list[Tensor] = []  # M_2 .. M_order, each (K, D)
        self.sample_shape: tuple[int, ...] | None = None

    def add(self, x: Tensor, labels: Tensor, batch_index: int) -> None:
        x, labels = self._check_batch(x, labels, batch_index)
        if x.shape[0] == 0:
            return
        k, d = self.num_classes, x.shape[1]
        if self.count is None:
            self.count = torch.zeros(k, 1, dtype=torch.float64, device=x.device)
            self.mean = torch.zeros(k, d, dtype=torch.float64, device=x.device)
            self.sums = [torch.zeros(k, d, dtype=torch.float64, device=x.device) for _ in range(self.order - 1)]
        x, labels = x.to(self.mean.device), labels.to(self.mean.device)
        n_b = torch.bincount(labels, minlength=k).to(torch.float64).unsqueeze(1)
        mean_b = torch.zeros(k, d, dtype=torch.float64, device=x.device).index_add_(0, labels, x) / n_b.clamp_min(1)
        centred = x - mean_b[labels]
        power, sums_b = centred.clone(), []
        for _ in range(2, self.order + 1):
            power.mul_(centred)
            sums_b.append(torch.zeros(k, d, dtype=torch.float64, device=x.device).index_add_(0, labels, power))
        self._merge(n_b, mean_b, sums_b)

    def _merge(self, n_b: Tensor, mean_b: Tensor, sums_b: list[Tensor]) -> None:
        n_a, mean_a, sums_a = self.count, self.mean, self.sums
        n = n_a + n_b
        n_safe = n.clamp_min(1)
        delta = mean_b - mean_a
        new = [sums_a[0] + sums_b[0] + delta**2 * (n_a * n_b / n_safe)]
        if self.order >= 3:
            new.append(sums_a[1] + sums_b[1] + delta**3 * (n_a * n_b * (n_a - n_b) / n_safe**2)
                       + 3 * delta * (n_a * sums_b[0] - n_b * sums_a[0]) / n_safe)
        if self.order >= 4:
            new.append(sums_a[2] + sums_b[2]
                       + delta**4 * (n_a * n_b * (n_a**2 - n_a * n_b + n_b**2) / n_safe**3)
                       + 6 * delta**2 * (n_a**2 * sums_b[0] + n_b**2 * sums_a[0]) / n_safe**2
                       + 4 * delta * (n_a * sums_b[1] - n_b * sums_a[1]) / n_safe)
        self.mean = mean_a + delta * (n_b / n_safe)
        self.count, self.sums = n, new

    def _check_batch(self, x: Tensor, labels: Tensor, batch_index: int) -> tuple[Tensor, Tensor]:
        where = f"batch {batch_index}"
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(f"{where}: x must be a tensor (N, D) or (N, C, h, w), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != x.shape[0]:
            raise ValueError(f"{where}: labels must be a 1-D tensor with one entry per row of x "
                             f"({x.shape[0]}), got {getattr(labels, 'shape', type(labels).__name__)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"{where}: labels must be integer class indices, got dtype {labels.dtype}")
        shape = tuple(x.shape[1:])
        if self.sample_shape is None:
            self.sample_shape = shape
        elif shape != self.sample_shape:
            raise ValueError(f"{where}: sample shape {shape} differs from the first batch's {self.sample_shape}")
        if x.shape[0] and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"{where}: labels must lie in [0, num_classes={self.num_classes}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]; raise num_classes or fix the labels")
        x = x.reshape(x.shape[0], math.prod(shape)).to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{where}: x contains NaN or inf; check the inversion that produced it")
        return x, labels.long()

    def finished(self) -> tuple[Tensor, Tensor, list[Tensor]]:
        if self.count is None:
            raise ValueError("batches held no samples; pass at least two samples per class")
        counts = self.count.squeeze(1).round().long()
        short = [(k, int(c)) for k, c in enumerate(counts.tolist()) if c < 2]
        if short:
            listed = ", ".join(f"class {k}: {c}" for k, c in short[:8])
            raise ValueError(f"every class needs at least 2 samples for an unbiased variance; got {listed}"
                             f"{' ...' if len(short) > 8 else ''} ({len(short)} classes short)")
        return counts, self.mean, self.sums


def _accumulate(batches: Iterable[tuple[Tensor, Tensor]], num_classes: int, order: int) -> _CentralMomentSums:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    acc = _CentralMomentSums(num_classes, order)
    for i, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"batch {i}: expected a pair (x, labels), got {type(batch).__name__}")
        acc.add(batch[0], batch[1], i)
    return acc


@dataclass(frozen=True)
class ClassGaussians:
    """One diagonal Gaussian per class: the whole D3HR "dataset" (a few KB per class).

    `mean`, `var`: (K, D) float64, `var` unbiased (ddof=1) and already floored at `min_std`**2
    when that was set; `counts`: (K,) samples per class; `sample_shape`: shape of one sample
    (D,) or (C, h, w); `floored_dims`: (K,) dimensions per class raised to `min_std`.
    """

    mean: Tensor
    var: Tensor
    counts: Tensor
    sample_shape: tuple[int, ...]
    min_std: float | None = None
    floored_dims: Tensor | None = None

    def __post_init__(self) -> None:
        if self.mean.dim() != 2 or self.var.shape != self.mean.shape:
            raise ValueError(f"ClassGaussians: mean and var must both be (K, D), got {tuple(self.mean.shape)} "
                             f"and {tuple(self.var.shape)}")
        if self.counts.shape != (self.mean.shape[0],):
            raise ValueError(f"ClassGaussians: counts must be ({self.mean.shape[0]},), got {tuple(self.counts.shape)}")
        if math.prod(self.sample_shape) != self.mean.shape[1]:
            raise ValueError(f"ClassGaussians: sample_shape {self.sample_shape} does not hold {self.mean.shape[1]} dims")

    @property
    def std(self) -> Tensor:
        return self.var.sqrt()

    @property
    def num_classes(self) -> int:
        return int(self.mean.shape[0])

    @property
    def dim(self) -> int:
        return int(self.mean.shape[1])

    def class_params(self, class_index: int) -> tuple[Tensor, Tensor]:
        """(mu, sigma) of one class, float64, shape (D,)."""
        if not 0 <= class_index < self.num_classes:
            raise ValueError(f"class_index must lie in [0, {self.num_classes}), got {class_index}")
        return self.mean[class_index], self.std[class_index]

    def to_bundle(self) -> TensorBundle:
        tensors = {"mean": self.mean.cpu(), "var": self.var.cpu(), "counts": self.counts.cpu()}
        if self.floored_dims is not None:
            tensors["floored_dims"] = self.floored_dims.cpu()
        return TensorBundle(tensors, {"sample_shape": list(self.sample_shape), "min_std": self.min_std,
                                      "num_classes": self.num_classes})

    @classmethod
    def from_bundle(cls, bundle: TensorBundle) -> ClassGaussians:
        floored = bundle.tensors.get("floored_dims")
        return cls(bundle["mean"].to(torch.float64), bundle["var"].to(torch.float64), bundle["counts"].long(),
                   tuple(int(s) for s in bundle.meta["sample_shape"]), bundle.meta.get("min_std"), floored)


def fit_class_gaussians(batches: Iterable[tuple[Tensor, Tensor]], num_classes: int, *,
                        min_std: float | None = None) -> ClassGaussians:
    """Per-class per-dimension mean and unbiased variance, streamed over `batches` in float64.

    `batches` yields `(x, labels)` with x (N, D) or (N, C, h, w) and integer labels (N,); batches
    may be any size (one-shot and streamed results agree to float64 round-off). A class with a
    constant dimension (std below ZERO_STD_RTOL * |mean|) raises ValueError unless `min_std`
    is given, in which case every std is floored at `min_std`.
    """
    if min_std is not None and not (math.isfinite(min_std) and min_std > 0):
        raise ValueError(f"min_std must be a positive finite float or None, got {min_std!r}")
    acc = _accumulate(batches, num_classes, order=2)
    counts, mean, (m2,) = acc.finished()
    var = m2 / (counts.to(m2).unsqueeze(1) - 1)
    constant = var.sqrt() <= ZERO_STD_RTOL * mean.abs()
    if min_std is None and bool(constant.any()):
        bad = [(k, int(c)) for k, c in enumerate(constant.sum(1).tolist()) if c]
        listed = "; ".join(f"class {k} in {c} of {var.shape[1]} dims" for k, c in bad[:8])
        raise ValueError(f"zero variance: {listed}{' ...' if len(bad) > 8 else ''}. A Gaussian with zero std cannot "
                         f"be sampled; pass min_std (e.g. 1e-3) to floor the std instead of failing")
    floored = None
    if min_std is not None:
        floored = (var < min_std**2).sum(1).cpu()
        var = var.clamp_min(min_std**2)
    return ClassGaussians(mean.cpu(), var.cpu(), counts.cpu(), acc.sample_shape, min_std, floored)


@dataclass(frozen=True)
class ClassMoments:
    """Per-class, per-dimension moments (K, D), float64: the normality check before/after inversion.

    Estimators (biased moment estimators, scipy.stats.skew/kurtosis with bias=True):
    skewness g1 = m3 / m2^1.5, excess kurtosis g2 = m4 / m2^2 - 3, m_k = mean((x - mean)^k).
    Dimensions with zero variance (`constant`) have no defined shape; they hold 0 and are
    left out of `report()`.
    """

    counts: Tensor
    mean: Tensor
    var: Tensor
    skewness: Tensor
    excess_kurtosis: Tensor
    constant: Tensor

    def report(self, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> dict[str, Any]:
        """JSON-able summary: per class and pooled, quantiles / mean / mean |.| of both shape statistics.

        `normal_sd` gives the sampling std of each statistic for Gaussian data at that class
        size (sqrt(6/n), sqrt(24/n)), the yardstick for "close to normal".
        """
        if any(not 0.0 <= q <= 1.0 for q in quantiles):
            raise ValueError(f"quantiles must lie in [0, 1], got {list(quantiles)}")
        keep = ~self.constant
        classes = []
        for k in range(self.counts.shape[0]):
            n = int(self.counts[k])
            classes.append({
                "class": k, "count": n, "dims": int(self.mean.shape[1]), "constant_dims": int(self.constant[k].sum()),
                "skewness": _summary(self.skewness[k][keep[k]], quantiles),
                "excess_kurtosis": _summary(self.excess_kurtosis[k][keep[k]], quantiles),
                "normal_sd": {"skewness": math.sqrt(6 / n), "excess_kurtosis": math.sqrt(24 / n)},
            })
        return {
            "estimator": "per class and dimension: g1 = m3/m2^1.5, g2 = m4/m2^2 - 3 (biased moment estimators)",
            "quantiles": list(quantiles),
            "classes": classes,
            "all_classes": {"skewness": _summary(self.skewness[keep], quantiles),
                            "excess_kurtosis": _summary(self.excess_kurtosis[keep], quantiles)},
        }


def _summary(values: Tensor, quantiles: Sequence[float]) -> dict[str, Any]:
    if values.numel() == 0:
        return {"mean": None, "mean_abs": None, **{f"q{q:g}": None for q in quantiles}}
    ordered = values.flatten().sort().values  # own quantiles: torch.quantile caps the input at 16M values
    pos = torch.tensor(list(quantiles), dtype=torch.float64) * (ordered.numel() - 1)
    lo, hi = pos.floor().long(), pos.ceil().long()
    qs = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    return {"mean": float(values.mean()), "mean_abs": float(values.abs().mean()),
            **{f"q{q:g}": float(v) for q, v in zip(quantiles, qs.tolist(), strict=True)}}


def fit_class_moments(batches: Iterable[tuple[Tensor, Tensor]], num_classes: int) -> ClassMoments:
    """Per-class per-dimension mean, variance, skewness and excess kurtosis in one streamed pass.

    Single pass (works on a generator): central moment sums up to order 4 are merged batch by
    batch in float64 with Pebay's pairwise formulas, so no second pass over the data is needed.
    """
    counts, mean, (m2, m3, m4) = _accumulate(batches, num_classes, order=4).finished()
    n = counts.to(m2).unsqueeze(1)
    constant = m2 <= (ZERO_STD_RTOL * mean) ** 2 * (n - 1)
    safe_m2 = torch.where(constant, torch.ones_like(m2), m2 / n)
    skew = torch.where(constant, 0.0, (m3 / n) / safe_m2**1.5)
    kurt = torch.where(constant, 0.0, (m4 / n) / safe_m2**2 - 3.0)
    return ClassMoments(counts.cpu(), mean.cpu(), (m2 / (n - 1)).cpu(), skew.cpu(), kurt.cpu(), constant.cpu())


def moment_report(batches: Iterable[tuple[Tensor, Tensor]], num_classes: int, *,
                  quantiles: Sequence[float] = DEFAULT_QUANTILES) -> dict[str, Any]:
    """`fit_class_moments(batches, num_classes).report(quantiles)`: run it on the VAE latents
    ("before inversion") and on the inverted noise ("after") and compare the two summaries."""
    return fit_class_moments(batches, num_classes).report(quantiles)



# --------------------------------------------------------------------------- the `gaussians` phase


def class_batches(values: Tensor, labels: Tensor, size: int,
                  classes: tuple[int, int]) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of `size` rows of classes [first, stop), never straddling two classes, labels relative to first.

    Per-class batches make the float64 merge order of a class independent of the other classes, so a class
    range accumulates exactly what the full run does for its classes.
    """
    first, stop = classes
    for k in range(first, stop):
        rows = torch.nonzero(labels == k).flatten()
        for start in range(0, len(rows), size):
            index = rows[start:start + size]
            yield values[index], labels[index] - first


@dataclass(frozen=True)
class NoiseSpaceFit:
    """One class range of the `gaussians` phase: the Gaussians of the inverted noise, and the shape moments of
    the latents before inversion and of the noise after it (classes numbered from the range's first)."""

    gaussians: ClassGaussians
    before: ClassMoments
    after: ClassMoments

    def tensors(self) -> dict[str, Tensor]:
        """The Gaussians' bundle tensors, then `before.<moment>` and `after.<moment>`: what `cat` takes back."""
        tensors = dict(self.gaussians.to_bundle().tensors)
        for stage in ("before", "after"):
            tensors.update({f"{stage}.{name}": getattr(getattr(self, stage), name) for name in MOMENT_KEYS})
        return tensors

    @classmethod
    def cat(cls, parts: Sequence[Mapping[str, Tensor]], sample_shape: Sequence[int],
            min_std: float | None) -> NoiseSpaceFit:
        """The fit of consecutive class ranges from their `tensors()`, in class order: the whole run's values."""
        def cat(name: str) -> Tensor:
            return torch.cat([part[name] for part in parts])

        floored = cat("floored_dims") if "floored_dims" in parts[0] else None
        gaussians = ClassGaussians(cat("mean"), cat("var"), cat("counts"), tuple(sample_shape), min_std, floored)
        before, after = (ClassMoments(*(cat(f"{stage}.{name}") for name in MOMENT_KEYS))
                         for stage in ("before", "after"))
        return cls(gaussians, before, after)

    def report(self) -> dict[str, Any]:
        """The normality report: the shape summaries before and after inversion, and the Gaussians' bytes."""
        tensors = self.gaussians.to_bundle().tensors
        return {"before_inversion": self.before.report(), "after_inversion": self.after.report(),
                "bytes": int(sum(t.numel() * t.element_size() for t in tensors.values()))}


def fit_noise_space(noise: Tensor, latents: Tensor, labels: Tensor, config: GaussiansConfig, *,
                    classes: tuple[int, int]) -> NoiseSpaceFit:
    """Gaussians of `noise` and moments of `latents` and `noise` (rows labelled `labels`, the same for both)
    for the classes [first, stop), streamed in per-class batches of `config.batch_size` rows."""
    first, stop = classes
    gaussians = fit_class_gaussians(class_batches(noise, labels, config.batch_size, classes), stop - first,
                                    min_std=config.min_std)
    before, after = (fit_class_moments(class_batches(x, labels, config.batch_size, classes), stop - first)
                     for x in (latents, noise))
    return NoiseSpaceFit(gaussians, before, after)
