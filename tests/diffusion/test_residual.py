"""Residual sampler (LD3M Eq. 12) and the two-pass checkpointed backprop, against the maths."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler
from torch import nn

from diffdistill.diffusion.residual import (
    ResidualNoise,
    generate_and_backprop,
    generate_images,
    residual_ddim_sample,
    residual_schedule,
)


class ToyPrior(nn.Module):
    """A tiny nonlinear class-conditional eps-predictor + conv autoencoder with the LatentPrior surface."""

    def __init__(self, seed: int = 0, latent=(2, 4, 4), channels: int = 1, cond_dim: int = 5):
        super().__init__()
        self.latent_shape, self.image_size, self.image_channels, self.num_classes = latent, 8, channels, 3
        self.scheduler_config = dict(
            DDIMScheduler(
                num_train_timesteps=100, beta_start=0.001, beta_end=0.05, clip_sample=False, set_alpha_to_one=False
            ).config
        )
        self.embed = nn.Embedding(self.num_classes + 1, cond_dim)
        self.cond = nn.Linear(cond_dim, latent[0])
        self.conv1 = nn.Conv2d(latent[0], 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, latent[0], 3, padding=1)
        self.dec = nn.ConvTranspose2d(latent[0], channels, 2, stride=2)
        self.calls = 0
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)

    def _eps(self, z, t, c):
        return self.conv2(torch.tanh(self.conv1(z + self.cond(c)[:, :, None, None] + float(t) / 100)))

    def predict_noise(self, z, t, c, guidance=1.0):
        self.calls += 1
        eps_c = self._eps(z, t, c)
        if guidance == 1.0:
            return eps_c
        eps_u = self._eps(z, t, self.null_condition(z.shape[0]))
        return eps_u + guidance * (eps_c - eps_u)

    def make_scheduler(self, num_steps):
        scheduler = DDIMScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_steps)
        return scheduler

    def condition(self, labels):
        return self.embed(labels)

    def null_condition(self, batch):
        return self.embed.weight[-1].expand(batch, -1)

    def decode(self, z):
        return torch.tanh(self.dec(z))


def _inputs(prior, n=3, steps=4, eta=0.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn((n, *prior.latent_shape), generator=g)
    conditions = prior.condition(torch.arange(n) % 3).detach().clone()
    noise = ResidualNoise.draw(n, prior.latent_shape, num_steps=steps, eta=eta, generator=g)
    return latents, conditions, noise


def _scheduler(prior, steps):
    return prior.make_scheduler(steps)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_variant_none_is_plain_ddim(eta):
    """Eq. 10: every step equals diffusers' DDIMScheduler.step with the stored step noise."""
    prior, steps = ToyPrior(), 4
    latents, conditions, noise = _inputs(prior, steps=steps, eta=eta)
    with torch.no_grad():
        got = residual_ddim_sample(
            prior, latents, conditions, noise, num_steps=steps, guidance=2.0, eta=eta, variant="none"
        )
        scheduler = _scheduler(prior, steps)
        a_start = scheduler.alphas_cumprod[scheduler.timesteps[0]]
        z = a_start.sqrt() * latents + (1 - a_start).sqrt() * noise.start
        for k, t in enumerate(scheduler.timesteps):
            eps = prior.predict_noise(z, int(t), conditions, 2.0)
            variance_noise = None if eta == 0 else noise.steps[:, k]
            z = scheduler.step(eps, t, z, eta=eta, variance_noise=variance_noise).prev_sample
    torch.testing.assert_close(got, z, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_variant_paper_is_eq12(eta):
    """z_{t-1} = (1 - t/T) mu(c, z_t) + (t/T) z_T + sigma_t eps_t, mu the DDIM mean, t = T..1."""
    prior, steps = ToyPrior(), 5
    latents, conditions, noise = _inputs(prior, steps=steps, eta=eta)
    with torch.no_grad():
        got = residual_ddim_sample(prior, latents, conditions, noise, num_steps=steps, eta=eta, variant="eq12")
        scheduler = _scheduler(prior, steps)
        a_start = scheduler.alphas_cumprod[scheduler.timesteps[0]]
        z_start = a_start.sqrt() * latents + (1 - a_start).sqrt() * noise.start
        z = z_start
        ratio = scheduler.config.num_train_timesteps // steps
        for k, t in enumerate(scheduler.timesteps):
            paper_t = steps - k
            eps = prior.predict_noise(z, int(t), conditions, 1.0)
            mean = scheduler.step(eps, t, z, eta=eta, variance_noise=torch.zeros_like(z)).prev_sample
            sigma = eta * scheduler._get_variance(int(t), int(t) - ratio).sqrt()
            step_noise = 0 if eta == 0 else sigma * noise.steps[:, k]
            z = (1 - paper_t / steps) * mean + (paper_t / steps) * z_start + step_noise
    torch.testing.assert_close(got, z, rtol=1e-5, atol=1e-5)


def test_variant_none_matches_ddim_sample():
    """The residual sampler's plain variant and the project's DDIM sampler walk the same levels."""
    from diffdistill.diffusion.ddim import ddim_sample

    prior, steps = ToyPrior(), 5
    latents, conditions, noise = _inputs(prior, steps=steps)
    schedule = residual_schedule(prior, steps)
    with torch.no_grad():
        got = residual_ddim_sample(prior, latents, conditions, noise, num_steps=steps, guidance=2.0, variant="none")
        z_start = math.sqrt(schedule.alphas[0]) * latents + math.sqrt(1 - schedule.alphas[0]) * noise.start
        expected = ddim_sample(prior, z_start, conditions, num_steps=steps, guidance=2.0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_variant_paper_skips_the_zero_weight_denoiser_call():
    prior, steps = ToyPrior(), 6
    latents, conditions, noise = _inputs(prior, steps=steps)
    with torch.no_grad():
        residual_ddim_sample(prior, latents, conditions, noise, num_steps=steps, variant="eq12")
    assert prior.calls == steps - 1


def test_variant_x0_skip_mixes_clean_latent_into_x0():
    """Reference code: x0' = (1 - k/K) x0_hat + (k/K) Z, k remaining steps, K = T - 1, then DDIM."""
    prior, steps = ToyPrior(), 4
    latents, conditions, noise = _inputs(prior, steps=steps)
    with torch.no_grad():
        got = residual_ddim_sample(prior, latents, conditions, noise, num_steps=steps, variant="reference")
        scheduler = _scheduler(prior, steps)
        a_start = scheduler.alphas_cumprod[scheduler.timesteps[0]]
        z = a_start.sqrt() * latents + (1 - a_start).sqrt() * noise.start
        ratio = scheduler.config.num_train_timesteps // steps
        for k, t in enumerate(scheduler.timesteps):
            eps = prior.predict_noise(z, int(t), conditions, 1.0)
            x0 = scheduler.step(eps, t, z).pred_original_sample
            remaining = (steps - 1 - k) / (steps - 1)
            x0 = (1 - remaining) * x0 + remaining * latents
            prev = int(t) - ratio
            a_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
            z = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(got, z, rtol=1e-5, atol=1e-5)


def test_paper_residual_weights_in_closed_form():
    """With eps_hat = 0 the chain is linear: z_0 = s * z_T with s from the scalar Eq. 12 recursion."""

    class ZeroEps(ToyPrior):
        def predict_noise(self, z, t, c, guidance=1.0):
            return torch.zeros_like(z)

    prior, steps = ZeroEps(), 5
    latents, conditions, noise = _inputs(prior, steps=steps)
    schedule = residual_schedule(prior, steps)
    got = residual_ddim_sample(prior, latents, conditions, noise, num_steps=steps, variant="eq12")
    scale = 1.0
    for k in range(steps):
        w = (steps - k) / steps
        scale = (1 - w) * math.sqrt(schedule.alphas_prev[k] / schedule.alphas[k]) * scale + w
    z_start = math.sqrt(schedule.alphas[0]) * latents + math.sqrt(1 - schedule.alphas[0]) * noise.start
    torch.testing.assert_close(got, scale * z_start, rtol=1e-5, atol=1e-6)


def test_stored_noise_makes_regeneration_deterministic():
    prior = ToyPrior()
    latents, conditions, noise = _inputs(prior, steps=3, eta=1.0)
    kwargs = dict(num_steps=3, eta=1.0, guidance=3.0, variant="eq12")
    with torch.no_grad():
        first = residual_ddim_sample(prior, latents, conditions, noise, **kwargs)
    second = residual_ddim_sample(prior, latents, conditions, noise, checkpoint=True, **kwargs)
    assert torch.equal(first, second.detach())
    other = ResidualNoise.draw(3, prior.latent_shape, num_steps=3, eta=1.0, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert not torch.equal(first, residual_ddim_sample(prior, latents, conditions, other, **kwargs))


def test_noise_draw_is_seeded_and_sliceable():
    a = ResidualNoise.draw(4, (2, 3, 3), num_steps=5, eta=0.5, generator=torch.Generator().manual_seed(3))
    b = ResidualNoise.draw(4, (2, 3, 3), num_steps=5, eta=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.start, b.start) and torch.equal(a.steps, b.steps)
    assert a.steps.shape == (4, 5, 2, 3, 3)
    assert ResidualNoise.draw(4, (2, 3, 3), num_steps=5, eta=0.0, generator=torch.Generator()).steps is None
    part = a[1:3]
    assert torch.equal(part.start, a.start[1:3]) and torch.equal(part.steps, a.steps[1:3])
    assert torch.equal(ResidualNoise.from_tensors(a.tensors()).steps, a.steps)


def test_input_validation():
    prior = ToyPrior()
    latents, conditions, noise = _inputs(prior, steps=3)
    with pytest.raises(ValueError, match="variant"):
        residual_ddim_sample(prior, latents, conditions, noise, num_steps=3, variant="bogus")
    with pytest.raises(ValueError, match="native latent shape"):
        residual_ddim_sample(prior, latents[:, :, :2], conditions, noise, num_steps=3)
    with pytest.raises(ValueError, match="eta > 0"):
        residual_ddim_sample(prior, latents, conditions, noise, num_steps=3, eta=0.5)


@pytest.mark.parametrize("variant", ["eq12", "reference", "none"])
@pytest.mark.parametrize("mode", ["checkpoint", "replay"])
def test_two_pass_backprop_equals_plain_autograd(variant, mode):
    """Pass-2 images equal pass-1 images bit for bit; grads reach Z and c, not the prior, and equal
    the grads of plain autograd through the whole chain."""
    prior, steps, n, eta = ToyPrior().double().requires_grad_(False), 4, 5, 0.3  # float64: tight comparison
    latents0, conditions0, noise = _inputs(prior, n=n, steps=steps, eta=eta)
    latents0, conditions0 = latents0.double(), conditions0.double()
    noise = ResidualNoise(noise.start.double(), noise.steps.double())
    target = torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    loss_fn = lambda x: ((x - target) ** 2).sum() + x.mean() ** 3  # noqa: E731

    def make(mode):
        latents = latents0.clone().requires_grad_(True)
        conditions = conditions0.clone().requires_grad_(True)
        recorded, mismatches = {}, []

        def synthesize(index):
            kwargs = {"checkpoint": mode == "checkpoint"}
            if mode == "replay" and torch.is_grad_enabled():
                kwargs.update(replay=recorded.pop(index.start), mismatches=mismatches)
            elif mode == "replay":
                kwargs["record"] = recorded[index.start] = []
            z0 = residual_ddim_sample(
                prior,
                latents[index],
                conditions[index],
                noise[index],
                num_steps=steps,
                guidance=2.0,
                eta=eta,
                variant=variant,
                **kwargs,
            )
            return prior.decode(z0)

        return latents, conditions, synthesize, mismatches

    latents, conditions, synthesize, mismatches = make(mode)
    calls_before = prior.calls
    loss, images, regenerated = generate_and_backprop(synthesize, n, loss_fn, chunk_size=2)
    assert torch.equal(images, regenerated)
    calls_per_pass = 3 * (steps - (variant == "eq12"))  # 3 chunks
    # denoiser passes: pass 1, then (checkpoint) forward again + recompute, or (replay) recompute only
    assert prior.calls - calls_before == calls_per_pass * (3 if mode == "checkpoint" else 2)
    if mode == "replay":
        assert len(mismatches) == calls_per_pass and all(float(m) == 0.0 for m in mismatches)
    assert all(p.grad is None for p in prior.parameters())
    assert latents.grad.abs().sum() > 0 and conditions.grad.abs().sum() > 0

    plain_latents, plain_conditions, plain_synthesize, _ = make("plain")
    plain_images = plain_synthesize(slice(0, n))
    torch.testing.assert_close(plain_images.detach(), images, rtol=1e-12, atol=1e-12)
    plain_loss = loss_fn(plain_images)
    plain_loss.backward()
    torch.testing.assert_close(loss, plain_loss.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(latents.grad, plain_latents.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(conditions.grad, plain_conditions.grad, rtol=1e-10, atol=1e-12)


def test_generate_images_chunks_without_graph():
    prior = ToyPrior()
    latents, conditions, noise = _inputs(prior, n=5, steps=2)
    latents.requires_grad_(True)

    def synthesize(index):
        return residual_ddim_sample(prior, latents[index], conditions[index], noise[index], num_steps=2)

    images = generate_images(synthesize, 5, chunk_size=2)
    assert images.shape == (5, *prior.latent_shape) and not images.requires_grad
    with pytest.raises(ValueError, match="chunk_size"):
        generate_images(synthesize, 5, chunk_size=0)
