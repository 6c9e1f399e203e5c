"""LD3M as the published code runs it: the latent-sensitivity diagnostic, the reference vs Eq. 12 variants,
GLaD's DC loop schedule in prior spaces, pixel steps in normalised space, and the output format."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch import nn

from diffdistill.config import build
from diffdistill.data.bundle import TensorBundle, to_unit
from diffdistill.diffusion.residual import ResidualNoise, residual_ddim_sample
from diffdistill.distill.ld3m import (
    LD3MConfig,
    Synthesizer,
    decode_unit,
    distill_ld3m,
    init_state,
    latent_sensitivity,
    pixel_step_scale,
)
from diffdistill.distill.objectives import DistributionMatching, DMConfig, RealImages
from diffdistill.rng import derive_seed
from tests.distill.test_ld3m import NUM_CLASSES, SIDE, ToyNet, ToyPrior, _real
from tests.prior.tiny import build_prior


class EmpiricalPrior(nn.Module):
    """The exact denoiser of a finite set of latents (the optimum a perfectly trained diffusion model approaches):
    eps_hat(z, t) = (z - sqrt(a_t) E[x0 | z, class]) / sqrt(1 - a_t), E[x0 | z] the softmax-weighted mean of the
    class's points under N(z; sqrt(a_t) x0, (1 - a_t) I). Latents are the images' pixel_unshuffle (8 px, 1 channel
    -> 4×4×4), so decode(encode(x)) = x. Conditions are one-hot rows; the last row is the null condition."""

    latent_shape, image_size, image_channels, num_classes = (4, 4, 4), SIDE, 1, NUM_CLASSES

    def __init__(self, real: TensorBundle):
        super().__init__()
        self.scheduler_config = dict(DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                                   beta_schedule="linear", clip_sample=False).config)
        self.alphas = DDIMScheduler.from_config(self.scheduler_config).alphas_cumprod.double()
        self.points = self.encode(to_unit(real["images"]) * 2 - 1).double()
        self.labels = real["labels"].long()

    def make_scheduler(self, num_steps):
        scheduler = DDIMScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_steps)
        return scheduler

    def _eps(self, z, t, cond):
        a = float(self.alphas[int(t)])
        classes = cond.argmax(dim=1)
        out = []
        for zi, k in zip(z.double(), classes.tolist(), strict=True):
            points = self.points if k == NUM_CLASSES else self.points[self.labels == k]
            d2 = (zi[None] - math.sqrt(a) * points).flatten(1).square().sum(1)
            w = torch.softmax(-d2 / (2 * (1 - a)), dim=0)
            mean = (w[:, None, None, None] * points).sum(0)
            out.append((zi - math.sqrt(a) * mean) / math.sqrt(1 - a))
        return torch.stack(out).to(z.dtype)

    def predict_noise(self, z, t, c, guidance=1.0):
        eps_c = self._eps(z, t, c)
        if guidance == 1.0:
            return eps_c
        eps_u = self._eps(z, t, self.null_condition(z.shape[0]))
        return eps_u + guidance * (eps_c - eps_u)

    def condition(self, labels):
        return F.one_hot(labels.long(), NUM_CLASSES + 1).float()

    def null_condition(self, batch):
        return F.one_hot(torch.full((batch,), NUM_CLASSES), NUM_CLASSES + 1).float()

    def encode(self, images, sample=False, generator=None):
        return F.pixel_unshuffle(images, 2)

    def decode(self, latents):
        return F.pixel_shuffle(latents, 2)


def _sensitivity(prior, variant, *, num_steps=6, guidance=3.0, space="latent"):
    real = _real()
    config = build(LD3MConfig, dict(objective="dm", space=space, ipc=2, iterations=0, dsa_strategy="none",
                                    sampler=dict(num_steps=num_steps, guidance=guidance, variant=variant,
                                                 chunk_size=6)), "ld3m")
    state = init_state(RealImages.from_bundle(real), prior, config)
    return latent_sensitivity(Synthesizer(prior, state, config, (1, SIDE, SIDE)), config.seed)


def _tiny_latent_prior():
    """A real `LatentPrior` (tiny KL VAE + class-conditional UNet, linear 1e-4..0.02 betas) at the test data's size."""
    return build_prior("kl", "unet_embedding")


@pytest.mark.parametrize("num_steps", [6, 10])
def test_reference_variant_makes_the_images_depend_on_z_and_eq12_does_not(num_steps):
    """||dX/dZ|| / ||dX/dn|| through a real LatentPrior (tiny VAE + UNet, guidance 3): > 1 for the published code's
    x0 skip (3.5 at T = 6, 10.5 at T = 10), < 0.1 for Eq. 12 as printed and for plain DDIM."""
    prior = _tiny_latent_prior()
    ratios = {variant: _sensitivity(prior, variant, num_steps=num_steps)["init_sensitivity_ratio"]
              for variant in ("reference", "eq12", "none")}
    assert ratios["reference"] > 1.0, ratios
    assert ratios["eq12"] < 0.1 and ratios["none"] < 0.1, ratios


@pytest.mark.parametrize("variant", ["eq12", "none"])
def test_without_the_x0_skip_z_acts_only_through_z_t(variant):
    """Eq. 12 and plain DDIM see (Z, n) only through z_T = sqrt(a_T) Z + sqrt(1 - a_T) n, so dX/dZ and dX/dn are
    the same Jacobian scaled: the ratio is sqrt(a_T / (1 - a_T)) exactly (0.0164 at the first of 10 steps)."""
    prior = _tiny_latent_prior()
    a_start = float(prior.make_scheduler(10).alphas_cumprod[prior.make_scheduler(10).timesteps[0]])
    ratio = _sensitivity(prior, variant, num_steps=10)["init_sensitivity_ratio"]
    assert ratio == pytest.approx(math.sqrt(a_start / (1 - a_start)), rel=1e-4)
    assert ratio == pytest.approx(0.0164, abs=5e-4)


def test_reference_variant_reproduces_the_encoded_real_init_under_an_exact_denoiser():
    """With the exact denoiser of the data (EmpiricalPrior) and Z = an encoded real image, the published code's
    sampler returns that image at iteration 0: PSNR >= 40 dB against decode(Z) (8-bit quantisation alone is
    ~59 dB; our trained digits prior's VAE round trip is ~29 dB, so 40 dB means "the sampler adds nothing the
    prior does not"). Eq. 12 starts from noise that hardly depends on Z and lands on some other sample of the
    class: far below (< 25 dB)."""
    prior = EmpiricalPrior(_real())
    reference = _sensitivity(prior, "reference", num_steps=10)
    eq12 = _sensitivity(prior, "eq12", num_steps=10)
    assert reference["init_psnr_db"] >= 40.0, reference
    assert eq12["init_psnr_db"] < 25.0, eq12


def test_decoder_only_images_are_decode_z():
    out = _sensitivity(ToyPrior(), "reference", space="decoder_only")
    assert out["init_psnr_db"] == 100.0 and out["init_grad_norm_latents"] > 0
    assert "init_sensitivity_ratio" not in out and "init_grad_norm_noise" not in out


def test_sensitivity_estimates_the_jacobian_norm_ratio_and_leaves_the_state_alone():
    """The probe estimate against the exact Frobenius norms of dX/dZ and dX/dn (brute-force Jacobians)."""
    prior = ToyPrior()
    config = build(LD3MConfig, dict(objective="dm", space="latent", ipc=1, iterations=0, dsa_strategy="none",
                                    sampler=dict(num_steps=4, guidance=2.0, chunk_size=3)), "ld3m")
    state = init_state(RealImages.from_bundle(_real()), prior, config)
    before = {k: v.clone() for k, v in state.tensors().items()}
    synth = Synthesizer(prior, state, config, (1, SIDE, SIDE))
    probes = [latent_sensitivity(synth, seed) for seed in range(40)]
    assert all(torch.equal(before[k], v) for k, v in state.tensors().items())
    assert synth.trajectories == {} and state.latents.grad is None

    def images(z, n):
        x = residual_ddim_sample(prior, z, state.conditions, ResidualNoise(n), num_steps=4, guidance=2.0,
                                 variant="reference")
        return decode_unit(prior, x)

    jz, jn = torch.autograd.functional.jacobian(images, (state.latents, state.noise.start))
    exact = float(jz.norm() / jn.norm())
    estimate = math.sqrt(sum(p["init_grad_norm_latents"] ** 2 for p in probes)
                         / sum(p["init_grad_norm_noise"] ** 2 for p in probes))
    assert estimate == pytest.approx(exact, rel=0.15)


@pytest.mark.parametrize("space", ["latent", "no_residual", "condition_only", "decoder_only", "pixel"])
def test_every_prior_space_history_has_the_diagnostic_at_iteration_0(space):
    seen = []
    config = build(LD3MConfig, dict(objective="dm", space=space, ipc=2, iterations=2, dsa_strategy="none",
                                    sampler=dict(num_steps=3, chunk_size=4), dm=dict(batch_real=8)), "ld3m")
    distill_ld3m(_real(), None if space == "pixel" else ToyPrior(), config, net_factory=ToyNet,
                 on_step=seen.append)
    keys = [{k for k in m if k.startswith("init_")} for m in seen]
    if space == "pixel":
        assert keys == [set(), set()]
    else:
        assert "init_psnr_db" in keys[0] and keys[1] == set()
        assert ("init_sensitivity_ratio" in keys[0]) == (space != "decoder_only")


def test_dc_schedule_is_glads_in_prior_spaces_and_dcs_table_in_pixel_space():
    def loops(space, **dc):
        config = build(LD3MConfig, dict(objective="dc", space=space, ipc=10, dc=dc), "ld3m")
        return config.dc_config().loops(10)

    assert loops("latent") == loops("no_residual") == loops("condition_only") == loops("decoder_only") == (1, 1)
    assert loops("pixel") == (10, 50)
    assert loops("latent", schedule="dc_table") == (10, 50) and loops("pixel", schedule="glad") == (1, 1)
    assert loops("latent", outer_loop=3, inner_loop=2) == (3, 2)
    with pytest.raises(ValueError, match=r"ld3m.dc.schedule='gald' is not one of dc_table, glad"):
        build(LD3MConfig, dict(objective="dc", dc={"schedule": "gald"}), "ld3m")


def test_dc_in_a_prior_space_runs_one_round_per_iteration_and_records_its_loops():
    seen = []
    config = build(LD3MConfig, dict(objective="dc", space="latent", ipc=10, iterations=1, dsa_strategy="none",
                                    sampler=dict(num_steps=2, chunk_size=30), dc=dict(batch_real=4)), "ld3m")
    real = _real()
    real = TensorBundle({"images": real["images"].repeat(3, 1, 1, 1), "labels": real["labels"].repeat(3)},
                        real.meta)
    result = distill_ld3m(real, ToyPrior(), config, net_factory=ToyNet, on_step=seen.append)
    assert seen[0]["rounds"] == 1 and result.images.meta["dc_loops"] == [1, 1]


def test_one_pixel_update_is_the_references_update_in_normalised_space():
    """The references learn x_n = (x - mean) / std with SGD(lr); ours learns x in [0, 1]. After one iteration,
    normalise(ours) == x_n - lr * dL/dx_n (momentum buffer starts at 0), with the same net, batches and loss."""
    lr = 0.7
    real = _real()
    config = build(LD3MConfig, dict(objective="dm", space="pixel", ipc=2, iterations=1, lr=lr,
                                    dsa_strategy="none", dm=dict(batch_real=8)), "ld3m")
    result = distill_ld3m(real, None, config, net_factory=ToyNet)
    images = RealImages.from_bundle(real)
    start = init_state(images, None, config)
    x_n = images.normalize(start.images).requires_grad_(True)
    objective = DistributionMatching(images, DMConfig(batch_real=8), net_factory=ToyNet, augment=None)
    generator = torch.Generator().manual_seed(derive_seed(config.seed, 0))
    objective.start_iteration(generator)
    unnormalise = x_n * images.std.view(1, -1, 1, 1) + images.mean.view(1, -1, 1, 1)  # the loss takes [0, 1]
    objective.loss(unnormalise, start.labels, generator).backward()
    expected = x_n.detach() - lr * x_n.grad
    ours = images.normalize(result.state["images"])
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(images.normalize(start.images), expected, atol=1e-3)  # the step did move
    assert torch.allclose(pixel_step_scale(images).flatten(), images.std.square())


def test_the_distilled_set_is_float32_clamped_to_unit_range_without_quantisation():
    """Pixels learn unclamped (state), the set is their clamp to [0, 1] in float32, nothing rounded to 8 bits."""
    config = build(LD3MConfig, dict(objective="dm", space="pixel", ipc=2, iterations=3, lr=50.0,
                                    dsa_strategy="none", dm=dict(batch_real=8)), "ld3m")
    result = distill_ld3m(_real(), None, config, net_factory=ToyNet)
    raw, out = result.state["images"], result.images["images"]
    assert out.dtype == torch.float32 and raw.min() < 0 < 1 < raw.max()  # lr 50 pushes pixels out of range
    assert torch.equal(out, raw.clamp(0, 1))
    inside = (out > 0) & (out < 1)
    assert not torch.equal(out[inside], (out[inside] * 255).round() / 255)
    assert result.images.meta["lr_space"] == "normalised"


@pytest.mark.parametrize(("variant", "message"), [
    ("x0_skip", "'x0_skip' was renamed 'reference'"), ("paper", "'paper' was renamed 'eq12'"),
    ("eq_12", "must be one of reference, eq12, none"),
])
def test_a_bad_variant_names_the_valid_ones(variant, message):
    with pytest.raises(ValueError, match=message):
        build(LD3MConfig, dict(sampler=dict(variant=variant)), "ld3m")
