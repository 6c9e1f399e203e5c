"""Evaluation nets: shapes at every resolution, real normalisation, seeded init, input validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffdistill.nets import NET_NAMES, build_net, convnet_depth_for

CONVNET_MIN_SIZE = {"convnet_d3": 8, "convnet_d4": 16, "convnet_d5": 32, "convnet_d6": 64}


# narrow variants for the 128 px run (default widths are exercised at 8–32 px)
NARROW = {
    "alexnet": {"width": 16},
    "vgg11": {"width": 8},
    "vgg11_bn": {"width": 8},
    "resnet18": {"width": 8},
    "resnet18_bn": {"width": 8},
    "vgg11_dc": {"width": 8},
    "vgg11_glad": {"width": 8},
    "vit": {"dim": 64, "depth": 2, "heads": 4, "mlp_dim": 64},
    "vit_glad": {"dim": 64, "depth": 2, "heads": 4, "mlp_dim": 64},
}


def _forward_backward(name: str, channels: int, size: int, **overrides: int) -> None:
    net = build_net(name, channels, 5, size, generator=torch.Generator().manual_seed(0), **overrides)
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1), requires_grad=True)
    logits = net(x)
    assert logits.shape == (2, 5)
    with torch.no_grad():  # in eval mode: dropout (vit_glad) draws a new mask per call
        net.eval()
        feats = net.features(x)
        assert feats.shape == (2, net.feature_dim)
        torch.testing.assert_close(net.head(feats), net(x))
        net.train()
    logits.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", NET_NAMES)
@pytest.mark.parametrize("size,channels", [(8, 1), (16, 3), (32, 1)])
def test_every_net_runs_forward_and_backward_at_small_sizes(name: str, size: int, channels: int) -> None:
    if size < CONVNET_MIN_SIZE.get(name, 0):
        with pytest.raises(ValueError, match="image_size"):
            build_net(name, channels, 5, size)
        return
    _forward_backward(name, channels, size)


@pytest.mark.parametrize("name", NET_NAMES)
def test_every_net_runs_at_128_px(name: str) -> None:
    overrides = NARROW.get(name, {"width": 16} if name.startswith("convnet") else {})
    _forward_backward(name, 3, 128, **overrides)


def test_convnet_depth_follows_resolution() -> None:
    assert [convnet_depth_for(s) for s in (8, 28, 32, 64, 128, 256)] == [3, 3, 3, 4, 5, 6]
    for size, depth in ((32, 3), (64, 4), (128, 5), (256, 6)):
        net = build_net("convnet", 3, 10, size, width=8)
        assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == depth
        # DC's ConvNet: width · (size / 2^depth)² features, e.g. 128·4·4 = 2048 at 32 px
        assert net.feature_dim == 8 * (size // 2**depth) ** 2
    assert build_net("convnet", 3, 10, 32).feature_dim == 2048


def _norm_outputs(net: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor]]:
    outputs: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, _inp, out: outputs.append((mod, out.detach().clone())))
        for m in net.modules()
        if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm))
    ]
    net(x)
    for h in hooks:
        h.remove()
    return outputs


@pytest.mark.parametrize(
    "name,overrides,kind,count",
    [
        ("convnet", {"width": 16}, nn.GroupNorm, 3),
        ("convnet_bn", {"width": 16}, nn.BatchNorm2d, 3),
        ("vgg11", {}, nn.GroupNorm, 8),
        ("vgg11_bn", {}, nn.BatchNorm2d, 8),
        ("resnet18", {"width": 8}, nn.GroupNorm, 20),
        ("resnet18_bn", {"width": 8}, nn.BatchNorm2d, 20),
        ("vit", {"dim": 32, "depth": 2, "heads": 2, "mlp_dim": 32}, nn.LayerNorm, 5),
    ],
)
def test_norm_layers_really_normalise(name: str, overrides: dict, kind: type, count: int) -> None:
    net = build_net(name, 3, 4, 16, **overrides).train()
    # a shifted / scaled input: without normalisation activations would be far from N(0, 1)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 7.0 + 5.0
    outputs = _norm_outputs(net, x)
    assert len(outputs) == count and all(isinstance(m, kind) for m, _ in outputs)
    for _, out in outputs:
        if kind is nn.GroupNorm:  # instance norm: per sample and channel over H, W
            dims: tuple[int, ...] = (2, 3)
        elif kind is nn.BatchNorm2d:  # per channel over N, H, W
            dims = (0, 2, 3)
        else:  # per token over features
            dims = (-1,)
        if kind is not nn.LayerNorm and out.shape[2] * out.shape[3] == 1 and kind is nn.GroupNorm:
            continue  # a 1×1 map normalises to exactly 0: nothing to measure
        torch.testing.assert_close(out.mean(dim=dims), torch.zeros_like(out.mean(dim=dims)), atol=1e-4, rtol=0)
        var = out.var(dim=dims, unbiased=False)
        unit = (var - 1).abs() < 0.05
        # eps = 1e-5 shrinks the variance of channels whose input variance is ~1e-4 (a few on 2×2 maps,
        # where a channel can even be constant after ReLU): nearly all, not all, are at unit variance.
        assert (var < 1.05).all() and unit.float().mean() > 0.99


@pytest.mark.parametrize("name", ["convnet_nonorm", "alexnet"])
def test_unnormalised_nets_have_no_norm_layers(name: str) -> None:
    net = build_net(name, 3, 4, 16)
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm)) for m in net.modules())
    # the first block's output keeps the input's scale: nothing normalises it
    conv = net.body[0]
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 7.0 + 5.0
    out = net.body[1](conv(x)) if name == "convnet_nonorm" else conv(x)
    assert out.var(dim=(2, 3)).mean() > 2.0


def test_same_generator_seed_gives_identical_params_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    for name in NET_NAMES:
        size = max(16, CONVNET_MIN_SIZE.get(name, 0))
        a = build_net(name, 3, 7, size, generator=torch.Generator().manual_seed(11))
        b = build_net(name, 3, 7, size, generator=torch.Generator().manual_seed(11))
        c = build_net(name, 3, 7, size, generator=torch.Generator().manual_seed(12))
        for (key, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(pa, pb), (name, key)
        assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))
    assert torch.equal(torch.get_rng_state(), state)
    # no generator: a fixed seed, never the global RNG
    for pa, pb in zip(
        build_net("convnet", 1, 3, 8).parameters(), build_net("convnet", 1, 3, 8).parameters(), strict=True
    ):
        assert torch.equal(pa, pb)


def test_init_matches_pytorch_default_scheme() -> None:
    net = build_net("convnet", 3, 10, 32, generator=torch.Generator().manual_seed(5))
    conv, norm = net.body[4], net.body[5]  # second block: 128 -> 128
    bound = 1.0 / math.sqrt(128 * 9)  # kaiming_uniform(a=√5) and the bias rule both give 1/√fan_in
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.99 * bound
    assert abs(conv.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound
    assert conv.bias.abs().max() <= bound
    assert torch.equal(norm.weight, torch.ones(128)) and torch.equal(norm.bias, torch.zeros(128))
    bn = build_net("convnet_bn", 3, 10, 32, width=8).body[1]
    assert torch.equal(bn.running_mean, torch.zeros(8)) and torch.equal(bn.running_var, torch.ones(8))
    assert bn.num_batches_tracked.item() == 0


@pytest.mark.parametrize("size,grid", [(8, 4), (16, 4), (28, 7), (32, 8), (64, 8), (128, 8), (256, 16)])
def test_vit_patch_grid_is_at_least_4x4_and_has_layernorms(size: int, grid: int) -> None:
    net = build_net("vit", 3, 10, size, dim=16, depth=2, heads=2, mlp_dim=16)
    assert net.pos_embed.shape[1] == grid * grid + 1
    assert sum(isinstance(m, nn.LayerNorm) for m in net.modules()) == 2 * 2 + 1


def test_invalid_arguments_are_rejected_with_helpful_messages() -> None:
    with pytest.raises(ValueError, match="valid names: convnet"):
        build_net("resnet50", 3, 10, 32)
    with pytest.raises(ValueError, match=r"image_size must be an int in \[8, 256\]"):
        build_net("convnet", 3, 10, 4)
    with pytest.raises(ValueError, match=r"image_size must be an int in \[8, 256\]"):
        build_net("vit", 3, 10, 512)
    with pytest.raises(ValueError, match="needs image_size >= 64"):
        build_net("convnet_d6", 3, 10, 32)
    with pytest.raises(ValueError, match="does not take overrides"):
        build_net("alexnet", 3, 10, 32, norm="batch")
    with pytest.raises(ValueError, match="norm must be one of"):
        build_net("convnet", 3, 10, 32, norm="layer")
    with pytest.raises(ValueError, match="in_channels"):
        build_net("convnet", 0, 10, 32)
