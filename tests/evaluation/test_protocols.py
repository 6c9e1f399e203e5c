"""Protocol configs and their learning-rate schedules, step by step."""

from __future__ import annotations

import math

import pytest

from diffdistill.evaluation import PROTOCOL_NAMES, get_protocol, lr_at


def test_named_protocols_carry_the_reference_settings() -> None:
    assert PROTOCOL_NAMES == ("dc", "glad", "soft_label")
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
    with pytest.raises(ValueError, match="valid protocols: dc, glad, soft_label"):
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
