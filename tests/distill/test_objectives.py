"""DC / DM / MTT objectives against hand-computed values on tiny tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffdistill.distill.objectives import (
    DCConfig,
    DistributionMatching,
    DMConfig,
    GradientMatching,
    MTTConfig,
    RealImages,
    TrajectoryMatching,
    flatten_parameters,
    match_distance,
    unflatten_parameters,
    unroll_student,
)

C, H, K = 1, 2, 2  # channels, side, classes: 4-d flattened images


class LinearNet(nn.Module):
    """features = flatten(x) @ A^T (no bias), head = Linear(F, K)."""

    def __init__(self, generator: torch.Generator, feature_dim: int = 3):
        super().__init__()
        self.embed = nn.Linear(C * H * H, feature_dim, bias=False)
        self.head = nn.Linear(feature_dim, K)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))

    def features(self, x):
        return self.embed(x.flatten(1))

    def forward(self, x):
        return self.head(self.features(x))


class SoftmaxRegression(nn.Module):
    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.fc = nn.Linear(C * H * H, K)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _real(n_per_class=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return RealImages.from_classes([torch.rand((n_per_class, C, H, H), generator=g) for _ in range(K)])


def _syn(ipc=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((K * ipc, C, H, H), generator=g), torch.arange(K).repeat_interleave(ipc)


def test_real_images_mean_std_and_normalise():
    real = _real()
    everything = torch.cat(real.by_class)
    torch.testing.assert_close(real.mean, everything.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(real.std, everything.std(dim=(0, 2, 3), unbiased=False))
    x = real.sample(1, 10, torch.Generator().manual_seed(0), "cpu")
    assert x.shape == (3, C, H, H)  # class smaller than the batch: all of it
    torch.testing.assert_close(
        (x * real.std.view(1, -1, 1, 1) + real.mean.view(1, -1, 1, 1)).sort(0).values, real.by_class[1].sort(0).values
    )


def test_match_distance_is_sum_over_channels_of_one_minus_cos():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn((4, 3, 2, 2), generator=g), torch.randn((4, 3, 2, 2), generator=g)
    expected = sum(
        1 - float(a[i].flatten() @ b[i].flatten()) / (float(a[i].norm() * b[i].norm()) + 1e-6) for i in range(4)
    )
    assert float(match_distance(a, b)) == pytest.approx(expected, rel=1e-5)
    assert float(match_distance(a[:, :, 0, 0], a[:, :, 0, 0])) == pytest.approx(0.0, abs=1e-5)
    assert float(match_distance(torch.ones(5), -torch.ones(5))) == 0.0  # 1-D (bias / norm) ignored


def _softmax_regression_grad(weight, bias, x, labels):
    """dCE/dW for logits = W x + b, by hand: (softmax - onehot)^T x / B."""
    x = x.flatten(1)
    probs = torch.softmax(x @ weight.T + bias, dim=1)
    return (probs - F.one_hot(labels, K).float()).T @ x / x.shape[0]


def test_dc_loss_equals_hand_computed_gradient_matching():
    real = _real()
    images, labels = _syn()
    dc = GradientMatching(
        real, DCConfig(batch_real=100, outer_loop=1, inner_loop=0), ipc=2, net_factory=SoftmaxRegression, augment=None
    )
    assert dc.start_iteration(torch.Generator().manual_seed(3)) == 1
    loss = dc.loss(images, labels, torch.Generator().manual_seed(4))
    w, b = dc.net.fc.weight.detach(), dc.net.fc.bias.detach()
    expected = 0.0
    for k in range(K):
        g_real = _softmax_regression_grad(w, b, real.normalize(real.by_class[k]), torch.full((3,), k))
        g_syn = _softmax_regression_grad(w, b, real.normalize(images[labels == k]), labels[labels == k])
        expected += sum(
            1 - float(g_real[i] @ g_syn[i]) / (float(g_real[i].norm() * g_syn[i].norm()) + 1e-6) for i in range(K)
        )
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    leaf = images.clone().requires_grad_(True)
    dc.loss(leaf, labels, torch.Generator().manual_seed(4)).backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


class RecordingAugment:
    """Adds a per-draw constant; records every draw and application."""

    def __init__(self):
        self.draws, self.applied = [], []

    def sample_params(self, batch_size, generator, siamese=False):
        value = torch.rand(1 if siamese else batch_size, generator=generator)
        self.draws.append((value, siamese))
        return value

    def apply(self, x, params):
        self.applied.append((params, x.shape[0]))
        return x + params.view(-1, 1, 1, 1)


@pytest.mark.parametrize("kind", ["dc", "dm"])
def test_siamese_params_shared_by_real_and_synthetic_batches(kind):
    real, (images, labels) = _real(), _syn()
    augment = RecordingAugment()
    if kind == "dc":
        obj = GradientMatching(
            real, DCConfig(outer_loop=1, inner_loop=0), ipc=2, net_factory=SoftmaxRegression, augment=augment
        )
    else:
        obj = DistributionMatching(real, DMConfig(), net_factory=LinearNet, augment=augment)
    obj.start_iteration(torch.Generator().manual_seed(0))
    obj.loss(images, labels, torch.Generator().manual_seed(1))
    assert len(augment.draws) == K and all(siamese for _, siamese in augment.draws)  # one draw per class
    assert len(augment.applied) == 2 * K
    for k in range(K):
        (p_real, n_real), (p_syn, n_syn) = augment.applied[2 * k], augment.applied[2 * k + 1]
        assert p_real is p_syn is augment.draws[k][0] and (n_real, n_syn) == (3, 2)


def test_dc_loop_table_and_overrides():
    assert DCConfig().loops(1) == (1, 1) and DCConfig().loops(10) == (10, 50) and DCConfig().loops(50) == (50, 10)
    assert DCConfig(outer_loop=2, inner_loop=3).loops(7) == (2, 3)
    with pytest.raises(ValueError, match="outer_loop"):
        DCConfig().loops(7)


def test_dc_prepare_round_is_sgd_on_synthetic_data():
    real, (images, labels) = _real(), _syn()
    dc = GradientMatching(
        real, DCConfig(outer_loop=2, inner_loop=1, lr_net=0.1), ipc=2, net_factory=SoftmaxRegression, augment=None
    )
    assert dc.start_iteration(torch.Generator().manual_seed(3)) == 2
    w, b = dc.net.fc.weight.detach().clone(), dc.net.fc.bias.detach().clone()
    dc.prepare_round(images, labels, torch.Generator().manual_seed(0))
    x = real.normalize(images)
    expected_w = w - 0.1 * _softmax_regression_grad(w, b, x, labels)
    torch.testing.assert_close(dc.net.fc.weight.detach(), expected_w)


def test_dm_loss_equals_hand_computed_mean_embedding_gap():
    real, (images, labels) = _real(), _syn()
    dm = DistributionMatching(real, DMConfig(batch_real=100), net_factory=LinearNet, augment=None)
    dm.start_iteration(torch.Generator().manual_seed(2))
    assert not any(p.requires_grad for p in dm.net.parameters())
    leaf = images.clone().requires_grad_(True)
    loss = dm.loss(leaf, labels, torch.Generator().manual_seed(0))
    a = dm.net.embed.weight.detach()
    expected = 0.0
    for k in range(K):
        mean_real = (real.normalize(real.by_class[k]).flatten(1) @ a.T).mean(0)
        mean_syn = (real.normalize(images[labels == k]).flatten(1) @ a.T).mean(0)
        expected += float(((mean_real - mean_syn) ** 2).sum())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert leaf.grad.abs().sum() > 0 and dm.net.embed.weight.grad is None


def test_flatten_unflatten_roundtrip():
    net = LinearNet(torch.Generator().manual_seed(0))
    flat = flatten_parameters(net)
    assert flat.numel() == sum(p.numel() for p in net.parameters())
    views = unflatten_parameters(net, flat)
    for name, p in net.named_parameters():
        assert torch.equal(views[name], p)
    with pytest.raises(ValueError, match="entries"):
        unflatten_parameters(net, flat[:-1])


def test_student_unroll_matches_manual_sgd_loop():
    """N functional SGD steps on flat params == torch.optim.SGD on a module, same minibatch order."""
    net = SoftmaxRegression(torch.Generator().manual_seed(0))
    images, labels = _syn(ipc=3)
    start = flatten_parameters(net)
    lr, steps, batch = 0.3, 5, 4
    final = unroll_student(
        net,
        start,
        images,
        labels,
        syn_lr=torch.tensor(lr),
        syn_steps=steps,
        batch_syn=batch,
        augment=None,
        generator=torch.Generator().manual_seed(7),
    )

    manual = SoftmaxRegression(torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(manual.parameters(), lr=lr)
    g, order = torch.Generator().manual_seed(7), []
    for _ in range(steps):
        if not order:
            order = list(torch.randperm(images.shape[0], generator=g).split(batch))
        index = order.pop(0)
        optimizer.zero_grad()
        F.cross_entropy(manual(images[index]), labels[index]).backward()
        optimizer.step()
    torch.testing.assert_close(final.detach(), flatten_parameters(manual))


def _experts(net_factory, n_experts=2, epochs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = flatten_parameters(net_factory(torch.Generator().manual_seed(0))).numel()
    return [torch.randn((epochs + 1, size), generator=g) * 0.5 for _ in range(n_experts)]


def test_mtt_loss_is_normalised_distance_to_expert_target():
    real, (images, labels) = _real(), _syn()
    experts = _experts(SoftmaxRegression)
    config = MTTConfig(expert_epochs=2, max_start_epoch=2, syn_steps=3, lr_teacher=0.05)
    mtt = TrajectoryMatching(real, experts, config, net_factory=SoftmaxRegression, augment=None)
    mtt.start_iteration(torch.Generator().manual_seed(11))
    leaf = images.clone().requires_grad_(True)
    loss = mtt.loss(leaf, labels, torch.Generator().manual_seed(5))
    trajectory = experts[mtt.expert]
    start, target = trajectory[mtt.start_epoch], trajectory[mtt.start_epoch + 2]
    final = unroll_student(
        mtt.net,
        start,
        real.normalize(images),
        labels,
        syn_lr=torch.tensor(0.05),
        syn_steps=3,
        batch_syn=images.shape[0],
        augment=None,
        generator=torch.Generator().manual_seed(5),
    )
    expected = float(((final.detach() - target) ** 2).sum() / ((start - target) ** 2).sum())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert leaf.grad.abs().sum() > 0 and mtt.syn_lr.grad is not None and float(mtt.syn_lr.grad) != 0.0
    assert set(mtt.extra_parameters()) == {"syn_lr"}


def test_mtt_start_epoch_range_and_validation():
    real = _real()
    experts = _experts(SoftmaxRegression, epochs=4)
    mtt = TrajectoryMatching(
        real, experts, MTTConfig(expert_epochs=2, max_start_epoch=3), net_factory=SoftmaxRegression, augment=None
    )
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(40):
        mtt.start_iteration(g)
        starts.add(mtt.start_epoch)
    assert starts == {0, 1, 2}
    with pytest.raises(ValueError, match="max_start_epoch"):
        TrajectoryMatching(
            real, experts, MTTConfig(expert_epochs=3, max_start_epoch=3), net_factory=SoftmaxRegression, augment=None
        )
    with pytest.raises(ValueError, match="parameters"):
        TrajectoryMatching(
            real,
            _experts(LinearNet),
            MTTConfig(expert_epochs=1, max_start_epoch=1),
            net_factory=SoftmaxRegression,
            augment=None,
        )
