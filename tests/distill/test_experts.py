"""MTT expert trajectories: snapshot layout, SGD maths, seeding and per-expert resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffdistill.distill.experts import ExpertConfig, train_experts
from diffdistill.distill.objectives import RealImages, flatten_parameters
from diffdistill.rng import derive_seed


class SoftmaxRegression(nn.Module):
    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 1, 2, 2), generator=g, dtype=torch.uint8)
    return images, torch.arange(12) % 3


def test_snapshots_are_init_then_one_full_batch_sgd_step_per_epoch():
    images, labels = _data()
    config = ExpertConfig(num_experts=1, epochs=2, lr=0.1, batch_size=64, dsa_strategy="none")
    (trajectory,) = train_experts(images, labels, config, seed=5, net_factory=SoftmaxRegression, augment=None)
    assert trajectory.shape == (3, 15) and trajectory.dtype == torch.float32

    net = SoftmaxRegression(torch.Generator().manual_seed(derive_seed(5, 0)))
    torch.testing.assert_close(trajectory[0], flatten_parameters(net))
    real = RealImages.from_classes([images[labels == k] for k in range(3)])
    x = real.normalize(images.float() / 255)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for epoch in (1, 2):
        optimizer.zero_grad()
        F.cross_entropy(net(x), labels).backward()
        optimizer.step()
        torch.testing.assert_close(trajectory[epoch], flatten_parameters(net), rtol=1e-5, atol=1e-6)


def test_resume_per_expert_gives_the_same_bytes():
    images, labels = _data()
    config = ExpertConfig(num_experts=3, epochs=2, lr=0.05, batch_size=5, dsa_strategy="none")
    saved = {}
    full = train_experts(
        images, labels, config, seed=1, net_factory=SoftmaxRegression, augment=None, save_expert=saved.__setitem__
    )
    assert sorted(saved) == [0, 1, 2]
    assert not torch.equal(full[0], full[1])  # experts differ

    partial = {0: saved[0]}  # as if the run stopped after expert 0
    newly_saved = {}
    resumed = train_experts(
        images,
        labels,
        config,
        seed=1,
        net_factory=SoftmaxRegression,
        augment=None,
        load_expert=partial.get,
        save_expert=newly_saved.__setitem__,
    )
    assert sorted(newly_saved) == [1, 2]
    for a, b in zip(full, resumed, strict=True):
        assert torch.equal(a, b)


def test_augment_is_applied_per_sample():
    images, labels = _data()
    calls = []

    class Shift:
        def sample_params(self, batch_size, generator, siamese=False):
            calls.append((batch_size, siamese))
            return torch.rand(1 if siamese else batch_size, generator=generator)

        def apply(self, x, params):
            return x + params.view(-1, 1, 1, 1)

    config = ExpertConfig(num_experts=1, epochs=1, batch_size=5)
    train_experts(images, labels, config, seed=0, net_factory=SoftmaxRegression, augment=Shift())
    assert calls == [(5, False), (5, False), (2, False)]


def test_validation():
    images, labels = _data()
    with pytest.raises(ValueError, match="num_experts"):
        train_experts(images, labels, ExpertConfig(num_experts=0), seed=0, net_factory=SoftmaxRegression)
    with pytest.raises(ValueError, match="snapshots"):
        train_experts(
            images,
            labels,
            ExpertConfig(num_experts=1, epochs=3),
            seed=0,
            net_factory=SoftmaxRegression,
            load_expert=lambda e: torch.zeros(2, 15),
        )


def test_default_nets_and_dsa_from_the_config():
    """Integration with the project's net registry and DSA: the trajectory's size is the ConvNet's."""
    pytest.importorskip("diffdistill.nets")
    from diffdistill.nets import build_net

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(6) % 2
    config = ExpertConfig(num_experts=1, epochs=1, batch_size=4, net="convnet_d3")
    (trajectory,) = train_experts(images, labels, config, seed=0)
    net = build_net("convnet_d3", 1, 2, 8, generator=torch.Generator().manual_seed(derive_seed(0, 0)))
    assert trajectory.shape == (2, sum(p.numel() for p in net.parameters()))
    torch.testing.assert_close(trajectory[0], flatten_parameters(net))
    assert not torch.equal(trajectory[0], trajectory[1])
