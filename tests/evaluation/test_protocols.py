"""Protocol configs and their learning-rate schedules, step by step; the papers' protocols against their code.

Reference values (../shared/notes/peers.md, read from the repositories): DC / DSA / DM / MTT `evaluate_synset`
runs `range(Epoch + 1)` epochs with `lr_schedule = [Epoch // 2 + 1]` (lr × 0.1 and a new SGD after that epoch),
MTT with `lr_net = syn_lr.item()`; D3HR's `validate.py` batch size 15 / 50 / 100 for IPC < 10 / < 50 / >= 50 and
`LambdaLR(0.5 · (1 + cos(π · epoch / epochs / 2)))` stepped once per epoch.
"""

from __future__ import annotations

import math

import pytest

from diffdistill.config import ConfigError
from diffdistill.evaluation import PROTOCOL_NAMES, PROTOCOLS, get_protocol, lr_at
from diffdistill.evaluation.protocols import decay_step


def test_named_protocols_carry_the_reference_settings() -> None:
    named = ("dc", "glad", "soft_label", "dc_reference", "glad_reference", "soft_label_reference")
    assert PROTOCOL_NAMES == (*named, *(f"{name}_no_augment" for name in named))  # DD-Ranking's ARS twins
    dc = get_protocol("dc")
    assert (dc.optimizer, dc.lr, dc.momentum, dc.weight_decay, dc.batch_size) == ("sgd", 0.01, 0.9, 5e-4, 256)
    assert (dc.schedule, dc.augment, dc.ema_decay, dc.loss) == ("step", "dsa", None, "ce")
    glad = get_protocol("glad")
    assert (glad.schedule, glad.ema_decay, glad.augment) == ("warmup_cosine", 0.995, "dsa")
    glad_archs = ("convnet", "convnet_bn", "resnet18", "vgg11", "alexnet", "vit")
    assert [glad.lr_for(a) for a in glad_archs] == [1e-3, 1e-3, 1e-3, 1e-4, 1e-3, 1e-3]
    soft = get_protocol("soft_label")
    assert (soft.optimizer, soft.weight_decay, soft.decay_norm_and_bias) == ("adamw", 0.01, False)
    assert (soft.loss, soft.temperature, soft.cutmix, soft.schedule) == ("soft_label", 20.0, True, "cosine")
    soft_archs = ("convnet_d4", "resnet18_bn", "vgg11", "alexnet", "vit")
    assert [soft.lr_for(a) for a in soft_archs] == [1e-3, 1e-3, 5e-4, 1e-4, 1e-4]
    assert get_protocol("dc", epochs=300).epochs == 300 and get_protocol("dc").epochs == 1000


def test_dc_schedule_drops_tenfold_at_half() -> None:
    protocol = get_protocol("dc")
    lrs = [lr_at(protocol, step, 10) for step in range(10)]
    assert lrs == [0.01] * 5 + [pytest.approx(0.001)] * 5


def test_glad_schedule_warms_up_linearly_then_cosines_to_zero() -> None:
    protocol = get_protocol("glad")
    total, base = 100, 1e-3
    assert lr_at(protocol, 0, total) == pytest.approx(1e-7 * base)
    for step in range(50):  # linear from 1e-7·lr to lr over the first half
        assert lr_at(protocol, step, total) == pytest.approx(base * (1e-7 + (1 - 1e-7) * step / 50))
    assert lr_at(protocol, 50, total) == pytest.approx(base)
    assert lr_at(protocol, 75, total) == pytest.approx(base / 2)
    for step in range(50, 100):
        assert lr_at(protocol, step, total) == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * (step - 50) / 50)))
    assert lr_at(protocol, total, total) == pytest.approx(0.0, abs=1e-15)
    assert lr_at(protocol, 99, total, base_lr=1e-4) == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi * 49 / 50)))


def test_soft_label_cosine_decays_to_zero_not_half() -> None:
    protocol = get_protocol("soft_label")
    total = 40
    lrs = [lr_at(protocol, step, total) for step in range(total + 1)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[20] == pytest.approx(0.5e-3)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-15) and lrs[-2] < 0.01 * lrs[0]  # RDED's quarter cosine ends at 0.5×
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


def test_lr_at_validates_its_step() -> None:
    with pytest.raises(ValueError, match="step"):
        lr_at(get_protocol("dc"), 11, 10)
    with pytest.raises(ValueError, match="total_steps"):
        lr_at(get_protocol("dc"), 0, 0)


def test_unknown_names_and_bad_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match="valid protocols: dc, glad, soft_label, dc_reference"):
        get_protocol("mtt")
    with pytest.raises(ValueError, match="unknown key protocol.epoch; valid keys"):
        get_protocol("dc", epoch=3)
    with pytest.raises(ValueError, match="protocol.schedule='poly' is not one of step, warmup_cosine"):
        get_protocol("dc", schedule="poly")
    with pytest.raises(ValueError, match="epochs"):
        get_protocol("dc", epochs=0)
    with pytest.raises(ValueError, match="together"):
        get_protocol("dc", mean=(0.5,))
    assert get_protocol("dc", mean=[0.5], std=[0.2]).mean == (0.5,)


def test_every_named_protocol_passes_its_own_checks() -> None:
    for name, protocol in PROTOCOLS.items():
        assert get_protocol(name, epochs=protocol.epochs) == protocol, name  # rebuilt through config.build


def test_reference_protocols_differ_from_ours_only_where_the_papers_do() -> None:
    dc, ref = get_protocol("dc"), get_protocol("dc_reference")
    changed = {k for k, v in ref.to_dict().items() if dc.to_dict()[k] != v}
    assert changed == {"name", "extra_epoch", "decay_at", "reset_optimizer_at_decay", "lr_from_meta", "nets"}
    assert (ref.epochs, ref.epochs_trained, ref.lr, ref.nets) == (1000, 1001, 0.01, {"vgg11": "vgg11_dc"})
    glad = get_protocol("glad_reference")
    assert glad.nets == {"vgg11": "vgg11_glad", "vit": "vit_glad"} and glad.schedule == "warmup_cosine"
    soft = get_protocol("soft_label_reference")
    assert (soft.schedule, soft.epochs, soft.loss, soft.optimizer) == ("quarter_cosine", 300, "soft_label", "adamw")
    assert soft.nets == {"convnet": "convnet_bn", "resnet18": "resnet18_bn"}
    assert [soft.net_for(a) for a in ("convnet", "alexnet", "resnet18", "vgg11", "vit")] == [
        "convnet_bn", "alexnet", "resnet18_bn", "vgg11", "vit"]


def test_dc_reference_schedule_matches_evaluate_synset_epoch_by_epoch() -> None:
    """Epoch = 1000: range(1001) epochs; lr 0.01 through epoch 501 (the decay runs after it), 0.001 from 502."""
    protocol = get_protocol("dc_reference")
    epochs = protocol.epochs_trained
    for steps_per_epoch in (1, 3):
        total = epochs * steps_per_epoch
        lrs = [lr_at(protocol, step, total, steps_per_epoch=steps_per_epoch) for step in range(total)]
        per_epoch = lrs[::steps_per_epoch]
        assert len(per_epoch) == 1001
        assert per_epoch[:502] == [0.01] * 502 and per_epoch[502:] == [pytest.approx(0.001)] * 499
        assert lrs == [lr for lr in per_epoch for _ in range(steps_per_epoch)]  # constant inside an epoch
        assert decay_step(protocol, total, steps_per_epoch) == 502 * steps_per_epoch
    # the reference's loop, written out for a small Epoch: lr per epoch and where SGD is recreated
    for epoch_count in range(1, 9):
        small = get_protocol("dc_reference", epochs=epoch_count)
        lr, want, recreated = 0.01, [], None
        for ep in range(epoch_count + 1):
            want.append(lr)
            if ep == epoch_count // 2 + 1:
                lr *= 0.1
                recreated = ep + 1  # the new SGD makes its first step in the next epoch
        got = [lr_at(small, ep, small.epochs_trained) for ep in range(small.epochs_trained)]
        assert got == pytest.approx(want), epoch_count
        if recreated <= epoch_count:  # the new SGD trains at least one epoch
            assert decay_step(small, small.epochs_trained) == recreated, epoch_count
        else:  # Epoch 1 and 2: the decay follows the last epoch and changes nothing
            assert decay_step(small, small.epochs_trained) >= small.epochs_trained, epoch_count


def test_ours_decays_at_half_of_the_steps_the_reference_two_epochs_later() -> None:
    ours, ref = get_protocol("dc", epochs=10), get_protocol("dc_reference", epochs=10)
    assert [lr_at(ours, s, 10) for s in range(10)] == [0.01] * 5 + [pytest.approx(0.001)] * 5
    assert [lr_at(ref, s, 11) for s in range(11)] == [0.01] * 7 + [pytest.approx(0.001)] * 4


def test_quarter_cosine_is_d3hrs_per_epoch_lambda_ending_at_half() -> None:
    protocol = get_protocol("soft_label_reference", epochs=400)
    steps_per_epoch = 2
    total = 400 * steps_per_epoch
    for step in range(total):
        epoch = step // steps_per_epoch
        expected = 1e-3 * 0.5 * (1.0 + math.cos(math.pi * epoch / 400 / 2))
        assert lr_at(protocol, step, total, 1e-3, steps_per_epoch=steps_per_epoch) == pytest.approx(expected)
    assert lr_at(protocol, total - 1, total, 1e-3, steps_per_epoch=2) == pytest.approx(0.502e-3, rel=1e-3)  # not 0


def test_soft_label_reference_batch_size_follows_the_ipc() -> None:
    protocol = get_protocol("soft_label_reference")
    assert [protocol.batch_size_for(ipc) for ipc in (1, 5, 9, 10, 49, 50, 100)] == [15, 15, 15, 50, 50, 100, 100]
    assert protocol.batch_size_for(None) == protocol.batch_size == 50  # the full data: no ipc
    assert get_protocol("soft_label").batch_size_for(1) == 50  # ours: 50 at every IPC


def test_lr_from_meta_is_the_sets_learned_syn_lr() -> None:
    protocol = get_protocol("dc_reference")
    assert protocol.learning_rate("convnet", {"syn_lr": 0.0321}) == (0.0321, "meta.syn_lr")
    assert protocol.learning_rate("convnet", {"method": "random"}) == (0.01, "protocol")  # MTT's initial syn_lr
    assert get_protocol("dc").learning_rate("convnet", {"syn_lr": 0.0321}) == (0.01, "protocol")
    assert get_protocol("glad_reference").learning_rate("vgg11", {"syn_lr": 0.5}) == (1e-4, "protocol")
    for bad in (-0.01, 0.0, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="not a positive learning rate"):
            protocol.learning_rate("convnet", {"syn_lr": bad})


def test_reference_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="protocol.reset_optimizer_at_decay applies to schedule 'step' only"):
        get_protocol("glad", reset_optimizer_at_decay=True)
    with pytest.raises(ConfigError, match="protocol.decay_at applies to schedule 'step' only"):
        get_protocol("soft_label", decay_at="after_epoch_half_plus_one")
    with pytest.raises(ConfigError, match="protocol.decay_at='epoch' is not one of half_of_steps"):
        get_protocol("dc", decay_at="epoch")
    with pytest.raises(ConfigError, match="batch_size_by_ipc must map IPCs"):
        get_protocol("soft_label", batch_size_by_ipc={0: 15})
    with pytest.raises(ConfigError, match=r"protocol.nets names unknown nets \{'vgg11': 'vgg13'\}"):
        get_protocol("dc", nets={"vgg11": "vgg13"})
    with pytest.raises(ValueError, match="steps_per_epoch"):
        lr_at(get_protocol("dc"), 0, 10, steps_per_epoch=0)
