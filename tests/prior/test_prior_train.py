"""Prior training: exact resume, determinism, data-derived latent scaling, fine-tuning, quality functions."""

from __future__ import annotations

import math

import pytest
import torch

from diffdistill.prior import (
    AutoencoderConfig,
    AutoencoderTrainConfig,
    DenoiserConfig,
    DenoiserTrainConfig,
    PriorTrainConfig,
    class_fidelity,
    encode_dataset,
    reconstruction_psnr,
    train_prior,
)
from diffdistill.prior.train import init_weights_, standardise_latents
from tests.prior.tiny import tiny_vae


def tiny_config(**overrides) -> PriorTrainConfig:
    config = PriorTrainConfig(
        autoencoder=AutoencoderConfig(block_out_channels=(8, 8), norm_num_groups=4, latent_channels=2),
        denoiser=DenoiserConfig(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=4),
        autoencoder_train=AutoencoderTrainConfig(steps=4, batch_size=8),
        denoiser_train=DenoiserTrainConfig(steps=6, batch_size=8, warmup_steps=2, lr_schedule="cosine"),
        checkpoint_every=2, log_every=1)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def tiny_data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    images = (torch.rand(n, 1, 8, 8, generator=g) * 0.5 + labels.view(-1, 1, 1, 1) * 0.25) * 2 - 1
    return images, labels


def state_of(prior) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in prior.state_dict().items()}


class Interrupt(Exception):
    pass


def test_resumed_training_gives_the_bytes_of_an_uninterrupted_run(tmp_path) -> None:
    images, labels = tiny_data()
    logs: list[tuple[int, dict]] = []
    reference = train_prior(images, labels, tiny_config(), checkpoint_dir=tmp_path / "a",
                            on_step=lambda step, metrics: logs.append((step, metrics)))
    assert [s for s, m in logs if "autoencoder/loss" in m] == [1, 2, 3, 4]
    assert [s for s, m in logs if "denoiser/loss" in m] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(v) for _, m in logs for v in m.values())

    kills = {("autoencoder/loss", 3), ("denoiser/loss", 5)}  # die after the step-2 / step-4 checkpoints
    runs: list[list[tuple[str, int]]] = []

    def dying(step: int, metrics: dict) -> None:
        runs[-1].append((next(iter(metrics)).split("/")[0], step))
        for key in list(kills):
            if key[0] in metrics and key[1] == step:
                kills.discard(key)
                raise Interrupt
    for _ in range(2):
        runs.append([])
        with pytest.raises(Interrupt):
            train_prior(images, labels, tiny_config(), checkpoint_dir=tmp_path / "b", on_step=dying)
    runs.append([])
    resumed = train_prior(images, labels, tiny_config(), checkpoint_dir=tmp_path / "b", on_step=dying)
    assert runs == [[("autoencoder", 1), ("autoencoder", 2), ("autoencoder", 3)],
                    [("autoencoder", 3), ("autoencoder", 4)] + [("denoiser", s) for s in range(1, 6)],
                    [("denoiser", 5), ("denoiser", 6)]]  # each run restarts from the last checkpoint
    assert not kills
    expected, got = state_of(reference), state_of(resumed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert resumed.scaling_factor == reference.scaling_factor
    # a finished checkpoint directory returns the same prior without training again
    again = train_prior(images, labels, tiny_config(), checkpoint_dir=tmp_path / "b",
                        on_step=lambda *_: pytest.fail("no step should run"))
    assert all(torch.equal(expected[k], v) for k, v in state_of(again).items())


def test_checkpoint_of_other_settings_is_refused(tmp_path) -> None:
    images, labels = tiny_data()
    train_prior(images, labels, tiny_config(), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="fresh checkpoint_dir"):
        train_prior(images, labels, tiny_config(seed=1), checkpoint_dir=tmp_path)


def test_a_constant_rate_run_trains_on_from_a_shorter_one(tmp_path) -> None:
    images, labels = tiny_data()
    constant = {"denoiser_train": DenoiserTrainConfig(steps=6, batch_size=8, warmup_steps=2)}
    straight = state_of(train_prior(images, labels, tiny_config(**constant)))
    short = tiny_config(denoiser_train=DenoiserTrainConfig(steps=3, batch_size=8, warmup_steps=2))
    train_prior(images, labels, short, checkpoint_dir=tmp_path)
    longer = state_of(train_prior(images, labels, tiny_config(**constant), checkpoint_dir=tmp_path))
    assert all(torch.equal(straight[k], longer[k]) for k in straight)
    with pytest.raises(ValueError, match="past the 3 asked"):
        train_prior(images, labels, short, checkpoint_dir=tmp_path)
    # under a cosine schedule the budget shapes every step: a checkpoint of another budget is refused
    cosine = tmp_path / "cosine"
    train_prior(images, labels, tiny_config(), checkpoint_dir=cosine)
    with pytest.raises(ValueError, match="fresh checkpoint_dir"):
        train_prior(images, labels, tiny_config(denoiser_train=DenoiserTrainConfig(
            steps=8, batch_size=8, warmup_steps=2, lr_schedule="cosine")), checkpoint_dir=cosine)


def test_same_seed_same_bytes_other_seed_differs() -> None:
    images, labels = tiny_data()
    a, b = (state_of(train_prior(images, labels, tiny_config())) for _ in range(2))
    c = state_of(train_prior(images, labels, tiny_config(seed=7)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_latent_scaling_comes_from_the_training_latents() -> None:
    images, labels = tiny_data()
    prior = train_prior(images, labels, tiny_config())
    latents = encode_dataset(prior, images).double()
    assert float(latents.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(latents.pow(2).mean().sqrt()) == pytest.approx(1.0, abs=1e-5)
    assert prior.shift_factor != 0.0 and prior.scaling_factor != 1.0
    assert prior.num_classes == 3 and prior.default_guidance == PriorTrainConfig().default_guidance
    assert prior.latent_shape == (2, 4, 4) and prior.image_size == 8


def test_fine_tune_updates_denoiser_and_table_only() -> None:
    images, labels = tiny_data()
    prior = train_prior(images, labels, tiny_config())
    vae_before = {k: v.clone() for k, v in prior.vae.state_dict().items()}
    table_before = prior.label_table.weight.detach().clone()
    unet_before = {k: v.clone() for k, v in prior.denoiser.state_dict().items()}
    tuned = train_prior(images, labels, tiny_config(mode="fine_tune", seed=3), prior=prior, num_classes=3)
    assert tuned is prior
    assert all(torch.equal(vae_before[k], v) for k, v in prior.vae.state_dict().items())
    assert not torch.equal(table_before, prior.label_table.weight)
    assert any(not torch.equal(unet_before[k], v) for k, v in prior.denoiser.state_dict().items())
    with pytest.raises(ValueError, match="needs prior"):
        train_prior(images, labels, tiny_config(mode="fine_tune"))
    with pytest.raises(ValueError, match="classes"):
        train_prior(images, labels, tiny_config(mode="fine_tune"), prior=prior, num_classes=5)


@pytest.mark.parametrize("native_size", [None, 16])
def test_a_pretrained_vae_stays_frozen_and_only_the_denoiser_learns(native_size) -> None:
    images, labels = tiny_data()  # 8 px, 1 channel
    vae = tiny_vae("tiny")  # AutoencoderTiny, factor 2
    weights = {k: v.clone() for k, v in vae.state_dict().items()}
    prior = train_prior(images, labels, tiny_config(), vae=vae, native_size=native_size, num_classes=3)
    assert prior.vae is vae and all(torch.equal(weights[k], v) for k, v in vae.state_dict().items())
    native = native_size or 8
    assert (prior.image_size, prior.data_size, prior.latent_shape) == (native, 8, (2, native // 2, native // 2))
    latents = encode_dataset(prior, images).double()  # standardised as the prior encodes (resized when native 16)
    again = tiny_vae("tiny")
    probe = train_prior(images, labels, tiny_config(denoiser_train=DenoiserTrainConfig(steps=0)), vae=again,
                        native_size=native_size, num_classes=3)
    assert torch.equal(standardise_latents(probe, images, True), encode_dataset(probe, images))  # what it trains on
    assert float(latents.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(latents.pow(2).mean().sqrt()) == pytest.approx(1.0, abs=1e-5)
    assert prior.decode(latents[:2].float()).shape == (2, 1, 8, 8)
    fresh = train_prior(images, labels, tiny_config(), vae=tiny_vae("tiny"), native_size=native_size, num_classes=3)
    a, b = state_of(prior), state_of(fresh)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_grayscale_data_trains_over_a_pretrained_rgb_vae() -> None:
    images, labels = tiny_data()  # 8 px, 1 channel
    prior = train_prior(images, labels, tiny_config(), vae=tiny_vae("tiny", channels=3), num_classes=3)
    assert prior.image_channels == 1 and prior.vae.config.in_channels == 3
    assert prior.decode(encode_dataset(prior, images[:2]).float()).shape == (2, 1, 8, 8)


def test_native_size_needs_a_pretrained_vae_that_divides_it() -> None:
    images, labels = tiny_data()
    with pytest.raises(ValueError, match="native_size applies to a pretrained"):
        train_prior(images, labels, tiny_config(), native_size=16)
    with pytest.raises(ValueError, match="multiple"):
        train_prior(images, labels, tiny_config(), vae=tiny_vae("tiny"), native_size=9)


def test_config_from_nested_dict_and_validation() -> None:
    config = PriorTrainConfig.from_dict({"seed": 4, "denoiser": {"block_out_channels": [16, 32]},
                                         "denoiser_train": {"steps": 9}})
    assert config.seed == 4 and config.denoiser.block_out_channels == (16, 32)
    assert config.denoiser_train.steps == 9 and config.autoencoder_train.steps == AutoencoderTrainConfig().steps
    assert PriorTrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown key prior.train.denoiser_train.stepz; valid keys: batch_size"):
        PriorTrainConfig.from_dict({"denoiser_train": {"stepz": 1}})
    images, labels = tiny_data()
    with pytest.raises(ValueError, match="mode"):
        train_prior(images, labels, tiny_config(mode="pretrain"))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        train_prior(images * 3, labels, tiny_config())


def test_init_weights_is_a_function_of_the_generator() -> None:
    from tests.prior.tiny import tiny_unet
    a, b = tiny_unet("identity"), tiny_unet("identity")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    init_weights_(b, torch.Generator().manual_seed(99))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_quality_functions_measure_what_they_say() -> None:
    images, labels = tiny_data()
    prior = train_prior(images, labels, tiny_config())
    with torch.no_grad():
        recon = prior.decode(prior.encode(images)).clamp(-1, 1)
    mse = float((recon.double() - images.double()).pow(2).mean())
    assert reconstruction_psnr(prior, images, batch_size=7) == pytest.approx(10 * math.log10(4 / mse), rel=1e-6)

    seen = []

    def always_one(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return torch.ones(x.shape[0], dtype=torch.long)

    result = class_fidelity(prior, always_one, 4, 2.0, 3, torch.Generator().manual_seed(0), batch_size=5)
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["per_class"] == [0.0, 1.0, 0.0]
    batch = torch.cat(seen)
    assert batch.shape == (12, 1, 8, 8) and float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    logits = class_fidelity(prior, lambda x: torch.eye(3)[torch.zeros(x.shape[0], dtype=torch.long)], 2, 1.0, 2)
    assert logits["per_class"] == [1.0, 0.0, 0.0]
