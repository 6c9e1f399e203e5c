"""Coreset baselines: random real subset and herding."""

from __future__ import annotations

import itertools

import pytest
import torch

from diffdistill.data.bundle import TensorBundle
from diffdistill.distill.baselines import herding_order, herding_subset, random_real_subset


def _real(per_class: list[int], seed: int = 0, size: int = 8) -> TensorBundle:
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    labels = labels[torch.randperm(len(labels), generator=g)]  # classes interleaved, as in a real split
    images = torch.randint(0, 256, (len(labels), 1, size, size), generator=g, dtype=torch.uint8)
    names = [f"class{c}" for c in range(len(per_class))]
    return TensorBundle({"images": images, "labels": labels}, {"class_names": names, "source": "toy"})


def _digits() -> TensorBundle:
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    images = torch.tensor(digits.images / 16.0 * 255.0).round().to(torch.uint8)[:, None]
    return TensorBundle(
        {"images": images, "labels": torch.tensor(digits.target)}, {"class_names": [str(d) for d in range(10)]}
    )


def test_random_subset_is_a_seeded_distilled_set() -> None:
    real = _real([7, 5, 9])
    subset = random_real_subset(real, ipc=4, seed=1)
    images, labels, meta = subset.images, subset.labels, subset.meta
    assert images.dtype == torch.float32 and images.shape == (12, 1, 8, 8)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert torch.bincount(labels).tolist() == [4, 4, 4]
    assert meta["method"] == "random" and meta["ipc"] == 4 and meta["num_classes"] == 3
    assert meta["class_names"] == ["class0", "class1", "class2"] and len(meta["mean"]) == 1
    indices = torch.tensor(meta["indices"])
    assert len(set(meta["indices"])) == 12
    assert torch.equal(real.labels[indices], labels)
    assert torch.equal(images, real.images[indices].float() / 255)
    again = random_real_subset(real, ipc=4, seed=1)
    assert again.meta["indices"] == meta["indices"] and torch.equal(again.images, images)
    assert random_real_subset(real, ipc=4, seed=2).meta["indices"] != meta["indices"]


def test_ipc_larger_than_a_class_is_a_clear_error() -> None:
    real = _real([7, 3, 9])
    with pytest.raises(ValueError, match=r"ipc=4 exceeds .*\{1: 3\}"):
        random_real_subset(real, ipc=4, seed=0)
    with pytest.raises(ValueError, match=r"ipc=4 exceeds"):
        herding_subset(real, ipc=4, features=lambda x: x.flatten(1))
    with pytest.raises(ValueError, match="ipc must be an int >= 1"):
        random_real_subset(real, ipc=0, seed=0)


def test_herding_picks_the_constructed_optimal_subset() -> None:
    # mean is 0; the pair (+0.1, 0), (-0.1, 0) hits it exactly, the far points never help
    features = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.1, 0.0], [0.0, 3.0], [-0.1, 0.0], [0.0, -3.0]])
    assert herding_order(features, 2).tolist() == [2, 4]  # the tie at step 1 goes to the lower index
    order = herding_order(features, 6).tolist()  # asking for every point returns each exactly once
    assert sorted(order) == list(range(6)) and order[:2] == [2, 4]


def test_herding_is_greedy_mean_matching() -> None:
    features = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    mean = features.mean(0)
    order, chosen = herding_order(features, 5).tolist(), []
    for k in range(1, 6):  # a plain-loop reference of Welling's rule
        best = min(
            (i for i in range(12) if i not in chosen),
            key=lambda i: torch.linalg.vector_norm(mean - (features[chosen + [i]].sum(0)) / k).item(),
        )
        chosen.append(best)
    assert order == chosen
    # greedy, not optimal, but far better than a typical 3-subset
    errors = [
        torch.linalg.vector_norm(mean - features[list(c)].mean(0)).item() for c in itertools.combinations(range(12), 3)
    ]
    greedy3 = torch.linalg.vector_norm(mean - features[order[:3]].mean(0)).item()
    assert greedy3 < sorted(errors)[len(errors) // 10]  # in the best 10%


def test_herding_matches_class_means_better_than_random_on_digits() -> None:
    real = _digits()
    pixels = lambda x: x.flatten(1)  # noqa: E731
    herded = herding_subset(real, ipc=5, features=pixels)
    assert herded.meta["method"] == "herding" and torch.bincount(herded.labels).tolist() == [5] * 10

    def mean_error(subset: TensorBundle) -> float:
        errors = []
        for c in range(10):
            class_mean = (real.images[real.labels == c].float() / 255).flatten(1).mean(0)
            errors.append(torch.linalg.vector_norm(class_mean - subset.images[subset.labels == c].flatten(1).mean(0)))
        return float(torch.stack(errors).mean())

    random_errors = [mean_error(random_real_subset(real, ipc=5, seed=s)) for s in range(5)]
    herding_error = mean_error(herded)
    assert herding_error < min(random_errors) and herding_error < 0.7 * sum(random_errors) / len(random_errors)
    assert herded.meta["herding_mean_error"][0] == pytest.approx(
        float(
            torch.linalg.vector_norm(
                (real.images[real.labels == 0].float() / 255).flatten(1).double().mean(0)
                - herded.images[herded.labels == 0].flatten(1).double().mean(0)
            )
        ),
        rel=1e-4,
    )


def test_herding_accepts_a_feature_net() -> None:
    real = _real([6, 6], size=16)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 4))
    subset = herding_subset(real, ipc=2, features=net, batch_size=5)
    assert subset.images.shape == (4, 1, 16, 16) and subset.meta["ipc"] == 2
