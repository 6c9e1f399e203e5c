"""The shared training loop: learning, determinism, test-split hygiene, soft labels, EMA, validation."""

from __future__ import annotations

import math

import pytest
import torch

from diffdistill.data.bundle import TensorBundle
from diffdistill.evaluation import (
    NormalizedClassifier,
    WeightEMA,
    channel_stats,
    get_protocol,
    soft_label_loss,
    train_and_evaluate,
    train_classifier,
)

NARROW = {"width": 16}


def _blobs(per_class: int, seed: int, num_classes: int = 3, size: int = 16) -> TensorBundle:
    """Class c = a bright square in corner c plus noise: learnable in a few steps, uint8 like a real split."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = torch.rand(len(labels), 1, size, size, generator=g) * 0.4
    half = size // 2
    for c in range(num_classes):
        r, col = divmod(c, 2)
        images[labels == c, :, r * half : (r + 1) * half, col * half : (col + 1) * half] += 0.6
    return TensorBundle(
        {"images": (images * 255).round().to(torch.uint8), "labels": labels},
        {"class_names": [f"c{c}" for c in range(num_classes)], "source": "blobs"},
    )


def _fast(protocol: str = "dc", **overrides):
    return get_protocol(protocol, **{"epochs": 6, "batch_size": 16, **overrides})


class CountingBundle(TensorBundle):
    """Logs every tensor read, so a test can see when the loop touches the test split."""

    log: list

    def __getitem__(self, name: str) -> torch.Tensor:
        self.log.append(("test", name))
        return super().__getitem__(name)


def test_soft_label_loss_matches_a_hand_computed_kl() -> None:
    # teacher softmax([ln 3, 0]) = (3/4, 1/4), student uniform: KL = 3/4 ln 1.5 + 1/4 ln 0.5
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2  # second row: identical, KL 0; batch mean
    assert soft_label_loss(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-5)
    # temperature divides the logits first: T = 2 on doubled logits is the same distribution
    assert soft_label_loss(2 * student, 2 * teacher, 2.0).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="same classes"):
        soft_label_loss(student, teacher[:, :1], 1.0)


def test_weight_ema_is_a_running_mean_then_an_ema() -> None:
    net = torch.nn.Linear(1, 1, bias=False)
    ema = WeightEMA(net, decay=0.6)
    values = [1.0, 3.0, 8.0, 0.0]
    expected, current = [], None
    for k, value in enumerate(values):
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update(net)
        decay = min(0.6, k / (k + 1))  # 0 (copy), 1/2 (mean of two), then capped at 0.6
        current = value if current is None else decay * current + (1 - decay) * value
        expected.append(current)
        assert ema.net.weight.item() == pytest.approx(current)
    assert expected[1] == pytest.approx(2.0)


def test_training_learns_and_is_deterministic_per_seed() -> None:
    train, test = _blobs(8, seed=0), _blobs(20, seed=1)
    state = torch.get_rng_state()
    first = train_and_evaluate(train, test, arch="convnet", protocol=_fast(), seed=3, net_overrides=NARROW)
    again = train_and_evaluate(train, test, arch="convnet", protocol=_fast(), seed=3, net_overrides=NARROW)
    other = train_and_evaluate(train, test, arch="convnet", protocol=_fast(), seed=4, net_overrides=NARROW)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from the global RNG
    assert first["test_accuracy"] > 0.8  # chance is 1/3
    assert first["train_loss"] == again["train_loss"] and first["test_accuracy"] == again["test_accuracy"]
    assert first["train_loss"] != other["train_loss"]
    assert len(first["train_loss"]) == 6 and first["steps"] == 6 * 2 and first["num_test"] == 60
    assert first["protocol"] == "dc" and first["protocol_config"]["epochs"] == 6


def test_test_split_is_read_once_after_the_last_epoch() -> None:
    log: list = []
    base = _blobs(5, seed=1)
    test = CountingBundle(base.tensors, base.meta)
    test.log = log
    train_and_evaluate(
        _blobs(4, seed=0),
        test,
        arch="convnet",
        protocol=_fast(epochs=3),
        seed=0,
        callback=lambda epoch, stats: log.append(("epoch", epoch)),
        net_overrides=NARROW,
    )
    epochs = [i for i, event in enumerate(log) if event[0] == "epoch"]
    assert len(epochs) == 3
    during = [e for e in log[epochs[0] : epochs[-1]] if e[0] == "test"]
    after = log[epochs[-1] + 1 :]
    assert during == [] and after == [("test", "images"), ("test", "labels")]
    before = log[: epochs[0]]
    assert all(e[0] == "test" for e in before)  # only the up-front shape / label checks


def test_uint8_and_float_images_give_the_same_run() -> None:
    train, test = _blobs(4, seed=0), _blobs(4, seed=1)
    as_float = TensorBundle({"images": train.images.float() / 255, "labels": train.labels}, train.meta)
    a = train_and_evaluate(train, test, arch="convnet", protocol=_fast(epochs=2), seed=0, net_overrides=NARROW)
    b = train_and_evaluate(as_float, test, arch="convnet", protocol=_fast(epochs=2), seed=0, net_overrides=NARROW)
    assert a["train_loss"] == b["train_loss"] and a["test_accuracy"] == b["test_accuracy"]


def test_normalisation_comes_from_protocol_then_meta_then_images() -> None:
    train, test = _blobs(4, seed=0), _blobs(2, seed=1)
    computed = train_and_evaluate(train, test, arch="convnet", protocol=_fast(epochs=1), seed=0, net_overrides=NARROW)
    mean, std = channel_stats(train.images)
    assert computed["mean"] == pytest.approx(mean.tolist()) and computed["std"] == pytest.approx(std.tolist())
    expected_mean = train.images.float().div(255).mean().item()
    assert computed["mean"][0] == pytest.approx(expected_mean, rel=1e-5)
    with_meta = TensorBundle(train.tensors, {**train.meta, "mean": [0.25], "std": [0.5]})
    from_meta = train_and_evaluate(
        with_meta, test, arch="convnet", protocol=_fast(epochs=1), seed=0, net_overrides=NARROW
    )
    assert from_meta["mean"] == [0.25] and from_meta["std"] == [0.5]
    given = _fast(epochs=1, mean=(0.1,), std=(0.3,))
    from_protocol = train_and_evaluate(with_meta, test, arch="convnet", protocol=given, seed=0, net_overrides=NARROW)
    assert from_protocol["mean"] == pytest.approx([0.1]) and from_protocol["std"] == pytest.approx([0.3])


def test_glad_protocol_runs_with_ema_and_val_monitoring() -> None:
    train, test = _blobs(6, seed=0), _blobs(10, seed=1)
    result = train_and_evaluate(
        train,
        test,
        arch="convnet",
        protocol=_fast("glad", epochs=4),
        seed=0,
        val=_blobs(3, seed=2),
        net_overrides=NARROW,
    )
    assert result["ema"] and result["lr_base"] == 1e-3 and 0.0 <= result["test_accuracy"] <= 1.0
    assert [epoch for epoch, _ in result["val_accuracy"]] == [0, 1, 2, 3]
    assert result["lr"][0] < result["lr"][1]  # warming up


def test_soft_label_student_learns_from_a_teacher() -> None:
    real = _blobs(10, seed=0)
    teacher = train_classifier(real, arch="convnet", protocol=_fast(epochs=8), seed=0, net_overrides=NARROW)
    assert isinstance(teacher, NormalizedClassifier) and not teacher.training
    assert len(teacher.training_history["train_loss"]) == 8
    logits = teacher(real.images.float() / 255)  # teachers take [0, 1] images
    assert (logits.argmax(1) == real.labels).float().mean() > 0.8
    protocol = _fast("soft_label", epochs=12, batch_size=10, lr=3e-3, arch_lr={})
    student = train_and_evaluate(
        _blobs(4, seed=3),
        _blobs(10, seed=1),
        arch="convnet",
        protocol=protocol,
        seed=0,
        teacher=teacher,
        net_overrides=NARROW,
    )
    losses = student["train_loss"]
    assert all(v >= 0 for v in losses) and sum(losses[-3:]) < sum(losses[:3])
    assert student["lr"][-1] < 0.1 * 3e-3  # cosine to zero


def test_bad_inputs_are_rejected_before_training() -> None:
    train, test = _blobs(3, seed=0), _blobs(2, seed=1)
    kwargs = {"arch": "convnet", "protocol": _fast(epochs=1), "seed": 0, "net_overrides": NARROW}
    empty = TensorBundle({"images": train.images[:0], "labels": train.labels[:0]}, train.meta)
    with pytest.raises(ValueError, match="empty"):
        train_and_evaluate(empty, test, **kwargs)
    unbalanced = TensorBundle({"images": train.images[1:], "labels": train.labels[1:]}, train.meta)
    with pytest.raises(ValueError, match=r"unbalanced .*\[2, 3, 3\].*allow_unbalanced=True"):
        train_and_evaluate(unbalanced, test, **kwargs)
    assert 0.0 <= train_and_evaluate(unbalanced, test, allow_unbalanced=True, **kwargs)["test_accuracy"] <= 1.0
    bad_labels = TensorBundle({"images": test.images, "labels": test.labels + 1}, test.meta)
    with pytest.raises(ValueError, match=r"test labels must lie in \[0, 3\)"):
        train_and_evaluate(train, bad_labels, **kwargs)
    with pytest.raises(ValueError, match="valid names: convnet"):
        train_and_evaluate(train, test, **{**kwargs, "arch": "lenet"})
    with pytest.raises(ValueError, match="valid protocols: dc, glad, soft_label"):
        train_and_evaluate(train, test, **{**kwargs, "protocol": "kip"})
    signed = TensorBundle({"images": train.images.float() / 127.5 - 1, "labels": train.labels}, train.meta)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_and_evaluate(signed, test, **kwargs)
    with pytest.raises(ValueError, match="teacher"):
        train_and_evaluate(train, test, **{**kwargs, "protocol": _fast("soft_label", epochs=1)})
    with pytest.raises(ValueError, match="teacher=None"):
        train_and_evaluate(train, test, teacher=torch.nn.Identity(), **kwargs)
    wrong_size = _blobs(2, seed=1, size=8)
    with pytest.raises(ValueError, match="test images"):
        train_and_evaluate(train, wrong_size, **kwargs)


def test_bf16_precision_runs_the_forward_in_bfloat16_and_keeps_float32_weights() -> None:
    train, test = _blobs(8, seed=0), _blobs(20, seed=1)
    seen: list[torch.dtype] = []

    def record_conv_output(_module, _inputs, output) -> None:
        seen.append(output.dtype)

    from diffdistill import nets

    original = nets.build_net

    def hooked_build_net(*args, **kwargs):
        net = original(*args, **kwargs)
        first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(record_conv_output)
        return net

    import diffdistill.evaluation.train as train_module

    train_module.build_net, saved = hooked_build_net, train_module.build_net
    try:
        half = train_classifier(train, arch="convnet", protocol=_fast(precision="bf16"), seed=3,
                                net_overrides=NARROW)
        again = train_classifier(train, arch="convnet", protocol=_fast(precision="bf16"), seed=3,
                                 net_overrides=NARROW)
        full = train_classifier(train, arch="convnet", protocol=_fast(), seed=3, net_overrides=NARROW)
    finally:
        train_module.build_net = saved
    steps = 6 * 2
    assert seen[:steps] == [torch.bfloat16] * steps and seen[-1] == torch.float32
    assert all(p.dtype == torch.float32 for p in half.parameters())
    # reproducible bytes, a different rounding path from float32, and still learns
    assert half.training_history["train_loss"] == again.training_history["train_loss"]
    assert half.training_history["train_loss"] != full.training_history["train_loss"]
    accuracy = train_and_evaluate(train, test, arch="convnet", protocol=_fast(precision="bf16"), seed=3,
                                  net_overrides=NARROW)["test_accuracy"]
    assert accuracy > 0.8


def test_unknown_precision_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="precision"):
        get_protocol("dc", precision="fp16")


def _reference_evaluate_synset(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, orders, *, epochs: int,
                               lr: float, batch_size: int, recreate: bool = True) -> list[float]:
    """The training loop of DC's / MTT's `utils.evaluate_synset`, written out (augmentation off): range(Epoch + 1)
    epochs of SGD(momentum 0.9, wd 5e-4) minibatches; after epoch Epoch // 2 + 1, lr × 0.1 and a new SGD (with
    `recreate=False`, the old one at the new lr). Returns the lr each epoch trained with."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    used = []
    for ep in range(epochs + 1):
        order = next(orders)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        used.append(optimizer.param_groups[0]["lr"])
        if ep == epochs // 2 + 1:
            lr *= 0.1
            if recreate:
                optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
            else:
                optimizer.param_groups[0]["lr"] = lr
    return used


@pytest.mark.parametrize("reset", [True, False])
def test_dc_reference_trains_step_by_step_like_evaluate_synset(reset: bool) -> None:
    """Same init, same minibatches: the weights after dc_reference equal the reference loop's bit for bit, with
    the optimiser recreated at the decay (momentum restarts from zero), and equal the non-recreating loop when
    `reset_optimizer_at_decay` is off; the two references differ, so the test sees the reset."""
    from diffdistill.nets import build_net
    from diffdistill.rng import split_seeds

    train, seed = _blobs(4, seed=0), 5  # 12 images, batch 5: 3 steps per epoch, the last one partial
    protocol = get_protocol("dc_reference", epochs=4, batch_size=5, augment="none", reset_optimizer_at_decay=reset)
    model = train_classifier(train, arch="convnet", protocol=protocol, seed=seed, net_overrides=NARROW)
    history = model.training_history

    init_seed, data_seed = split_seeds(seed, 2)
    mean, std = channel_stats(train.images)
    x = (train.images.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    results = {}
    for recreate in (True, False):
        net = build_net("convnet", 1, 3, 16, generator=torch.Generator().manual_seed(init_seed), **NARROW)
        data = torch.Generator().manual_seed(data_seed)
        orders = (torch.randperm(12, generator=data) for _ in range(5))
        lrs = _reference_evaluate_synset(net, x, train.labels, orders, epochs=4, lr=0.01, batch_size=5,
                                         recreate=recreate)
        results[recreate] = (net, lrs)
    reference, lrs = results[reset]
    assert lrs == pytest.approx([0.01] * 4 + [0.001])  # Epoch 4: five epochs, the decay after epoch 3
    assert history["lr"] == pytest.approx(lrs) and len(history["train_loss"]) == 5 and history["steps"] == 15
    for (name, ours), theirs in zip(model.net.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(ours, theirs), name
    other = results[not reset][0]
    assert any(not torch.equal(a, b) for a, b in zip(reference.parameters(), other.parameters(), strict=True))


def test_dc_reference_trains_with_the_sets_learned_syn_lr() -> None:
    train, test = _blobs(4, seed=0), _blobs(2, seed=1)
    mtt_set = TensorBundle(train.tensors, {**train.meta, "syn_lr": 0.037})
    protocol = _fast("dc_reference", epochs=2)
    learned = train_and_evaluate(mtt_set, test, arch="convnet", protocol=protocol, seed=0, net_overrides=NARROW)
    assert (learned["lr_base"], learned["lr_source"], learned["lr"][0]) == (0.037, "meta.syn_lr", 0.037)
    plain = train_and_evaluate(train, test, arch="convnet", protocol=protocol, seed=0, net_overrides=NARROW)
    assert (plain["lr_base"], plain["lr_source"]) == (0.01, "protocol")
    assert learned["train_loss"] != plain["train_loss"]
    assert (learned["epochs"], learned["epochs_trained"], len(learned["train_loss"])) == (2, 3, 3)


def test_batch_size_follows_the_sets_ipc() -> None:
    train, test = _blobs(4, seed=0), _blobs(2, seed=1)  # 12 images
    protocol = _fast(epochs=2, batch_size_by_ipc={1: 2, 4: 5})
    by_ipc = train_and_evaluate(TensorBundle(train.tensors, {**train.meta, "ipc": 4}), test, arch="convnet",
                                protocol=protocol, seed=0, net_overrides=NARROW)
    assert by_ipc["batch_size"] == 5 and by_ipc["steps"] == 2 * 3
    no_ipc = train_and_evaluate(train, test, arch="convnet", protocol=protocol, seed=0, net_overrides=NARROW)
    assert no_ipc["batch_size"] == 16 and no_ipc["steps"] == 2  # no ipc in the meta (full data): batch_size


def test_a_protocols_nets_replace_the_architecture() -> None:
    train, test = _blobs(4, seed=0), _blobs(2, seed=1)
    vit = {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 16}
    runs = [train_and_evaluate(train, test, arch="vit", protocol=_fast("glad_reference", epochs=2), seed=0,
                               net_overrides=vit) for _ in range(2)]
    assert runs[0]["net"] == "vit_glad" and runs[0]["arch"] == "vit" and runs[0]["lr_base"] == 1e-3
    assert runs[0]["train_loss"] == runs[1]["train_loss"]  # seeded dropout: the same run twice
    ours = train_and_evaluate(train, test, arch="vit", protocol=_fast("glad", epochs=2), seed=0, net_overrides=vit)
    assert ours["net"] == "vit" and ours["train_loss"] != runs[0]["train_loss"]
