"""Soft-label protocol augmentations: random-resized-crop + flip, and CutMix."""

from __future__ import annotations

import torch

from diffdistill.augment import cutmix, random_resized_crop_flip


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_full_crop_is_identity_and_flip_mirrors() -> None:
    x = torch.randn(3, 2, 16, 16, generator=_gen(1))
    same = random_resized_crop_flip(x, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0), prob_flip=0.0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    mirrored = random_resized_crop_flip(x, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0), prob_flip=1.0)
    torch.testing.assert_close(mirrored, x.flip(3), atol=1e-5, rtol=0)


def test_small_crops_zoom_in_per_sample_and_are_seeded() -> None:
    # a horizontal ramp: a zoomed crop shows a smaller range of values than the full image
    ramp = torch.linspace(0, 1, 32).expand(8, 1, 32, 32).contiguous()
    out = random_resized_crop_flip(ramp, _gen(2), scale=(0.1, 0.2), prob_flip=0.0)
    spans = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
    assert (spans < 0.75).all() and len(set(spans.tolist())) == 8
    torch.testing.assert_close(out, random_resized_crop_flip(ramp, _gen(2), scale=(0.1, 0.2), prob_flip=0.0))
    x = ramp.clone().requires_grad_(True)
    random_resized_crop_flip(x, _gen(3)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cutmix_pastes_one_box_from_a_permuted_sample() -> None:
    # sample i is the constant image i, so every pixel says where it came from
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 16, 16).contiguous()
    mixed, perm, kept = cutmix(x, _gen(4))
    assert sorted(perm.tolist()) == list(range(6))
    for i in range(6):
        values = set(mixed[i].unique().tolist())
        assert values <= {float(i), float(perm[i])}
        box = mixed[i, 0] == perm[i] if perm[i] != i else torch.zeros(16, 16, dtype=torch.bool)
        if perm[i] != i:
            torch.testing.assert_close(1.0 - box.float().mean(), kept)
            rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
            if len(rows):  # one axis-aligned rectangle, the same for every sample
                assert box.sum() == len(rows) * len(cols)
    x.requires_grad_(True)
    cutmix(x, _gen(4))[0].sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # every pixel ends up exactly once


def test_cutmix_box_area_is_uniform_on_average() -> None:
    x = torch.zeros(2, 1, 32, 32)
    generator = _gen(5)
    kept = torch.stack([cutmix(x, generator)[2] for _ in range(400)])
    # λ ~ U(0, 1) but the box is clipped at the border, so the kept area is >= λ: mean a bit above 0.5
    assert 0.45 < kept.mean().item() < 0.75 and kept.min() >= 0.0 and kept.max() <= 1.0
