"""D3HR statistics and group sampling: checked against the maths, on tiny tensors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from diffdistill.config import ConfigError, build
from diffdistill.distill.d3hr import (
    PAPER_WEIGHTS,
    ClassGaussians,
    GaussiansConfig,
    GroupSamplingConfig,
    LatentsConfig,
    NoiseSpaceFit,
    candidate_seed,
    class_seed,
    draw_candidate,
    fit_class_gaussians,
    fit_class_moments,
    fit_noise_space,
    kept_noise,
    moment_report,
    regenerate_group,
    sample_class_groups,
    sample_group,
    score_groups,
    select_class_groups,
    stack_selections,
)
from diffdistill.workdir import WorkDir


def _batches(x: torch.Tensor, labels: torch.Tensor, sizes: list[int]):
    start = 0
    for size in sizes:
        yield x[start:start + size], labels[start:start + size]
        start += size
    assert start == x.shape[0]


def _cfg(m: int, *, chunk_size: int = 32, seed: int = 0) -> GroupSamplingConfig:
    return GroupSamplingConfig(m=m, weights=PAPER_WEIGHTS, chunk_size=chunk_size, seed=seed)


def _params(d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g, dtype=torch.float64), torch.rand(d, generator=g, dtype=torch.float64) + 0.5


def _numpy_skew_kurt(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = x - x.mean(0)
    m2, m3, m4 = (c**2).mean(0), (c**3).mean(0), (c**4).mean(0)
    return m3 / m2**1.5, m4 / m2**2 - 3.0


# --------------------------------------------------------------------------- Gaussian fit


def test_streamed_fit_equals_one_shot_and_is_stable_far_from_zero():
    g = torch.Generator().manual_seed(1)
    n, k = 181, 3
    labels = torch.randint(0, k, (n,), generator=g)
    # Large offset: E[x^2] - E[x]^2 would lose every digit here, the merge must not.
    x = 1e8 + torch.randn(n, 2, 3, 4, generator=g, dtype=torch.float64) * (1.0 + labels.view(-1, 1, 1, 1))
    fit = fit_class_gaussians(_batches(x, labels, [1, 7, 50, 3, 0, 120]), k)
    one_shot = fit_class_gaussians([(x, labels)], k)
    assert fit.sample_shape == (2, 3, 4) and fit.dim == 24
    for c in range(k):
        xc = x[labels == c].reshape(-1, 24)
        exact_var = (xc - 1e8).var(0, correction=1)  # x - 1e8 is exact (Sterbenz), so this is the true value
        assert int(fit.counts[c]) == xc.shape[0]
        torch.testing.assert_close(fit.mean[c], xc.mean(0), rtol=1e-14, atol=0)
        # the data's own resolution at 1e8 is 1.5e-8, so ~1e-8 relative is all float64 can give
        torch.testing.assert_close(fit.var[c], exact_var, rtol=1e-6, atol=0)
        torch.testing.assert_close(one_shot.var[c], exact_var, rtol=1e-6, atol=0)
        naive = ((xc**2).mean(0) - xc.mean(0) ** 2) * xc.shape[0] / (xc.shape[0] - 1)
        assert ((naive - exact_var).abs() / exact_var).max() > 0.01  # what a sum-of-squares fit would give
    # variance was (1 + c)^2 by construction
    assert torch.allclose(fit.std.mean(1), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), rtol=0.15)


def test_fit_accepts_float32_and_roundtrips_through_a_bundle():
    g = torch.Generator().manual_seed(2)
    x, labels = torch.randn(40, 6, generator=g), torch.arange(40) % 2
    fit = fit_class_gaussians([(x, labels)], 2)
    assert fit.mean.dtype == torch.float64
    back = ClassGaussians.from_bundle(fit.to_bundle())
    assert torch.equal(back.mean, fit.mean) and torch.equal(back.var, fit.var) and back.sample_shape == (6,)
    json.dumps(fit.to_bundle().meta)


def test_zero_variance_names_class_and_dims_and_min_std_floors():
    g = torch.Generator().manual_seed(3)
    x, labels = torch.randn(30, 5, generator=g), torch.arange(30) % 3
    x[labels == 1, 2:] = 0.7  # class 1 constant in 3 of 5 dims
    with pytest.raises(ValueError, match=r"class 1 in 3 of 5 dims.*min_std"):
        fit_class_gaussians([(x, labels)], 3)
    fit = fit_class_gaussians([(x, labels)], 3, min_std=1e-3)
    assert torch.allclose(fit.std[1, 2:], torch.full((3,), 1e-3, dtype=torch.float64))
    assert fit.floored_dims.tolist() == [0, 3, 0]
    assert bool((fit.std > 0).all())


@pytest.mark.parametrize("batch, match", [
    ((torch.zeros(4, 3), torch.tensor([0, 1, 2, 5])), "labels must lie in"),
    ((torch.zeros(4, 3), torch.tensor([0, 1, 2])), "one entry per row"),
    ((torch.full((4, 3), float("nan")), torch.tensor([0, 1, 0, 1])), "NaN"),
    ((torch.zeros(4), torch.tensor([0, 1, 0, 1])), r"\(N, D\)"),
    ((torch.zeros(4, 3), torch.tensor([0.0, 1, 0, 1])), "integer"),
    ((torch.randn(3, 3), torch.tensor([0, 1, 1])), "at least 2 samples"),
])
def test_fit_rejects_bad_batches(batch, match):
    with pytest.raises(ValueError, match=match):
        fit_class_gaussians([batch], 2)


def test_fit_rejects_changing_sample_shape_and_bad_min_std():
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="sample shape"):
        fit_class_gaussians([(torch.randn(4, 3), labels), (torch.randn(4, 4), labels)], 2)
    with pytest.raises(ValueError, match="min_std"):
        fit_class_gaussians([(torch.randn(4, 3), labels)], 2, min_std=0.0)


# --------------------------------------------------------------------------- moment report


def test_streamed_moments_equal_one_shot_numpy():
    g = torch.Generator().manual_seed(4)
    n = 3000
    labels = torch.arange(n) % 2
    gauss = torch.randn(n, 4, generator=g, dtype=torch.float64)
    expo = -torch.log(torch.rand(n, 4, generator=g, dtype=torch.float64))  # skew 2, excess kurtosis 6
    x = 1e3 + torch.where(labels.view(-1, 1) == 0, expo, gauss)
    mom = fit_class_moments(_batches(x, labels, [5, 1, 994, 2000]), 2)
    for c in range(2):
        skew, kurt = _numpy_skew_kurt(x[labels == c].numpy())
        np.testing.assert_allclose(mom.skewness[c].numpy(), skew, rtol=1e-8)
        np.testing.assert_allclose(mom.excess_kurtosis[c].numpy(), kurt, rtol=1e-8)
    report = moment_report(_batches(x, labels, [700, 2300]), 2)
    json.dumps(report)
    expo_skew, gauss_skew = report["classes"][0]["skewness"], report["classes"][1]["skewness"]
    assert 1.5 < expo_skew["q0.5"] < 2.5 and 3 < report["classes"][0]["excess_kurtosis"]["mean"] < 9
    assert abs(gauss_skew["mean"]) < 4 * report["classes"][1]["normal_sd"]["skewness"]


def test_moment_report_leaves_out_constant_dims():
    g = torch.Generator().manual_seed(5)
    x, labels = torch.randn(50, 3, generator=g, dtype=torch.float64), torch.arange(50) % 2
    x[labels == 0, 0] = 2.0
    mom = fit_class_moments([(x, labels)], 2)
    assert mom.constant[0].tolist() == [True, False, False]
    assert torch.isfinite(mom.skewness).all() and torch.isfinite(mom.excess_kurtosis).all()
    assert mom.report()["classes"][0]["constant_dims"] == 1


# --------------------------------------------------------------------------- scoring


def test_score_groups_picks_a_planted_perfect_group():
    mu, sigma = _params(8)
    g = torch.Generator().manual_seed(6)
    cands = mu + sigma * torch.randn(20, 3, 8, generator=g, dtype=torch.float64)
    # members mu - sigma, mu, mu + sigma: mean mu, std (ddof=1) sigma, skew 0 in every dimension
    cands[13] = mu + sigma * torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64).view(3, 1)
    scores = score_groups(cands, mu, sigma)
    assert int(scores.total.argmin()) == 13
    assert float(scores.total[13]) < 1e-12


def test_score_groups_matches_direct_formulas():
    mu, sigma = _params(6)
    g = torch.Generator().manual_seed(7)
    x = mu + sigma * torch.randn(9, 5, 6, generator=g, dtype=torch.float64)
    scores = score_groups(x, mu, sigma, weights=(1.0, 2.0, 0.25))
    mean, std = x.mean(1), x.std(1, correction=1)
    c = x - mean.unsqueeze(1)
    skew = (c**3).mean(1) / (c**2).mean(1) ** 1.5
    torch.testing.assert_close(scores.mean, (mean - mu).norm(dim=1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(scores.std, (std - sigma).norm(dim=1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(scores.skew, skew.norm(dim=1), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(scores.total, scores.mean + 2 * scores.std + 0.25 * scores.skew)


def test_skewness_is_per_dimension_across_members_not_per_sample():
    d = 20
    mu, sigma = torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    # Every dimension holds {-1, 0, 1} (per-dimension skew 0), but member 0 is high in 18 dims and
    # low in 2, so across its 20 features it is strongly skewed.
    group = torch.zeros(3, d, dtype=torch.float64)
    group[0], group[2] = 1.0, -1.0
    group[0, :2], group[2, :2] = -1.0, 1.0
    ours = score_groups(group.unsqueeze(0), mu, sigma)
    assert float(ours.skew[0]) < 1e-12
    # the reference's skewness_batch: standardise per dim, then skew of each sample over the D features
    z = (group - group.mean(0)) / group.std(0)
    per_sample = (z**3).sum(1) * (d / ((d - 1) * (d - 2)))
    assert float(per_sample.norm()) > 1.0
    # and the converse: per-dimension values {0, 0, 3} have g1 = 2 / 2^1.5 in every dimension
    skewed = torch.zeros(3, d, dtype=torch.float64)
    skewed[2] = 3.0
    got = float(score_groups(skewed.unsqueeze(0), mu, sigma).skew[0])
    assert got == pytest.approx(math.sqrt(d) * 2 / 2**1.5, rel=1e-12)


def test_ipc_one_and_equal_members_give_no_nan():
    mu, sigma = _params(5)
    x = mu + sigma * torch.randn(4, 1, 5, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    s = score_groups(x, mu, sigma)
    assert torch.equal(s.std, torch.zeros(4, dtype=s.std.dtype)) and torch.equal(s.skew, torch.zeros_like(s.skew))
    torch.testing.assert_close(s.total, (x[:, 0] - mu).norm(dim=1))
    same = (mu + 0.3).expand(3, 5).unsqueeze(0)  # all members equal: std = 0, skew defined as 0
    s = score_groups(same, mu, sigma)
    assert torch.isfinite(s.total).all() and float(s.skew[0]) == 0.0
    torch.testing.assert_close(s.std[0], sigma.norm())


# --------------------------------------------------------------------------- paper sampler


def test_m_equal_one_is_plain_random_sampling():
    mu, sigma = _params(16)
    sel = sample_group(mu, sigma, _cfg(1, seed=11), ipc=4, class_index=3)
    z = draw_candidate(class_seed(11, 3), "group", 0, (4, 16))
    assert sel.candidate_index == (0,) and sel.seed == class_seed(11, 3)
    assert torch.equal(sel.noise, torch.addcmul(mu.float(), sigma.float(), z))


def test_sampler_agrees_with_brute_force():
    mu, sigma = _params(16, seed=1)
    sel = sample_group(mu, sigma, _cfg(40, chunk_size=6, seed=2), ipc=5, class_index=1)
    cs = class_seed(2, 1)
    cands = torch.stack([torch.addcmul(mu.float(), sigma.float(), draw_candidate(cs, "group", i, (5, 16)))
                         for i in range(40)])
    scores = score_groups(cands, mu.float(), sigma.float())
    assert sel.candidate_index == (int(scores.total.argmin()),)
    assert sel.score == pytest.approx(float(scores.total.min()), rel=1e-5)
    assert sel.terms["mean"] == pytest.approx(float(scores.mean[sel.candidate_index[0]]), rel=1e-5)
    assert torch.equal(sel.noise, cands[sel.candidate_index[0]])


def test_chunk_size_does_not_change_the_selection():
    mu, sigma = _params(12, seed=2)
    sels = [sample_group(mu, sigma, _cfg(50, chunk_size=c, seed=5), ipc=3)
            for c in (7, 1000, 1)]
    assert len({s.candidate_index for s in sels}) == 1
    assert all(torch.equal(s.noise, sels[0].noise) and s.score == sels[0].score for s in sels)


@pytest.mark.parametrize("factorised", [False, True])
@pytest.mark.parametrize("ipc", [1, 2, 7])
def test_regeneration_is_bit_identical_and_nan_free(factorised, ipc):
    g = torch.Generator().manual_seed(9)
    x, labels = torch.randn(40, 2, 2, 3, generator=g), torch.arange(40) % 2
    gaussians = fit_class_gaussians([(x, labels)], 2)
    sels = sample_class_groups(gaussians, _cfg(9, chunk_size=4, seed=3), ipc=ipc, factorised=factorised)
    for sel in sels:
        assert sel.noise.shape == (ipc, 12) and sel.noise.dtype == torch.float32
        assert torch.isfinite(sel.noise).all() and math.isfinite(sel.score)
        recipe = json.loads(json.dumps(sel.recipe))
        assert torch.equal(regenerate_group(gaussians, recipe), sel.noise)
        assert torch.equal(regenerate_group(gaussians.class_params(sel.class_index), recipe), sel.noise)
    assert not torch.equal(sels[0].noise, sels[1].noise)
    noise, lab = stack_selections(sels, gaussians.sample_shape)
    assert noise.shape == (2 * ipc, 2, 2, 3) and lab.tolist() == [0] * ipc + [1] * ipc


def test_classes_get_their_own_streams():
    mu, sigma = _params(10)
    gaussians = ClassGaussians(torch.stack([mu, mu]), torch.stack([sigma, sigma]) ** 2, torch.tensor([5, 5]), (10,))
    a, b = sample_class_groups(gaussians, _cfg(1), ipc=3)
    assert a.seed != b.seed and not torch.equal(a.noise, b.noise)
    seeds = {candidate_seed(class_seed(0, k), "group", i) for k in range(20) for i in range(500)}
    assert len(seeds) == 20 * 500
    again = sample_class_groups(gaussians, _cfg(1), ipc=3)
    assert torch.equal(again[1].noise, b.noise)


@pytest.mark.parametrize("kwargs, match", [
    ({"m": 0}, r"d3hr.group_sampling.m=0 must be >= 1"), ({"chunk_size": 0}, "d3hr.group_sampling.chunk_size"),
    ({"weights": (1.0, -1.0, 0.5)}, "weights"), ({"weights": (1.0, 1.0)}, "weights"), ({"m": 2.0}, "m=2.0"),
    ({"weights": "high"}, "weights"), ({"seed": None}, "seed"),
])
def test_config_rejects_bad_values(kwargs, match):
    params = {"m": 2, "weights": [1.0, 1.0, 0.5], "chunk_size": 4, "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        build(GroupSamplingConfig, params, "d3hr.group_sampling")
    mu, sigma = _params(3)
    with pytest.raises(ConfigError, match=match):  # a config made directly is checked where it is used
        sample_group(mu, sigma, GroupSamplingConfig(**params), ipc=2)


@pytest.mark.parametrize("ipc", [0, 2.0, True])
def test_sampler_rejects_a_bad_ipc(ipc):
    with pytest.raises(ValueError, match="ipc must be an int >= 1"):
        sample_group(*_params(3), _cfg(2), ipc=ipc)


def test_sampler_and_scorer_reject_bad_statistics():
    mu, sigma = _params(6)
    cfg = _cfg(2)
    with pytest.raises(ValueError, match="same length"):
        sample_group(mu, sigma[:5], cfg, ipc=2)
    with pytest.raises(ValueError, match="NaN"):
        sample_group(torch.full_like(mu, float("nan")), sigma, cfg, ipc=2)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        sample_group(mu, torch.zeros_like(sigma), cfg, ipc=2)
    with pytest.raises(ValueError, match=r"\(M, n, D\)"):
        score_groups(torch.zeros(3, 6), mu, sigma)
    with pytest.raises(ValueError, match="D=5"):
        score_groups(torch.zeros(3, 2, 5), mu, sigma)
    sel = sample_group(mu, sigma, cfg, ipc=2)
    with pytest.raises(ValueError, match="D=6"):
        regenerate_group(_params(7), sel.recipe)
    with pytest.raises(ValueError, match="drawn on 'cpu'"):
        regenerate_group((mu, sigma), sel.recipe, device="meta")
    with pytest.raises(ValueError, match="recipe must be a dict"):
        regenerate_group((mu, sigma), {"format": "x"})


# --------------------------------------------------------------------------- factorised sampler


def test_factorised_group_has_exactly_the_chosen_moments():
    mu, sigma = _params(10, seed=3)
    n = 6
    sel = sample_group(mu, sigma, _cfg(20, seed=4), ipc=n, factorised=True, class_index=2)
    i_mean, i_std, i_res = sel.candidate_index
    cs = class_seed(4, 2)
    u = draw_candidate(cs, "mean", i_mean, (10,)).double()
    w = draw_candidate(cs, "std", i_std, (n - 1, 10)).double()
    z = draw_candidate(cs, "residual", i_res, (n, 10)).double()
    x = sel.noise.double()
    torch.testing.assert_close(x.mean(0), mu + sigma * u / math.sqrt(n), rtol=0, atol=1e-5)
    torch.testing.assert_close(x.std(0), sigma * (w.square().sum(0) / (n - 1)).sqrt(), rtol=1e-5, atol=1e-6)
    skew = lambda a: ((a - a.mean(0)) ** 3).mean(0) / ((a - a.mean(0)) ** 2).mean(0) ** 1.5  # noqa: E731
    torch.testing.assert_close(skew(x), skew(z), rtol=1e-4, atol=1e-4)
    scores = score_groups(sel.noise.unsqueeze(0), mu, sigma)
    assert float(scores.total[0]) == pytest.approx(sel.score, rel=1e-5)
    assert float(scores.skew[0]) == pytest.approx(sel.terms["skew"], rel=1e-4)


def test_factorised_parts_are_each_the_best_of_m():
    mu, sigma = _params(8, seed=4)
    n, m = 5, 15
    sel = sample_group(mu, sigma, _cfg(m, seed=6), ipc=n, factorised=True)
    cs = class_seed(6, 0)
    mean_terms = [float((sigma.float() * draw_candidate(cs, "mean", i, (8,))).norm()) / math.sqrt(n) for i in range(m)]
    std_terms = [float((sigma.float() * ((draw_candidate(cs, "std", i, (n - 1, 8)).square().sum(0) / (n - 1)).sqrt()
                                         - 1)).norm()) for i in range(m)]
    skew_terms = score_groups(torch.stack([draw_candidate(cs, "residual", i, (n, 8)) for i in range(m)]),
                              torch.zeros(8), torch.ones(8)).skew
    assert sel.candidate_index == (int(np.argmin(mean_terms)), int(np.argmin(std_terms)), int(skew_terms.argmin()))


def test_factorised_groups_are_exact_gaussian_samples():
    """m = 1: the recombined groups must be i.i.d. N(mu, sigma^2) samples: marginals, independence
    between members, and the chi-square law of the group variance."""
    mu = torch.tensor([0.5, -2.0, 0.0], dtype=torch.float64)
    sigma = torch.tensor([1.0, 0.3, 2.5], dtype=torch.float64)
    n, groups = 5, 1500
    x = torch.stack([sample_group(mu, sigma, _cfg(1, seed=s), ipc=n, factorised=True).noise.double()
                     for s in range(groups)])  # (G, n, 3)
    pooled = ((x - mu) / sigma).reshape(-1, 3)  # should be N(0, 1)
    total = pooled.shape[0]
    se = 1 / math.sqrt(total)
    assert pooled.mean(0).abs().max() < 4 * se
    assert (pooled.var(0) - 1).abs().max() < 4 * math.sqrt(2) * se
    c = pooled - pooled.mean(0)
    skew = (c**3).mean(0) / (c**2).mean(0) ** 1.5
    kurt = (c**4).mean(0) / (c**2).mean(0) ** 2 - 3
    assert skew.abs().max() < 4 * math.sqrt(6) * se and kurt.abs().max() < 4 * math.sqrt(24) * se
    ordered = pooled.sort(0).values  # Kolmogorov-Smirnov against the standard normal CDF
    cdf = torch.special.ndtr(ordered)
    ks = torch.maximum(torch.arange(1, total + 1).unsqueeze(1) / total - cdf,
                       cdf - torch.arange(total).unsqueeze(1) / total).max()
    assert ks < 1.95 / math.sqrt(total)  # 0.1 % critical value
    zs = (x - mu) / sigma  # members independent: correlation across groups ~ 0
    corr = torch.corrcoef(torch.stack([zs[:, 0, 0], zs[:, 1, 0], zs[:, 4, 2], zs[:, 2, 2]]))
    assert corr[0, 1].abs() < 4 / math.sqrt(groups) and corr[2, 3].abs() < 4 / math.sqrt(groups)
    s2 = zs.var(1, correction=1)  # chi^2_{n-1}/(n-1): mean 1, variance 2/(n-1)
    assert (s2.mean(0) - 1).abs().max() < 4 * math.sqrt(2 / (n - 1) / groups)
    assert (s2.var(0) / (2 / (n - 1)) - 1).abs().max() < 0.35
    gm = zs.mean(1) * math.sqrt(n)  # group mean ~ N(mu, sigma^2 / n)
    assert (gm.var(0) - 1).abs().max() < 4 * math.sqrt(2 / groups)


def test_factorised_beats_the_paper_sampler_at_equal_m():
    mu, sigma = _params(64, seed=5)
    for seed in range(3):
        paper = sample_group(mu, sigma, _cfg(30, seed=seed), ipc=10)
        fact = sample_group(mu, sigma, _cfg(30, seed=seed), ipc=10, factorised=True)
        assert fact.score < paper.score


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_regeneration_is_bit_identical():
    mu, sigma = _params(32)
    sel = sample_group(mu, sigma, _cfg(20, chunk_size=7), ipc=4, device="cuda")
    assert sel.recipe["device_type"] == "cuda"
    assert torch.equal(regenerate_group((mu, sigma), sel.recipe), sel.noise)


# --------------------------------------------------------------------------- phases (no Kedro)


def _two_class_gaussians() -> ClassGaussians:
    g = torch.Generator().manual_seed(4)
    x, labels = torch.randn(30, 2, 2, 2, generator=g), torch.arange(30) % 3
    return fit_class_gaussians([(x, labels)], 3)


@pytest.mark.parametrize("factorised", [False, True])
def test_selection_resumes_from_its_workdir_and_regenerates_the_kept_noise(tmp_path, factorised):
    gaussians, cfg = _two_class_gaussians(), _cfg(6, chunk_size=4, seed=1)
    direct = sample_class_groups(gaussians, cfg, ipc=3, factorised=factorised)
    resume = WorkDir(tmp_path / "d3hr")
    resume.put_json("class1", {"recipe": direct[1].recipe, "score": -1.0, "terms": direct[1].terms})  # a killed run
    entries = select_class_groups(gaussians, cfg, ipc=3, factorised=factorised, resume=resume)
    assert [e["score"] for e in entries] == [direct[0].score, -1.0, direct[2].score]  # class 1 was not searched again
    assert not resume.path.exists()  # finished: cleared
    noise, labels = kept_noise(gaussians, entries)
    expected, expected_labels = stack_selections(direct, gaussians.sample_shape)
    assert torch.equal(noise, expected) and torch.equal(labels, expected_labels)
    part = select_class_groups(gaussians, cfg, ipc=3, factorised=factorised, classes=(1, 3))
    assert [e["recipe"] for e in part] == [e["recipe"] for e in entries[1:]]


def test_selection_refuses_an_ipc_above_the_smallest_class():
    with pytest.raises(ValueError, match=r"ipc=11 is larger than class 0 \(10 train images\)"):
        select_class_groups(_two_class_gaussians(), _cfg(2), ipc=11)


def test_noise_space_fit_of_class_ranges_concatenates_to_the_whole_fit():
    g = torch.Generator().manual_seed(5)
    labels = torch.arange(4).repeat_interleave(6)
    noise, latents = torch.randn(24, 2, 3, generator=g) * 2 + 1, torch.rand(24, 2, 3, generator=g) ** 3
    config = build(GaussiansConfig, {"batch_size": 4, "min_std": 1e-3}, "gaussians")
    whole = fit_noise_space(noise, latents, labels, config, classes=(0, 4))
    parts = [fit_noise_space(noise, latents, labels, config, classes=c).tensors() for c in ((0, 1), (1, 4))]
    merged = NoiseSpaceFit.cat(parts, (2, 3), 1e-3)
    for name, tensor in whole.tensors().items():
        assert torch.equal(merged.tensors()[name], tensor), name
    assert merged.report() == whole.report() and whole.report()["bytes"] == 4 * 6 * 8 * 2 + 4 * 8 * 2
    torch.testing.assert_close(whole.gaussians.mean[2], noise[labels == 2].flatten(1).double().mean(0))


@pytest.mark.parametrize(("params", "message"), [
    ({"invert_steps": 11}, r"latents.invert_steps=11 must be in 1..latents.num_steps=10"),
    ({"batch_size": 0}, r"latents.batch_size=0 must be >= 1"),
    ({"seed": None}, r"latents.seed=None must be an int"),
    ({"sample_posterior": "yes"}, r"latents.sample_posterior='yes' must be true or false"),
])
def test_latents_config_names_the_key_and_what_to_change(params, message):
    valid = {"num_steps": 10, "invert_steps": 6, "invert_guidance": 1.0, "batch_size": 4, "round_trip_images": 2,
             "seed": 0}
    assert build(LatentsConfig, valid, "latents").start_step == 4
    with pytest.raises(ConfigError, match=message):
        build(LatentsConfig, {**valid, **params}, "latents")
