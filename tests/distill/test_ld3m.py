"""The LD3M loop: init, spaces, two-pass updates, checkpoint/resume bytes, divergence, output format."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler
from torch import nn

from diffdistill.config import ConfigError, build
from diffdistill.data.bundle import TensorBundle, to_signed
from diffdistill.distill.ld3m import (
    CHECKPOINT_FILE,
    DivergenceError,
    LD3MConfig,
    distill_ld3m,
    init_state,
    load_checkpoint,
)
from diffdistill.distill.objectives import RealImages, flatten_parameters

NUM_CLASSES, SIDE = 3, 8


class ToyPrior(nn.Module):
    """Tiny conv autoencoder (8 px <-> 2×4×4) + nonlinear class-conditional eps-predictor."""

    latent_shape, image_size, image_channels, num_classes = (2, 4, 4), SIDE, 1, NUM_CLASSES

    def __init__(self, seed: int = 0):
        super().__init__()
        self.scheduler_config = dict(
            DDIMScheduler(num_train_timesteps=100, beta_start=0.001, beta_end=0.05, clip_sample=False).config
        )
        self.embed = nn.Embedding(NUM_CLASSES + 1, 4)
        self.cond = nn.Linear(4, 2)
        self.conv1, self.conv2 = nn.Conv2d(2, 6, 3, padding=1), nn.Conv2d(6, 2, 3, padding=1)
        self.enc, self.dec = nn.Conv2d(1, 2, 2, stride=2), nn.ConvTranspose2d(2, 1, 2, stride=2)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)

    def make_scheduler(self, num_steps):
        scheduler = DDIMScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_steps)
        return scheduler

    def predict_noise(self, z, t, c, guidance=1.0):
        def eps(cond):
            return self.conv2(torch.tanh(self.conv1(z + self.cond(cond)[:, :, None, None] + float(t) / 100)))

        eps_c = eps(c)
        if guidance == 1.0:
            return eps_c
        eps_u = eps(self.null_condition(z.shape[0]))
        return eps_u + guidance * (eps_c - eps_u)

    def condition(self, labels):
        return self.embed(labels)

    def null_condition(self, batch):
        return self.embed.weight[-1].expand(batch, -1)

    def encode(self, images, sample=False, generator=None):
        assert images.shape[-1] == SIDE and images.min() >= -1 and images.max() <= 1
        return self.enc(images)

    def decode(self, latents):
        return torch.tanh(self.dec(latents))


class ToyNet(nn.Module):
    def __init__(self, generator):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.head = nn.Linear(3 * 4 * 4, NUM_CLASSES)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)

    def features(self, x):
        return nn.functional.avg_pool2d(torch.relu(self.conv(x)), 2).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def _real():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (NUM_CLASSES * 4, 1, SIDE, SIDE), generator=g, dtype=torch.uint8)
    labels = torch.arange(NUM_CLASSES * 4) % NUM_CLASSES
    return TensorBundle({"images": images, "labels": labels}, {"class_names": ["a", "b", "c"]})


def _config(**overrides):
    base = dict(
        objective="dm",
        space="latent",
        ipc=2,
        iterations=2,
        dsa_strategy="none",
        sampler=dict(num_steps=3, guidance=2.0, eta=0.5, chunk_size=4),
        dm=dict(batch_real=8),
    )
    base.update(overrides)
    return build(LD3MConfig, base, "ld3m")


def _run(config, prior=None, **kwargs):
    return distill_ld3m(_real(), prior if prior is not None else ToyPrior(), config, net_factory=ToyNet, **kwargs)


def test_init_encodes_a_seeded_real_image_of_each_slot_class():
    real, prior = RealImages.from_bundle(_real()), ToyPrior()
    config = _config()
    state = init_state(real, prior, config)
    assert state.labels.tolist() == [0, 0, 1, 1, 2, 2]
    with torch.no_grad():
        for z, label in zip(state.latents, state.labels, strict=True):
            pool = prior.encode(to_signed(real.by_class[label].float() / 255))
            assert any(torch.allclose(z, candidate, atol=1e-6) for candidate in pool)
        torch.testing.assert_close(state.conditions, prior.condition(state.labels))
    assert state.noise.start.shape == (6, 2, 4, 4) and state.noise.steps.shape == (6, 3, 2, 4, 4)
    again = init_state(real, prior, config)
    assert torch.equal(again.latents, state.latents) and torch.equal(again.noise.steps, state.noise.steps)
    other = init_state(real, prior, _config(seed=1))
    assert not torch.equal(other.latents, state.latents)
    noise_init = init_state(real, prior, _config(init="noise"))
    assert noise_init.latents.shape == state.latents.shape and not torch.equal(noise_init.latents, state.latents)


def test_latent_space_run_updates_z_and_c_only_and_returns_a_distilled_set():
    prior, metrics = ToyPrior(), []
    result = _run(_config(), prior=prior, on_step=metrics.append)
    assert [m["iteration"] for m in metrics] == [0, 1]
    for m in metrics:
        assert m["regeneration_max_abs_diff"] == 0.0  # pass 2 regenerates pass 1's images exactly
        assert m["grad_norm_latents"] > 0 and m["grad_norm_conditions"] > 0 and m["loss"] > 0
        assert m["time_s"] > 0 and m["peak_memory_bytes"] > 0 and m["lr"] == 1.0  # the published code's lr_w, DM
    assert all(p.grad is None for p in prior.parameters())
    init = init_state(RealImages.from_bundle(_real()), ToyPrior(), _config())
    assert not torch.equal(result.state["latents"], init.latents)
    assert not torch.equal(result.state["conditions"], init.conditions)
    assert torch.equal(result.state["noise.steps"], init.noise.steps)  # stored noise never changes
    images = result.images
    assert images["images"].dtype == torch.float32 and images["images"].shape == (6, 1, SIDE, SIDE)
    assert images["images"].min() >= 0 and images["images"].max() <= 1
    assert images["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    meta = images.meta
    assert (meta["method"], meta["ipc"], meta["objective"], meta["space"], meta["num_steps"]) == (
        "ld3m",
        2,
        "dm",
        "latent",
        3,
    )
    assert meta["class_names"] == ["a", "b", "c"] and meta["num_classes"] == 3 and meta["variant"] == "reference"


@pytest.mark.parametrize("space", ["condition_only", "decoder_only", "no_residual", "pixel"])
def test_ablation_spaces_learn_what_they_name(space):
    config = _config(space=space, iterations=1)
    init = init_state(RealImages.from_bundle(_real()), ToyPrior(), config)
    result = _run(config)
    state = result.state
    if space == "condition_only":
        assert torch.equal(state["latents"], init.latents) and not torch.equal(state["conditions"], init.conditions)
        assert result.images.meta["variant"] == "none"
    if space == "decoder_only":
        assert "conditions" not in state and "noise.start" not in state
        assert not torch.equal(state["latents"], init.latents) and result.images.meta["num_steps"] == 0
    if space == "no_residual":
        assert result.images.meta["variant"] == "none"
    if space == "pixel":
        assert result.images.meta["method"] == "dm" and not torch.equal(state["images"], init.images)
        assert init.images.shape == (6, 1, SIDE, SIDE)


def test_pixel_space_needs_no_prior():
    result = distill_ld3m(_real(), None, _config(space="pixel", iterations=1), net_factory=ToyNet)
    assert result.images["images"].shape == (6, 1, SIDE, SIDE)
    with pytest.raises(ValueError, match="needs a prior"):
        distill_ld3m(_real(), None, _config(iterations=1), net_factory=ToyNet)


def test_resume_gives_the_same_bytes_as_an_uninterrupted_run(tmp_path):
    """Also covers MTT: syn_lr and every momentum buffer are part of the checkpoint."""
    size = flatten_parameters(ToyNet(torch.Generator().manual_seed(0))).numel()
    g = torch.Generator().manual_seed(4)
    experts = [torch.randn((4, size), generator=g) * 0.3 for _ in range(2)]
    config = dict(
        objective="mtt",
        lr=1e-2,
        mtt=dict(expert_epochs=1, max_start_epoch=2, syn_steps=2, lr_lr=1e-3),
        checkpoint_every=2,
    )
    whole = _run(_config(iterations=3, **config), experts=experts, checkpoint_dir=tmp_path / "a")
    _run(_config(iterations=2, **config), experts=experts, checkpoint_dir=tmp_path / "b")
    assert load_checkpoint(tmp_path / "b")[0].step == 2
    resumed = _run(_config(iterations=3, **config), experts=experts, checkpoint_dir=tmp_path / "b")
    assert whole.state.tensors.keys() == resumed.state.tensors.keys()
    for name, tensor in whole.state.tensors.items():
        assert torch.equal(tensor, resumed.state[name]), name
    assert torch.equal(whole.images["images"], resumed.images["images"])
    assert float(whole.state["extra.syn_lr"]) != 1e-2  # syn_lr was learned
    # the set carries it in its meta: MTT's evaluation (protocol dc_reference) trains with it
    assert whole.images.meta["syn_lr"] == float(whole.state["extra.syn_lr"]) == resumed.images.meta["syn_lr"]
    saved = (tmp_path / "a" / CHECKPOINT_FILE).read_bytes()
    assert saved == (tmp_path / "b" / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(ValueError, match="different settings"):
        _run(_config(iterations=5, seed=3, **config), experts=experts, checkpoint_dir=tmp_path / "b")


class FragilePrior(ToyPrior):
    """Decodes to NaN once latents leave any sane range, like a real decoder overflowing."""

    def decode(self, latents):
        blown = latents.detach().abs().amax() > 1e3
        return super().decode(latents) + (float("nan") if blown else 0.0)


def test_divergence_stops_naming_iteration_and_lr_and_keeps_last_good_checkpoint(tmp_path):
    _run(_config(iterations=1, checkpoint_every=1), prior=FragilePrior(), checkpoint_dir=tmp_path)
    good = (tmp_path / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(DivergenceError, match=r"iteration 2 .*loss is nan.*lr=1e\+08.*checkpoint.*after 2 iterations"):
        _run(_config(iterations=4, checkpoint_every=1, lr=1e8), prior=FragilePrior(), checkpoint_dir=tmp_path)
    assert load_checkpoint(tmp_path)[0].step == 2  # iteration 1 (the first with lr=1e8) still looked finite
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() != good


def test_dc_outer_loops_train_the_net_between_rounds():
    metrics = []
    config = _config(objective="dc", iterations=1, dc=dict(batch_real=8, outer_loop=2, inner_loop=1))
    _run(config, on_step=metrics.append)
    assert metrics[0]["rounds"] == 2 and metrics[0]["loss"] > 0


def test_config_validation():
    with pytest.raises(ConfigError, match=r"unknown key ld3m.bogus; valid keys: checkpoint_every, dc, device"):
        build(LD3MConfig, {"bogus": 1}, "ld3m")
    with pytest.raises(ConfigError, match=r"unknown key ld3m.sampler.steps; valid keys: backprop, chunk_size"):
        build(LD3MConfig, {"sampler": {"steps": 3}}, "ld3m")
    with pytest.raises(ConfigError, match=r"ld3m.space='w_plus' is not one of latent, pixel, decoder_only"):
        _config(space="w_plus")
    with pytest.raises(ValueError, match="needs expert trajectories"):
        _run(_config(objective="mtt", iterations=1))
    assert LD3MConfig(objective="mtt").learning_rate() == 1000.0  # the published LD3M code's lr_w
    assert LD3MConfig(objective="dc", space="pixel").learning_rate() == 0.1


def test_with_the_project_nets_and_dsa():
    """Integration: the shared ConvNet registry and DSA drive the loop (pixel + latent, DC)."""
    pytest.importorskip("diffdistill.nets")
    metrics = []
    config = _config(
        objective="dc",
        iterations=1,
        dsa_strategy="color_crop_cutout_flip_scale_rotate",
        ipc=1,
        dc=dict(batch_real=8, net="convnet_d3"),
    )
    distill_ld3m(_real(), ToyPrior(), config, on_step=metrics.append)
    assert metrics[0]["grad_norm_latents"] > 0


def _tiny_latent_prior():
    from diffdistill.prior import AutoencoderConfig, DenoiserConfig, LatentPrior
    from diffdistill.prior.train import build_autoencoder, build_denoiser

    g = torch.Generator().manual_seed(0)
    vae = build_autoencoder(
        AutoencoderConfig(block_out_channels=(8, 8), norm_num_groups=4, latent_channels=2), 1, SIDE, g
    )
    unet = build_denoiser(DenoiserConfig(block_out_channels=(8, 16), attention_head_dim=8, norm_num_groups=4), 2, 4, g)
    config = dict(DDIMScheduler(num_train_timesteps=100).config)
    return LatentPrior(vae, unet, config, label_table=torch.randn((NUM_CLASSES + 1, 32), generator=g))


def test_with_the_project_latent_prior():
    """Integration: a real (tiny) LatentPrior — diffusers AutoencoderKL + UNet2DModel — through the loop.
    Replay, checkpointed and plain backprop give the same update; replayed steps recompute pass 1
    exactly; the prior's weights get no gradient."""
    pytest.importorskip("diffdistill.prior")
    results, metrics = {}, {}
    for mode in ("replay", "checkpoint", "plain"):
        prior = _tiny_latent_prior()
        config = _config(iterations=1, sampler=dict(num_steps=3, guidance=2.0, eta=0.5, chunk_size=4, backprop=mode))
        results[mode] = distill_ld3m(
            _real(), prior, config, net_factory=ToyNet, on_step=lambda m, k=mode: metrics.setdefault(k, m)
        )
        assert all(p.grad is None and not p.requires_grad for p in prior.parameters())
        assert metrics[mode]["regeneration_max_abs_diff"] == 0.0 and metrics[mode]["grad_norm_latents"] > 0
    for mode in ("checkpoint", "plain"):
        for name in ("latents", "conditions"):
            torch.testing.assert_close(results[mode].state[name], results["replay"].state[name], rtol=1e-5, atol=1e-6)
