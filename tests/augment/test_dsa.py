"""DSA: each family does what it says, siamese sharing, per-sample draws, gradients, seeding."""

from __future__ import annotations

import math

import pytest
import torch

from diffdistill.augment import DEFAULT_STRATEGY, DSA, FAMILIES, DSAParams, dsa_strategy_for


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(batch: int = 4, channels: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=_gen(seed))


def _params(family: str, **values: float | bool) -> DSAParams:
    return DSAParams(family, {k: torch.tensor([v]) for k, v in values.items()})


def test_default_strategy_and_digit_datasets_drop_flip() -> None:
    assert DSA().families == FAMILIES and DEFAULT_STRATEGY == "color_crop_cutout_flip_scale_rotate"
    assert "flip" not in dsa_strategy_for("digits") and "flip" not in dsa_strategy_for("FashionMNIST")
    assert dsa_strategy_for("digits") == "color_crop_cutout_scale_rotate"
    assert dsa_strategy_for("cifar10") == DEFAULT_STRATEGY and dsa_strategy_for(None) == DEFAULT_STRATEGY
    with pytest.raises(ValueError, match="unknown families"):
        DSA("color_blur")


def test_one_family_per_call_drawn_from_the_strategy() -> None:
    dsa, generator = DSA("crop_flip_rotate"), _gen()
    seen = [dsa.sample_params(8, generator).family for _ in range(200)]
    assert set(seen) == {"crop", "flip", "rotate"}
    assert all(abs(seen.count(f) / 200 - 1 / 3) < 0.1 for f in ("crop", "flip", "rotate"))
    assert DSA("none").sample_params(3, generator).family == "none"
    assert torch.equal(DSA("none")(_images(), generator), _images())


@pytest.mark.parametrize("family", FAMILIES)
def test_siamese_params_transform_two_batches_identically(family: str) -> None:
    dsa = DSA(family)
    params = dsa.sample_params(5, _gen(3), siamese=True)
    assert params.batch_size == 1
    real = _images(batch=5)
    syn = real[:2].clone()  # a different batch size: one draw applies to both
    out_real, out_syn = dsa.apply(real, params), dsa.apply(syn, params)
    torch.testing.assert_close(out_real[:2], out_syn)
    # identical samples get identical outputs: one transform for the whole batch
    same = _images(batch=1).expand(6, -1, -1, -1).contiguous()
    out = dsa.apply(same, params)
    assert all(torch.equal(out[0], out[i]) for i in range(6))


@pytest.mark.parametrize("family", ["color", "crop", "cutout", "scale", "rotate"])
def test_per_sample_params_differ_across_samples(family: str) -> None:
    dsa = DSA(family)
    same = _images(batch=1, size=32).expand(6, -1, -1, -1).contiguous()
    out = dsa(same, _gen(4), siamese=False)
    distinct = {tuple(out[i].flatten().tolist()) for i in range(6)}
    assert len(distinct) >= 4


def test_per_sample_flip_flips_some_samples_and_not_others() -> None:
    x = _images(batch=1)
    out = DSA("flip")(x.expand(32, -1, -1, -1).contiguous(), _gen(5))
    flipped = sum(torch.equal(o, x[0].flip(2)) for o in out)
    kept = sum(torch.equal(o, x[0]) for o in out)
    assert flipped + kept == 32 and 5 < flipped < 27


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_flow_to_the_input(family: str) -> None:
    x = _images().requires_grad_(True)
    weights = torch.randn(x.shape, generator=_gen(6))
    (DSA(family)(x, _gen(7)) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_same_generator_state_reproduces_the_augmentation() -> None:
    x = _images(batch=8)
    a = [DSA()(x, g) for g in [_gen(9)] for _ in range(5)]
    b = [DSA()(x, g) for g in [_gen(9)] for _ in range(5)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    c = [DSA()(x, g) for g in [_gen(10)] for _ in range(5)]
    assert any(not torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_flip_mirrors_the_width_axis() -> None:
    x = _images()
    assert torch.equal(DSA("flip").apply(x, _params("flip", flip=True)), x.flip(3))
    assert torch.equal(DSA("flip").apply(x, _params("flip", flip=False)), x)


@pytest.mark.parametrize("size,side", [(32, 16), (16, 8), (8, 4)])
def test_cutout_zeroes_a_square_of_half_the_side(size: int, side: int) -> None:
    ones = torch.ones(1, 2, size, size)
    centre = (size // 2 + 0.5) / (size + 1)  # a uniform that maps to the centre pixel
    out = DSA("cutout").apply(ones, _params("cutout", u_row=centre, u_col=centre))
    zero = out[0, 0] == 0
    rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
    assert zero.sum() == side * side and len(rows) == side and len(cols) == side
    assert rows.max() - rows.min() == side - 1 and torch.equal(out[0, 0], out[0, 1])
    # at the corner the square is clipped by the border
    corner = DSA("cutout").apply(ones, _params("cutout", u_row=0.0, u_col=0.0))
    assert (corner[0, 0] == 0).sum() == (side - side // 2) ** 2


def test_crop_is_an_integer_shift_with_zero_fill() -> None:
    x = _images(batch=1, size=32) + 10.0  # no zeros inside the image
    dsa = DSA("crop")
    for u_row, u_col in ((0.0, 0.99), (0.5, 0.5), (0.3, 0.8), (0.99, 0.0)):
        out = dsa.apply(x, _params("crop", u_row=u_row, u_col=u_col))
        dr, dc = math.floor(u_row * 9) - 4, math.floor(u_col * 9) - 4  # shift up to round(0.125·32) = 4 px
        expected = torch.zeros_like(x)
        src_r = slice(max(dr, 0), 32 + min(dr, 0))
        dst_r = slice(max(-dr, 0), 32 + min(-dr, 0))
        src_c = slice(max(dc, 0), 32 + min(dc, 0))
        dst_c = slice(max(-dc, 0), 32 + min(-dc, 0))
        expected[..., dst_r, dst_c] = x[..., src_r, src_c]
        assert torch.equal(out, expected), (dr, dc)


def test_color_family_is_brightness_then_saturation_then_contrast() -> None:
    x = torch.rand(2, 3, 8, 8, generator=_gen(11))
    dsa = DSA("color")
    same = dsa.apply(x, _params("color", brightness=0.0, saturation=1.0, contrast=1.0))
    torch.testing.assert_close(same, x)
    bright = dsa.apply(x, _params("color", brightness=0.3, saturation=1.0, contrast=1.0))
    torch.testing.assert_close(bright, x + 0.3)
    grey = dsa.apply(x, _params("color", brightness=0.0, saturation=0.0, contrast=1.0))
    torch.testing.assert_close(grey, x.mean(dim=1, keepdim=True).expand_as(x))
    contrast = dsa.apply(x, _params("color", brightness=0.0, saturation=1.0, contrast=1.5))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(contrast, (x - mean) * 1.5 + mean)
    params = dsa.sample_params(10_000, _gen(12))
    if params.family == "color":
        values = params.values
        assert -0.5 <= values["brightness"].min() and values["brightness"].max() <= 0.5
        assert 0.0 <= values["saturation"].min() and values["saturation"].max() <= 2.0
        assert 0.5 <= values["contrast"].min() and values["contrast"].max() <= 1.5


def test_scale_and_rotate_are_affine_warps_with_reference_ranges() -> None:
    x = _images(batch=2, size=16)
    torch.testing.assert_close(DSA("scale").apply(x, _params("scale", sx=1.0, sy=1.0)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(DSA("rotate").apply(x, _params("rotate", angle=0.0)), x, atol=1e-5, rtol=0)
    quarter = DSA("rotate").apply(x, _params("rotate", angle=math.pi / 2))
    torch.testing.assert_close(quarter, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5, rtol=0)
    draws = DSA("rotate_scale")
    generator = _gen(13)
    for _ in range(20):
        p = draws.sample_params(500, generator)
        if p.family == "rotate":
            assert p.values["angle"].abs().max() <= math.radians(15)
        else:
            for key in ("sx", "sy"):
                assert 1 / 1.2 <= p.values[key].min() and p.values[key].max() <= 1.2


def test_mismatched_params_batch_is_rejected() -> None:
    dsa = DSA()
    params = dsa.sample_params(4, _gen(), siamese=False)
    if params.family != "none":
        with pytest.raises(ValueError, match="siamese=True"):
            dsa.apply(_images(batch=3), params)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        dsa.apply(torch.zeros(3, 8, 8), params)
