"""Scoring: the D3HR loss of candidate groups, the distance of a group's moments to its class Gaussian.

    L = l_mean * ||mean - mu||_2 + l_std * ||std - sigma||_2 + l_skew * ||skew||_2

with the moments taken PER DIMENSION ACROSS THE GROUP MEMBERS (std with ddof=1, skewness
g1 = m3 / m2^1.5, a biased moment estimator); paper weights (1, 1, 0.5). IPC = 1 scores the mean term
only (std and skewness are undefined there). The samplers score from member power sums in float32
(`_power_sums`, `_terms_from_sums`, in place on preallocated buffers); `score_groups` is the float64
reference the tests compare them with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from diffdistill.distill.d3hr.config import PAPER_WEIGHTS


class GroupScores(NamedTuple):
    """Per candidate (M,): weighted total and the three unweighted terms ||.||_2."""

    total: Tensor
    mean: Tensor
    std: Tensor
    skew: Tensor


def _power_sums(z: Tensor, scratch: Tensor | None = None,
                out: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Sums over the group members (dim -2) of z, z^2 and z^3; `scratch` holds z^2 (z's shape)."""
    s1, s2, s3 = out if out is not None else (None, None, None)
    powers = torch.mul(z, z, out=scratch) if scratch is not None else z.square()
    s1 = torch.sum(z, -2, out=s1)
    s2 = torch.sum(powers, -2, out=s2)
    s3 = torch.sum(powers.mul_(z), -2, out=s3)
    return s1, s2, s3


def _terms_from_sums(s1: Tensor, s2: Tensor, s3: Tensor, n: int, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unweighted (L_mean, L_std, L_skew), each (M,), from member power sums (M, D) of groups of n
    given in standard units z = (x - mu) / sigma. Works in place on the sums.

    Per dimension across the n members: mean; std with ddof=1; skewness g1 = m3 / m2^1.5
    (biased moment estimator, m_k = mean over members of (z - zbar)^k), set to 0 where the
    members are equal (m2 within round-off of 0) and for n = 2 (always symmetric). n = 1: std
    and skew are undefined and their terms are 0. Mean and std terms are scaled back by sigma;
    skewness is scale- and shift-invariant. Central moments from raw sums lose about
    eps * zbar^2 / m2 in relative accuracy: harmless for the sampler's standard normals
    (float32) and for `score_groups`, which standardises in float64.
    """
    sigma_sq = sigma.square()
    zbar = s1.div_(n)
    zbar_sq = zbar.square()
    mean_term = torch.mv(zbar_sq, sigma_sq).sqrt_()
    if n == 1:
        zero = torch.zeros_like(mean_term)
        return mean_term, zero, zero.clone()
    m2 = s2.div_(n).sub_(zbar_sq).clamp_min_(0.0)
    spread = torch.mul(m2, n / (n - 1)).sqrt_().sub_(1.0)
    std_term = torch.mv(spread.square_(), sigma_sq).sqrt_()
    if n == 2:  # two points are always symmetric: g1 = 0 exactly, not round-off
        return mean_term, std_term, torch.zeros_like(std_term)
    m3 = s3.div_(n).sub_(zbar.mul_(torch.add(zbar_sq, m2, alpha=3.0)))
    m2_cubed = m2.pow(3)
    degenerate = (m2 <= 64 * torch.finfo(s1.dtype).eps * zbar_sq) | (m2_cubed <= 0)
    skew_sq = m3.square_().div_(m2_cubed.masked_fill_(degenerate, 1.0)).masked_fill_(degenerate, 0.0)
    return mean_term, std_term, skew_sq.sum(1).sqrt_()


def group_terms(z: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unweighted (L_mean, L_std, L_skew) of groups z (M, n, D) in standard units (see _terms_from_sums)."""
    return _terms_from_sums(*_power_sums(z), z.shape[1], sigma)


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in weights):
        raise ValueError(f"weights must be three non-negative numbers (l_mean, l_std, l_skew), got {weights!r}")
    w = tuple(float(v) for v in weights)
    if len(w) != 3 or not all(math.isfinite(v) and v >= 0 for v in w):
        raise ValueError(f"weights must be three finite non-negative floats (l_mean, l_std, l_skew), got {weights!r}")
    return w  # type: ignore[return-value]


def check_gaussian(mu: Tensor, sigma: Tensor) -> None:
    """One class's (mu, sigma): 1-D, the same length, finite, sigma > 0; else a ValueError saying what to do."""
    if not isinstance(mu, Tensor) or not isinstance(sigma, Tensor) or mu.dim() != 1 or mu.shape != sigma.shape:
        raise ValueError(f"mu and sigma must be 1-D tensors of the same length, got "
                         f"{getattr(mu, 'shape', type(mu).__name__)} and {getattr(sigma, 'shape', type(sigma).__name__)}")
    if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(sigma).all())):
        raise ValueError("mu / sigma contain NaN or inf; refit the Gaussians (fit_class_gaussians) from finite data")
    if bool((sigma <= 0).any()):
        raise ValueError(f"sigma must be > 0 in every dimension ({int((sigma <= 0).sum())} dims are not); "
                         f"fit with min_std to floor it")


def score_groups(candidates: Tensor, mu: Tensor, sigma: Tensor,
                 weights: Sequence[float] = PAPER_WEIGHTS) -> GroupScores:
    """Score candidate groups (M, n, D) against N(mu, diag sigma^2): the D3HR loss per candidate.

    L = w0 ||mean - mu|| + w1 ||std - sigma|| + w2 ||skew||, moments per dimension across the n
    group members (std ddof=1, skew g1 = m3/m2^1.5). n = 1 gives L = w0 ||x - mu||.
    Computed in float64; returns float64 tensors (M,).
    """
    w = _check_weights(weights)
    if not isinstance(candidates, Tensor) or candidates.dim() != 3 or candidates.shape[1] < 1:
        raise ValueError(f"candidates must be (M, n, D) with n >= 1, got {getattr(candidates, 'shape', None)}")
    check_gaussian(mu, sigma)
    if candidates.shape[2] != mu.shape[0]:
        raise ValueError(f"candidates have D={candidates.shape[2]} but mu/sigma have {mu.shape[0]}")
    if not bool(torch.isfinite(candidates).all()):
        raise ValueError("candidates contain NaN or inf")
    x, mu, sigma = candidates.double(), mu.to(candidates.device, torch.float64), sigma.to(candidates.device, torch.float64)
    terms = group_terms((x - mu) / sigma, sigma)
    return GroupScores(w[0] * terms[0] + w[1] * terms[1] + w[2] * terms[2], *terms)

