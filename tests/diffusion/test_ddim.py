"""DDIM sampling / inversion against diffusers' schedulers and a closed-form Gaussian denoiser."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from diffdistill.diffusion import ddim_invert, ddim_sample, ddim_schedule, ddim_step

SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
            "clip_sample": False, "set_alpha_to_one": True}


class GaussianPrior:
    """Exact eps-prediction for data z0 ~ N(m, s^2 I) where the mean m is the condition c.

    With x_t = sqrt(a) z0 + sqrt(1-a) eps: E[eps | x_t] = sqrt(1-a) (x_t - sqrt(a) m) / (a s^2 + 1 - a).
    The unconditional prediction uses m = 0, so guidance has its usual meaning.
    """

    def __init__(self, std: float = 0.5, shape: tuple[int, ...] = (2, 2, 2)) -> None:
        self.std = std
        self.latent_shape = shape
        self.alphas_cumprod = DDIMScheduler(**SCHEDULE).alphas_cumprod.double()
        self.calls: list[tuple[int, int]] = []

    def make_scheduler(self, num_steps: int) -> DDIMScheduler:
        scheduler = DDIMScheduler(**SCHEDULE)
        scheduler.set_timesteps(num_steps)
        return scheduler

    def eps(self, z: torch.Tensor, t: int, mean: torch.Tensor) -> torch.Tensor:
        a = float(self.alphas_cumprod[t])
        return math.sqrt(1 - a) * (z - math.sqrt(a) * mean) / (a * self.std ** 2 + 1 - a)

    def predict_noise(self, z: torch.Tensor, t: torch.Tensor, c: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        t = int(t)
        self.calls.append((t, z.shape[0]))
        mean = c.view(z.shape)
        eps_c = self.eps(z, t, mean)
        if guidance == 1.0:
            return eps_c
        eps_u = self.eps(z, t, torch.zeros_like(mean))
        return eps_u + guidance * (eps_c - eps_u)


def _gaussian_batch(prior: GaussianPrior, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn((n, *prior.latent_shape), generator=g, dtype=torch.float64)
    z0 = mean + prior.std * torch.randn((n, *prior.latent_shape), generator=g, dtype=torch.float64)
    return z0, mean.flatten(1)


def test_schedule_reads_scheduler_arrays_and_ends_clean() -> None:
    schedule = ddim_schedule(GaussianPrior(), 50)
    assert schedule.timesteps.tolist() == list(range(980, -1, -20))  # "leading" spacing, steps_offset 0
    reference = DDIMScheduler(**SCHEDULE).alphas_cumprod
    assert schedule.alphas[0] == pytest.approx(float(reference[980]))
    assert schedule.alphas_next[:-1] == schedule.alphas[1:]
    assert schedule.alphas_next[-1] == 1.0  # final alpha = 1 ("set_alpha_to_one")


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_equals_diffusers_step(eta: float) -> None:
    prior = GaussianPrior()
    scheduler = prior.make_scheduler(10)
    schedule = ddim_schedule(prior, 10)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 2, 2, 2, generator=g)
    for i, t in enumerate(scheduler.timesteps):
        eps = torch.randn(z.shape, generator=g)
        noise = torch.randn(z.shape, generator=g)
        expected = scheduler.step(eps, t, z, eta=eta, variance_noise=noise if eta else None).prev_sample
        got = ddim_step(z, eps, schedule.alphas[i], schedule.alphas_next[i], eta=eta, noise=noise if eta else None)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        z = expected


def test_inversion_step_equals_diffusers_inverse_scheduler() -> None:
    prior = GaussianPrior()
    inverse = DDIMInverseScheduler(**{k: v for k, v in SCHEDULE.items() if k != "set_alpha_to_one"},
                                   set_alpha_to_one=True)
    inverse.set_timesteps(10)
    schedule = ddim_schedule(prior, 10)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(3, 2, 2, 2, generator=g)
    for j, t in enumerate(inverse.timesteps):
        i = 9 - j
        assert int(schedule.timesteps[i]) == int(t)  # eps is evaluated at the same timestep
        eps = torch.randn(z.shape, generator=g)
        expected = inverse.step(eps, t, z).prev_sample
        torch.testing.assert_close(ddim_step(z, eps, schedule.alphas_next[i], schedule.alphas[i]), expected,
                                   rtol=1e-5, atol=1e-5)
        z = expected


def test_invert_then_sample_timesteps_mirror_each_other() -> None:
    """D3HR setting N=50, k=31: inversion ends at t=600 and sampling starts at t=600, not 620."""
    prior = GaussianPrior()
    z0, c = _gaussian_batch(prior, 4)
    num_steps, k = 50, 31
    ddim_invert(prior, z0, c, num_steps=num_steps, invert_steps=k)
    inverted = [t for t, _ in prior.calls]
    prior.calls.clear()
    ddim_sample(prior, z0, c, num_steps=num_steps, start_step=num_steps - k)
    sampled = [t for t, _ in prior.calls]
    assert inverted == list(range(0, 620, 20))
    assert sampled == inverted[::-1]
    assert sampled[0] == int(ddim_schedule(prior, num_steps).timesteps[num_steps - k]) == 600


class ConstantEpsPrior(GaussianPrior):
    """eps = 1 everywhere: DDIM is then exact, z_t = sqrt(a_t) z0 + sqrt(1 - a_t), so z reveals its level."""

    def predict_noise(self, z: torch.Tensor, t: torch.Tensor, c: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        return torch.ones_like(z)


def test_inverted_latents_sit_at_the_start_level_of_the_sampler() -> None:
    prior = ConstantEpsPrior()
    z0 = torch.zeros(2, 2, 2, 2, dtype=torch.float64)
    c = torch.zeros(2, 8, dtype=torch.float64)
    num_steps, k = 50, 31
    z_t = ddim_invert(prior, z0, c, num_steps=num_steps, invert_steps=k)
    level = 1.0 - float(z_t[0, 0, 0, 0]) ** 2  # alphas_cumprod of the level reached
    alphas_cumprod = prior.alphas_cumprod
    assert level == pytest.approx(float(alphas_cumprod[600]), rel=1e-9)
    assert level != pytest.approx(float(alphas_cumprod[620]), rel=1e-3)
    assert level == pytest.approx(ddim_schedule(prior, num_steps).alphas[num_steps - k], rel=1e-9)
    torch.testing.assert_close(ddim_sample(prior, z_t, c, num_steps=num_steps, start_step=num_steps - k), z0)


def test_invert_then_sample_reconstructs_and_error_shrinks_with_steps() -> None:
    """Inversion uses eps at the source latent (the exact inverse needs it at the unknown target):
    the round trip is exact only as N grows, with an error about first order in 1/N."""
    prior = GaussianPrior()
    z0, c = _gaussian_batch(prior, 64)
    errors = []
    for num_steps in (10, 40, 160):
        k = round(0.62 * num_steps)
        z_t = ddim_invert(prior, z0, c, num_steps=num_steps, invert_steps=k)
        back = ddim_sample(prior, z_t, c, num_steps=num_steps, start_step=num_steps - k)
        errors.append(float((back - z0).abs().mean()))
    assert errors[-1] < 0.02
    assert errors[1] < 0.5 * errors[0] and errors[2] < 0.5 * errors[1]


def test_round_trip_is_exact_when_eps_is_constant_along_the_path() -> None:
    prior = ConstantEpsPrior()
    z0, c = _gaussian_batch(prior, 8)
    z_t = ddim_invert(prior, z0, c, num_steps=20, invert_steps=12)
    torch.testing.assert_close(ddim_sample(prior, z_t, c, num_steps=20, start_step=8), z0)


def test_full_sampling_from_noise_matches_data_distribution() -> None:
    prior = GaussianPrior(std=0.5, shape=(4, 8, 8))
    n = 512
    z_T = torch.randn((n, *prior.latent_shape), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    mean = torch.full((n, 4 * 8 * 8), 1.5, dtype=torch.float64)
    z0 = ddim_sample(prior, z_T, mean, num_steps=100)
    assert float(z0.mean()) == pytest.approx(1.5, abs=0.02)
    assert float(z0.std()) == pytest.approx(0.5, rel=0.03)


def test_guidance_combines_conditional_and_unconditional() -> None:
    prior = GaussianPrior()
    z0, c = _gaussian_batch(prior, 4)
    g = 3.0
    eps = prior.predict_noise(z0, torch.tensor(500), c, g)
    eps_c = prior.predict_noise(z0, torch.tensor(500), c, 1.0)
    eps_u = prior.eps(z0, 500, torch.zeros_like(z0))
    torch.testing.assert_close(eps, eps_u + g * (eps_c - eps_u))
    a = ddim_sample(prior, z0, c, num_steps=5, guidance=g)
    b = ddim_sample(prior, z0, c, num_steps=5, guidance=1.0)
    assert not torch.allclose(a, b)


def test_gradients_flow_to_start_latent_and_condition() -> None:
    prior = GaussianPrior()
    z_T = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    out = ddim_sample(prior, z_T, c, num_steps=5, guidance=2.0)
    out.square().sum().backward()
    assert z_T.grad is not None and c.grad is not None
    assert z_T.grad.abs().sum() > 0 and c.grad.abs().sum() > 0
    # d out / d z_T of a linear map: check one entry against a finite difference
    delta = torch.zeros_like(z_T)
    delta[0, 0, 0, 0] = 1e-6
    with torch.no_grad():
        plus = ddim_sample(prior, z_T + delta, c, num_steps=5, guidance=2.0).square().sum()
        minus = ddim_sample(prior, z_T - delta, c, num_steps=5, guidance=2.0).square().sum()
    assert float(z_T.grad[0, 0, 0, 0]) == pytest.approx(float((plus - minus) / 2e-6), rel=1e-5)


def test_one_denoiser_call_per_step_for_the_whole_batch() -> None:
    prior = GaussianPrior()
    z0, c = _gaussian_batch(prior, 37)
    ddim_sample(prior, z0, c, num_steps=7, guidance=2.0)
    assert prior.calls == [(int(t), 37) for t in ddim_schedule(prior, 7).timesteps]


def test_eta_noise_is_reproducible_from_the_generator() -> None:
    prior = GaussianPrior()
    z0, c = _gaussian_batch(prior, 4)
    a = ddim_sample(prior, z0, c, num_steps=5, eta=1.0, generator=torch.Generator().manual_seed(9))
    b = ddim_sample(prior, z0, c, num_steps=5, eta=1.0, generator=torch.Generator().manual_seed(9))
    d = ddim_sample(prior, z0, c, num_steps=5, eta=0.0)
    assert torch.equal(a, b) and not torch.allclose(a, d)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_steps": 0}, "num_steps"),
    ({"num_steps": 10, "start_step": 11}, "start_step"),
    ({"num_steps": 10, "start_step": -1}, "start_step"),
    ({"num_steps": 10, "eta": 0.5}, "generator"),
    ({"num_steps": 10, "eta": -0.5}, "eta"),
])
def test_sample_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    prior = GaussianPrior()
    z0, c = _gaussian_batch(prior, 2)
    with pytest.raises(ValueError, match=message):
        ddim_sample(prior, z0, c, **kwargs)


def test_invert_rejects_bad_arguments() -> None:
    prior = GaussianPrior()
    z0, c = _gaussian_batch(prior, 2)
    with pytest.raises(ValueError, match="invert_steps"):
        ddim_invert(prior, z0, c, num_steps=10, invert_steps=11)
    with pytest.raises(ValueError, match="batch"):
        ddim_invert(prior, z0, c[:1], num_steps=10, invert_steps=3)
