"""LatentPrior: round trips per backend, continuous conditioning, guidance, gradients, input errors."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from diffusers import DDIMScheduler, DiTTransformer2DModel, UNet2DModel

from diffdistill.diffusion import ddim_sample
from diffdistill.prior import SUBSETS, LatentPrior, imagenet_class_ids, load_components, load_dit_folder
from tests.prior.tiny import SCHEDULE, build_prior, tiny_dit, tiny_images, tiny_unet, tiny_vae

BACKENDS = [("kl", "unet_identity"), ("tiny", "unet_embedding"), ("vq", "dit_per_block"), ("kl", "dit_shared")]


def _outputs(prior: LatentPrior, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        z = prior.encode(images)
        labels = torch.arange(images.shape[0]) % prior.num_classes
        c = prior.condition(labels)
        t = torch.tensor([0, 250, 500, 750, 999])[: images.shape[0]]
        return [z, prior.decode(z), c, prior.predict_noise(z, t, c, 2.5), prior.null_condition(2)]


@pytest.mark.parametrize(("vae_kind", "denoiser_kind"), BACKENDS)
def test_save_load_round_trip_gives_identical_outputs(tmp_path, vae_kind: str, denoiser_kind: str) -> None:
    prior = build_prior(vae_kind, denoiser_kind, class_ids=[2, 0], class_names=["b", "a"], default_guidance=2.0)
    images = tiny_images()
    before = _outputs(prior, images)
    prior.save_pretrained(tmp_path / "prior")
    assert sorted(p.name for p in (tmp_path / "prior").iterdir()) == [
        "adapter_config.json", "denoiser", "label_table.safetensors", "scheduler", "vae"]
    loaded = LatentPrior.from_pretrained(tmp_path / "prior")
    for a, b in zip(before, _outputs(loaded, images), strict=True):
        assert torch.equal(a, b)
    assert loaded.class_ids.tolist() == [2, 0] and loaded.class_names == ["b", "a"]
    assert loaded.default_guidance == 2.0 and loaded.conditioning == prior.conditioning
    assert (loaded.latent_shape, loaded.image_size, loaded.image_channels) == ((2, 4, 4), 8, 1)
    assert loaded.scaling_factor == prior.scaling_factor and loaded.shift_factor == prior.shift_factor


def test_encode_decode_apply_the_vae_scaling() -> None:
    prior = build_prior("kl", "unet_identity")
    images = tiny_images()
    with torch.no_grad():
        mean = prior.vae.encode(images).latent_dist.mean
        torch.testing.assert_close(prior.encode(images), (mean - 0.2) * 1.7)
        z = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(prior.decode(z), prior.vae.decode(z / 1.7 + 0.2).sample)
        a = prior.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
        b = prior.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, prior.encode(images).detach())


@pytest.mark.parametrize("denoiser_kind", ["unet_embedding", "dit_shared", "dit_per_block"])
def test_continuous_condition_equals_the_integer_label_path(denoiser_kind: str) -> None:
    """c = table[label] fed as a float reproduces the vanilla model's own label embedding."""
    prior = build_prior("kl", denoiser_kind, class_ids=[1, 2])
    reference = (tiny_unet("embedding") if denoiser_kind == "unet_embedding"
                 else tiny_dit(shared=denoiser_kind == "dit_shared"))
    z = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 300, 600, 900])
    labels = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        expected = reference(z, t, class_labels=torch.tensor([1, 2, 2, 1])).sample[:, :2]
        got = prior.denoise(z, t, prior.condition(labels))
        null = reference(z, t, class_labels=torch.full((4,), 3)).sample[:, :2]
        got_null = prior.denoise(z, t, prior.null_condition(4))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_null, null)
    expected_dim = {"unet_embedding": 32, "dit_shared": 16, "dit_per_block": 32}[denoiser_kind]
    assert prior.cond_dim == expected_dim


@pytest.mark.parametrize("denoiser_kind", ["unet_embedding", "dit_per_block"])
def test_saved_denoiser_is_a_plain_diffusers_model_carrying_the_label_table(tmp_path, denoiser_kind: str) -> None:
    prior = build_prior("kl", denoiser_kind)
    with torch.no_grad():
        prior.label_table.weight.mul_(1.5).add_(0.25)  # e.g. after fine-tuning the table
    prior.save_pretrained(tmp_path)
    cls = UNet2DModel if denoiser_kind == "unet_embedding" else DiTTransformer2DModel
    plain = cls.from_pretrained(tmp_path / "denoiser", low_cpu_mem_usage=False).eval()
    z = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500, 990])
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        torch.testing.assert_close(plain(z, t, class_labels=labels).sample[:, :2],
                                   prior.denoise(z, t, prior.condition(labels)))


def test_guidance_one_is_conditional_and_cfg_is_one_batched_forward() -> None:
    prior = build_prior("kl", "dit_per_block")
    z = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    c = prior.condition(torch.tensor([0, 1, 2]))
    calls = []
    prior.denoiser.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        cond = prior.denoise(z, 400, c)
        uncond = prior.denoise(z, 400, prior.null_condition(3))
        calls.clear()
        assert torch.equal(prior.predict_noise(z, 400, c, 1.0), cond)
        guided = prior.predict_noise(z, 400, c, 3.0)
    assert calls == [3, 6]
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-6)


def test_gradients_flow_from_decoded_images_to_start_noise_and_condition() -> None:
    prior = build_prior("kl", "unet_identity").requires_grad_(False)
    z_T = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    c = prior.condition(torch.tensor([0, 1])).detach().requires_grad_(True)
    images = prior.decode(ddim_sample(prior, z_T, c, num_steps=3, guidance=2.0))
    images.square().mean().backward()
    for grad in (z_T.grad, c.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_dit_folder_layout_with_imagenet_class_mapping(tmp_path) -> None:
    """facebook/DiT-XL-2-256 layout: transformer/, vae/, scheduler/; 1000 classes + null row 1000."""
    dit = tiny_dit(shared=True, num_classes=1000)
    dit.save_pretrained(tmp_path / "transformer")
    tiny_vae("kl").save_pretrained(tmp_path / "vae")
    DDIMScheduler(**SCHEDULE).save_pretrained(tmp_path / "scheduler")
    ids = imagenet_class_ids("imagenette")
    prior = load_dit_folder(tmp_path, class_ids=ids)
    assert prior.num_classes == 10 and prior.learned_sigma and prior.cond_dim == 16
    table = dit.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight
    torch.testing.assert_close(prior.condition(torch.arange(10)), table[ids])
    torch.testing.assert_close(prior.null_condition(1), table[1000:1001])
    z = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = dit(z, torch.tensor([5, 5]), class_labels=torch.tensor([ids[3], ids[7]])).sample[:, :2]
        torch.testing.assert_close(prior.predict_noise(z, 5, prior.condition(torch.tensor([3, 7]))), expected)
    assert LatentPrior.from_pretrained(tmp_path).num_classes == 1000  # the bare folder also loads


def test_imagenet_subset_table_is_well_formed() -> None:
    assert {"imagenette", "imagewoof", "imagenet-a", "imagenet-e", "imagenet-birds"} <= set(SUBSETS)
    for name, rows in SUBSETS.items():
        assert len(rows) == 10, name
        assert all(w.startswith("n") and len(w) == 9 and 0 <= i < 1000 for w, i, _ in rows)
        assert len({i for _, i, _ in rows}) == 10
    assert SUBSETS["imagenette"][0] == ("n01440764", 0, "tench")
    with pytest.raises(ValueError, match="imagenette"):
        imagenet_class_ids("imagenet-z")


def test_v_prediction_output_is_converted_to_eps() -> None:
    vae, unet = tiny_vae("kl"), tiny_unet("embedding")
    reference = copy.deepcopy(unet)
    prior = load_components(vae, unet, dict(SCHEDULE, prediction_type="v_prediction"))
    z = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([100, 700])
    alpha = DDIMScheduler(**SCHEDULE).alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        v = reference(z, t, class_labels=torch.tensor([0, 1])).sample
        torch.testing.assert_close(prior.predict_noise(z, t, prior.condition(torch.tensor([0, 1]))),
                                   alpha.sqrt() * v + (1 - alpha).sqrt() * z)
    assert prior.scheduler_config["prediction_type"] == "epsilon"


def test_make_scheduler_is_ddim_without_clipping_and_final_alpha_one() -> None:
    prior = build_prior("kl", "unet_identity")
    scheduler = prior.make_scheduler(50)
    assert isinstance(scheduler, DDIMScheduler)
    assert scheduler.config.clip_sample is False and float(scheduler.final_alpha_cumprod) == 1.0
    assert scheduler.timesteps[0] == 980 and scheduler.timesteps[-1] == 0
    with pytest.raises(ValueError, match="num_steps"):
        prior.make_scheduler(0)


# ----------------------------------------------------------------------------- errors
def test_missing_component_is_named(tmp_path) -> None:
    build_prior("kl", "unet_identity").save_pretrained(tmp_path)
    shutil.rmtree(tmp_path / "denoiser")
    with pytest.raises(ValueError, match="denoiser"):
        LatentPrior.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        LatentPrior.from_pretrained(tmp_path / "nowhere")
    dit_dir = tmp_path / "dit"
    tiny_dit(shared=True).save_pretrained(dit_dir / "transformer")
    with pytest.raises(ValueError, match="vae"):
        load_dit_folder(dit_dir)


def test_image_errors_say_what_to_change() -> None:
    prior = build_prior("kl", "unet_identity")
    with pytest.raises(ValueError, match="not divisible"):
        prior.encode(torch.zeros(1, 1, 7, 7))
    with pytest.raises(ValueError, match="resize the data to 8"):
        prior.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        prior.encode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="to_signed"):
        prior.encode(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="latents"):
        prior.decode(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="sample=True"):
        build_prior("tiny", "unet_embedding").encode(tiny_images(), sample=True)


def test_component_and_class_mapping_errors() -> None:
    with pytest.raises(ValueError, match="channel mismatch"):
        load_components(tiny_vae("kl", latent_channels=3), tiny_unet("embedding"))
    with pytest.raises(ValueError, match="label_table is required"):
        load_components(tiny_vae("kl"), tiny_unet("identity"))
    with pytest.raises(ValueError, match="label_table width"):
        load_components(tiny_vae("kl"), tiny_unet("identity"), label_table=torch.zeros(4, 5))
    with pytest.raises(ValueError, match="outside the prior's classes"):
        build_prior("kl", "unet_embedding", class_ids=[0, 3])  # 3 is the null row
    with pytest.raises(ValueError, match="same prior class"):
        build_prior("kl", "unet_embedding", class_ids=[1, 1])
    prior = build_prior("kl", "unet_embedding")
    with pytest.raises(ValueError, match="class_ids"):
        prior.check_dataset(num_classes=10)
    with pytest.raises(ValueError, match="labels must lie"):
        prior.condition(torch.tensor([3]))
    with pytest.raises(ValueError, match="cond_dim"):
        prior.predict_noise(torch.zeros(2, 2, 4, 4), 10, torch.zeros(2, 7))
    prior.check_dataset(num_classes=3, image_size=8, channels=1)


def test_adapter_config_is_json_with_the_mapping(tmp_path) -> None:
    build_prior("vq", "dit_shared", class_ids=[2, 1, 0]).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["class_ids"] == [2, 1, 0] and config["vae_class"] == "VQModel"
    assert config["denoiser_class"] == "DiTTransformer2DModel" and config["conditioning"] == "dit_shared"


def test_data_channels_put_grayscale_through_an_rgb_vae(tmp_path) -> None:
    """Fashion-MNIST through TAEF2, in miniature: the one channel repeated in, the channel mean out."""
    rgb = LatentPrior(tiny_vae("kl", channels=3), tiny_dit(shared=True), dict(SCHEDULE))
    gray = LatentPrior(copy.deepcopy(rgb.vae), copy.deepcopy(rgb.denoiser), dict(SCHEDULE), data_channels=1)
    images = tiny_images()  # 5×1×8×8
    with torch.no_grad():
        z = gray.encode(images)
        torch.testing.assert_close(z, rgb.encode(images.repeat(1, 3, 1, 1)))
        decoded = gray.decode(z)
        torch.testing.assert_close(decoded, rgb.decode(z).mean(dim=1, keepdim=True))
    assert decoded.shape == images.shape and (gray.image_channels, rgb.image_channels) == (1, 3)
    gray.check_dataset(channels=1)
    with pytest.raises(ValueError, match="3 channels but the prior's VAE takes 1"):
        gray.encode(images.repeat(1, 3, 1, 1))
    latents = z.clone().requires_grad_(True)  # LD3M back-props dL/dX through decode
    gray.decode(latents).sum().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    gray.save_pretrained(tmp_path / "prior")
    loaded = LatentPrior.from_pretrained(tmp_path / "prior")
    assert loaded.image_channels == 1
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), decoded)
    assert LatentPrior(rgb.vae, rgb.denoiser, dict(SCHEDULE), data_channels=3).image_channels == 3  # no conversion
    with pytest.raises(ValueError, match="data_channels=2"):
        LatentPrior(rgb.vae, rgb.denoiser, dict(SCHEDULE), data_channels=2)


def test_data_size_resizes_to_the_native_size_and_back(tmp_path) -> None:
    """128-px data through a 256-px DiT, in miniature: 4-px data through an 8-px prior."""
    import torch.nn.functional as F

    native = build_prior("kl", "dit_shared")
    prior = build_prior("kl", "dit_shared", data_size=4)
    prior.load_state_dict(native.state_dict())
    small = F.interpolate(tiny_images(), size=(4, 4), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        z = prior.encode(small)
        upsampled = F.interpolate(small, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
        torch.testing.assert_close(z, native.encode(upsampled))  # the denoiser sees native-size latents
        assert tuple(z.shape[1:]) == native.latent_shape
        decoded = prior.decode(z)
        expected = F.interpolate(native.decode(z), size=(4, 4), mode="bilinear", antialias=True, align_corners=False)
        torch.testing.assert_close(decoded, expected)
    assert (prior.data_size, prior.image_size) == (4, 8)
    prior.check_dataset(image_size=4)
    with pytest.raises(ValueError, match="set up for 4-px data"):
        prior.check_dataset(image_size=8)
    with pytest.raises(ValueError, match="set up for 4-px data"):
        prior.encode(tiny_images())
    # gradients flow through the resize (LD3M back-props dL/dX through decode)
    latents = z.clone().requires_grad_(True)
    prior.decode(latents).sum().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    prior.save_pretrained(tmp_path / "prior")
    loaded = LatentPrior.from_pretrained(tmp_path / "prior")
    assert loaded.data_size == 4 and json.loads((tmp_path / "prior" / "adapter_config.json").read_text())["data_size"] == 4
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), decoded)
    assert build_prior("kl", "dit_shared", data_size=8).data_size == 8  # the native size is no resize
    with pytest.raises(ValueError, match="data_size"):
        build_prior("kl", "dit_shared", data_size=0)
