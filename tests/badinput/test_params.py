"""Bad parameters (wrong types, out-of-range values, unknown names) at every algorithm-layer boundary.

Every case must end in a clear error (tests/badinput/clarity.py) that names the parameter.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from diffdistill.augment import DSA
from diffdistill.augment.dsa import FAMILIES
from diffdistill.config import build
from diffdistill.data.sources import SOURCE_NAMES, SourceConfig, load_source
from diffdistill.diffusion import ddim_invert, ddim_sample
from diffdistill.distill.d3hr import GroupSamplingConfig, sample_group
from diffdistill.distill.ld3m import OBJECTIVES, SPACES, LD3MConfig
from diffdistill.evaluation import get_protocol
from diffdistill.evaluation.protocols import PROTOCOL_NAMES, ProtocolConfig
from diffdistill.nets import NET_NAMES, build_net
from diffdistill.prior import PriorTrainConfig
from tests.badinput.clarity import assert_clear_error
from tests.badinput.strategies import (
    bad_positive_int,
    bounded,
    not_a_mapping,
    not_a_number,
    not_a_string,
    not_an_int,
    unknown_key,
    unknown_name,
)

FAST = bounded(30)

# ----------------------------------------------------------------------------- data sources

SOURCE_FIELDS = [f.name for f in dataclasses.fields(SourceConfig)]
SOURCE_INT_FIELDS = ["image_size", "seed", "min_per_class", "min_test_per_class", "max_per_class",
                     "max_test_per_class", "image_size_multiple", "max_image_size"]


@FAST
@given(key=unknown_key(SOURCE_FIELDS))
def test_source_unknown_key(key: str) -> None:
    assert_clear_error(lambda: SourceConfig.from_dict({"source": "digits", key: 1}), key,
                       case="SourceConfig.from_dict/unknown key")


@FAST
@given(name=unknown_name(SOURCE_NAMES))
def test_source_unknown_name(name: str) -> None:
    assert_clear_error(lambda: SourceConfig.from_dict({"source": name}), "source", case="SourceConfig/unknown name")


@FAST
@given(field=st.sampled_from(SOURCE_INT_FIELDS), value=not_an_int)
def test_source_int_field_wrong_type(field: str, value) -> None:
    if field.startswith("max_") and value is None:  # None = no cap / default: valid
        return
    if field == "image_size" and value is None:
        return
    assert_clear_error(lambda: SourceConfig.from_dict({"source": "digits", field: value}), field,
                       case="SourceConfig/int field wrong type")


@FAST
@given(size=st.one_of(st.integers(max_value=0), st.integers(1, 2048).filter(lambda s: s % 8 or s > 512)))
def test_source_image_size_out_of_range(size: int) -> None:
    assert_clear_error(lambda: SourceConfig.from_dict({"source": "digits", "image_size": size}), "image_size",
                       case="SourceConfig/image_size out of range")


@pytest.mark.parametrize("field", ["channels", "test_split", "max_bad_fraction", "test_size", "subset", "root",
                                   "allowed_image_sizes"])
@bounded(10)
@given(value=st.one_of(not_a_number, st.integers(-5, 7), st.floats(-2, 3)))
def test_source_other_fields_wrong_value(field: str, value) -> None:
    """Every value here is invalid for its field (valid ones are skipped), so each must be refused by name."""
    valid = {
        "channels": lambda v: v is None or (type(v) is int and v in (1, 3)),
        "test_split": lambda v: v in (None, "val", "test"),
        "max_bad_fraction": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
        "test_size": lambda v: (isinstance(v, int) and not isinstance(v, bool) and 1 <= v < 1797 - 10)
        or (isinstance(v, float) and 0 < v < 1),
        "subset": lambda v: v is None,  # only imagenet_subset reads it
        "root": lambda v: v is None,  # digits reads no root
        "allowed_image_sizes": lambda v: isinstance(v, list) and (not v or 16 in v),
    }
    if valid[field](value):
        return
    params = {"source": "digits", "image_size": 16, field: value}
    if field == "subset":  # meaningful only for the sources that read them
        params.update(source="imagenet_subset", root="/nonexistent")
    if field == "root":
        params["source"] = "image_folder"
    assert_clear_error(lambda: load_source(SourceConfig.from_dict(params)), field,
                       case=f"SourceConfig/{field} wrong value")


def test_source_missing_root(tmp_path) -> None:
    for name in ("image_folder", "cifar10", "fashion_mnist"):
        config = SourceConfig.from_dict({"source": name, "root": str(tmp_path / "absent")})
        assert_clear_error(lambda config=config: load_source(config), "root", str(tmp_path / "absent"),
                           case=f"load_source/{name} missing root")


# ----------------------------------------------------------------------------- evaluation protocols

PROTOCOL_FIELDS = [f.name for f in dataclasses.fields(ProtocolConfig)]


@FAST
@given(name=st.one_of(unknown_name(PROTOCOL_NAMES), not_a_string))
def test_protocol_unknown_name(name) -> None:
    assert_clear_error(lambda: get_protocol(name), "protocol", case="get_protocol/unknown name")


@FAST
@given(key=unknown_key(PROTOCOL_FIELDS))
def test_protocol_unknown_override(key: str) -> None:
    assert_clear_error(lambda: get_protocol("dc", **{key: 1}), key, case="get_protocol/unknown override")


@FAST
@given(field=st.sampled_from(["epochs", "batch_size", "eval_batch_size"]), value=bad_positive_int)
def test_protocol_count_out_of_range(field: str, value) -> None:
    assert_clear_error(lambda: get_protocol("dc", **{field: value}), field, case="get_protocol/count bad")


@FAST
@given(field=st.sampled_from(["lr", "momentum", "weight_decay", "temperature", "ema_decay", "step_gamma"]),
       value=st.one_of(not_a_number.filter(lambda v: v is not None), st.floats(max_value=0),
                       st.floats(allow_nan=True).filter(lambda f: f != f)))
def test_protocol_float_wrong(field: str, value) -> None:
    if field in ("momentum", "weight_decay") and isinstance(value, float) and value == value and value >= 0:
        return  # 0 momentum / weight decay are valid
    assert_clear_error(lambda: get_protocol("dc", **{field: value}), field, case="get_protocol/float bad")


@FAST
@given(field=st.sampled_from(["optimizer", "schedule", "augment", "loss"]), value=st.text(max_size=8))
def test_protocol_unknown_choice(field: str, value: str) -> None:
    if value in {"sgd", "adamw", "step", "warmup_cosine", "cosine", "constant", "dsa", "crop_flip", "none", "ce",
                 "soft_label"}:
        return
    assert_clear_error(lambda: get_protocol("dc", **{field: value}), field, case="get_protocol/unknown choice")


@FAST
@given(mean=st.lists(st.floats(0, 1), min_size=1, max_size=4),
       std=st.one_of(st.lists(st.floats(-1, 1), min_size=0, max_size=4), st.lists(st.text(max_size=2), min_size=1),
                     st.integers(), st.lists(st.just(float("nan")), min_size=1, max_size=4)))
def test_protocol_mean_std_mismatch(mean, std) -> None:
    if isinstance(std, list) and len(mean) == len(std) and std and all(isinstance(v, float) and v > 0 for v in std):
        return
    assert_clear_error(lambda: get_protocol("dc", mean=mean, std=std), "std", case="get_protocol/mean-std mismatch")


def test_protocol_dsa_strategy_unknown() -> None:
    assert_clear_error(lambda: get_protocol("dc", dsa_strategy="color_warp"), "dsa_strategy", "warp",
                       case="get_protocol/unknown dsa_strategy")


# ----------------------------------------------------------------------------- nets


@FAST
@given(name=st.one_of(unknown_name(NET_NAMES), not_a_string.filter(lambda v: not isinstance(v, list))))
def test_net_unknown_name(name) -> None:
    assert_clear_error(lambda: build_net(name, 1, 10, 16), "net", case="build_net/unknown name")


@FAST
@given(field=st.sampled_from(["in_channels", "num_classes", "image_size"]),
       value=st.one_of(bad_positive_int, st.integers(257, 10**6)))
def test_net_dimensions_bad(field: str, value) -> None:
    args = {"in_channels": 1, "num_classes": 10, "image_size": 16, field: value}
    if field != "image_size" and isinstance(value, int) and not isinstance(value, bool) and value > 256:
        return  # many channels / classes are valid
    assert_clear_error(lambda: build_net("convnet", args["in_channels"], args["num_classes"], args["image_size"]),
                       field, case="build_net/dimension bad")


@FAST
@given(name=st.sampled_from(NET_NAMES), key=unknown_key(["depth", "width", "norm", "patch_size", "dim", "heads",
                                                          "mlp_dim"]))
def test_net_unknown_override(name: str, key: str) -> None:
    assert_clear_error(lambda: build_net(name, 1, 10, 16, **{key: 1}), key, case="build_net/unknown override")


@FAST
@given(name=st.sampled_from([n for n in NET_NAMES if n != "alexnet"]),
       override=st.sampled_from(["width", "norm", "depth"]),
       value=st.one_of(bad_positive_int, st.text(max_size=6), st.integers(7, 50)))
def test_net_override_bad_value(name: str, override: str, value) -> None:
    from diffdistill.nets.registry import _BUILDERS

    if override not in _BUILDERS[name].overrides:
        return
    if override == "width" and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    if override == "depth" and name == "vit" and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return  # a deep ViT is valid
    if override == "norm" and value in ("instance", "batch", "none"):
        return
    # depth 7..50 on 16 px: more halvings than the image has pixels
    assert_clear_error(lambda: build_net(name, 1, 10, 16, **{override: value}), override,
                       case=f"build_net/{override} bad value")


@FAST
@given(patch=st.one_of(st.integers(-3, 40).filter(lambda p: p < 1 or p > 8), not_an_int))  # 16 px: 2×2 patches
def test_vit_patch_size_bad(patch) -> None:
    assert_clear_error(lambda: build_net("vit", 3, 10, 16, patch_size=patch), "patch_size",
                       case="build_net/vit patch_size bad")


@FAST
@given(dim=st.integers(1, 64), heads=st.integers(1, 9))
def test_vit_heads_not_dividing_dim(dim: int, heads: int) -> None:
    if dim % heads == 0:
        return
    assert_clear_error(lambda: build_net("vit", 3, 10, 16, dim=dim, heads=heads), "heads",
                       case="build_net/vit heads do not divide dim")


# ----------------------------------------------------------------------------- augmentation


@FAST
@given(parts=st.lists(st.one_of(st.sampled_from(FAMILIES), st.text(max_size=6)), min_size=1, max_size=4))
def test_dsa_bad_strategy_string(parts) -> None:
    strategy = "_".join(parts)
    families = strategy.split("_")
    if strategy.lower() in ("", "none") or all(f in FAMILIES for f in families):
        return
    assert_clear_error(lambda: DSA(strategy), "strategy", case="DSA/unknown family")


@FAST
@given(strategy=not_a_string)
def test_dsa_strategy_not_a_string(strategy) -> None:
    assert_clear_error(lambda: DSA(strategy), "strategy", case="DSA/strategy wrong type")


# ----------------------------------------------------------------------------- prior training config


def _prior_config(params: dict) -> PriorTrainConfig:
    """What `train_prior` does with its parameters before any training."""
    return PriorTrainConfig.from_dict(params)  # every check lives in the dataclasses (diffdistill.config)


PRIOR_SECTIONS = ["autoencoder", "denoiser", "schedule", "autoencoder_train", "denoiser_train"]


@FAST
@given(section=st.sampled_from([None, *PRIOR_SECTIONS]), key=st.text("abcdefghij_", min_size=1, max_size=10))
def test_prior_config_unknown_key(section, key: str) -> None:
    params = {key: 1} if section is None else {section: {key: 1}}
    defaults = PriorTrainConfig() if section is None else getattr(PriorTrainConfig(), section)
    if hasattr(defaults, key):
        return
    assert_clear_error(lambda: _prior_config(params), key, case="PriorTrainConfig/unknown key")


@FAST
@given(section=st.sampled_from(PRIOR_SECTIONS), value=not_a_mapping)
def test_prior_config_section_not_a_mapping(section: str, value) -> None:
    assert_clear_error(lambda: _prior_config({section: value}), section,
                       case="PriorTrainConfig/section not a mapping")


@FAST
@given(section=st.sampled_from(["autoencoder_train", "denoiser_train"]),
       field=st.sampled_from(["steps", "batch_size", "lr"]),
       value=st.one_of(not_a_number, st.integers(max_value=-1)))
def test_prior_config_phase_value_bad(section: str, field: str, value) -> None:
    assert_clear_error(lambda: _prior_config({section: {field: value}}), field,
                       case="PriorTrainConfig/phase value bad")


@FAST
@given(field=st.sampled_from(["mode", "seed", "checkpoint_every", "log_every", "default_guidance"]),
       value=st.one_of(not_a_number, st.integers(max_value=0)))
def test_prior_config_top_value_bad(field: str, value) -> None:
    if field in ("seed", "default_guidance") and isinstance(value, int) and not isinstance(value, bool):
        return  # seed 0 / -3 and guidance 0 are not wrong for the config
    assert_clear_error(lambda: _prior_config({field: value}), field,
                       case="PriorTrainConfig/top-level value bad")


@FAST
@given(field=st.sampled_from(["block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups"]),
       value=st.one_of(st.text(max_size=4), st.integers(max_value=0), st.lists(st.integers(-2, 0), min_size=1,
                                                                               max_size=3)))
def test_prior_config_architecture_bad(field: str, value) -> None:
    if field == "block_out_channels" and isinstance(value, str) and value == "":
        value = "x"
    assert_clear_error(lambda: _prior_config({"autoencoder": {field: value}}), field,
                       case="PriorTrainConfig/architecture value bad")


# ----------------------------------------------------------------------------- diffusion samplers


class _StepPrior:
    """The two calls the samplers make, on a DDPM-1000 schedule; eps = 0 (no network needed)."""

    def make_scheduler(self, num_steps: int):
        from diffusers import DDIMScheduler

        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= 1000:
            raise ValueError(f"num_steps={num_steps!r} must be an int in 1..1000")
        scheduler = DDIMScheduler(num_train_timesteps=1000)
        scheduler.set_timesteps(num_steps)
        return scheduler

    def predict_noise(self, z, t, c, guidance):
        return torch.zeros_like(z)


@pytest.fixture(scope="module")
def tiny_prior():
    from tests.prior.tiny import build_prior

    return build_prior("kl", "unet_identity")


@FAST
@given(steps=st.one_of(bad_positive_int, st.integers(1001, 10**7)), which=st.sampled_from(["sample", "invert"]))
def test_ddim_bad_num_steps(tiny_prior, steps, which: str) -> None:
    z, c = torch.zeros(2, 2, 4, 4), tiny_prior.condition(torch.tensor([0, 1]))
    if which == "sample":
        call = lambda: ddim_sample(tiny_prior, z, c, num_steps=steps)  # noqa: E731
    else:
        call = lambda: ddim_invert(tiny_prior, z, c, num_steps=steps, invert_steps=1)  # noqa: E731
    assert_clear_error(call, "num_steps", case=f"ddim_{which}/num_steps bad")


@FAST
@given(num_steps=st.integers(1, 20), offset=st.one_of(st.integers(1, 100), st.integers(-100, -1)),
       which=st.sampled_from(["start_step", "invert_steps"]))
def test_ddim_step_index_out_of_range(num_steps: int, offset: int, which: str) -> None:
    bad = num_steps + offset if offset > 0 else offset
    z, c = torch.zeros(2, 2, 4, 4), torch.zeros(2, 3)
    if which == "start_step":
        call = lambda: ddim_sample(_StepPrior(), z, c, num_steps=num_steps, start_step=bad)  # noqa: E731
    else:
        call = lambda: ddim_invert(_StepPrior(), z, c, num_steps=num_steps, invert_steps=bad)  # noqa: E731
    assert_clear_error(call, which, case=f"ddim/{which} out of range")


@FAST
@given(value=st.one_of(not_a_number.filter(lambda v: not isinstance(v, bool)), st.floats(max_value=-1e-6),
                       st.just(float("nan"))))
def test_ddim_bad_eta(value) -> None:
    z, c = torch.zeros(2, 2, 4, 4), torch.zeros(2, 3)
    assert_clear_error(lambda: ddim_sample(_StepPrior(), z, c, num_steps=3, eta=value,
                                           generator=torch.Generator().manual_seed(0)), "eta",
                       case="ddim_sample/eta bad")


@FAST
@given(value=st.one_of(not_a_number.filter(lambda v: not isinstance(v, bool)), st.just(float("nan")),
                       st.just(float("inf"))))
def test_ddim_bad_guidance(tiny_prior, value) -> None:
    z, c = torch.zeros(2, 2, 4, 4), tiny_prior.condition(torch.tensor([0, 1]))
    assert_clear_error(lambda: ddim_sample(tiny_prior, z, c, num_steps=2, guidance=value), "guidance",
                       case="ddim_sample/guidance bad")


def test_ddim_condition_batch_mismatch() -> None:
    assert_clear_error(lambda: ddim_sample(_StepPrior(), torch.zeros(2, 2, 4, 4), torch.zeros(3, 3), num_steps=2),
                       "c", "batch", case="ddim_sample/condition batch mismatch")


# ----------------------------------------------------------------------------- D3HR group sampling

GROUP_SAMPLING = {"m": 4, "weights": [1.0, 1.0, 0.5], "chunk_size": 2, "seed": 0}


def _group_sampling(**changed) -> GroupSamplingConfig:
    return build(GroupSamplingConfig, {**GROUP_SAMPLING, **changed}, "d3hr.group_sampling")


@FAST
@given(field=st.sampled_from(["m", "chunk_size"]), value=bad_positive_int)
def test_group_sampling_counts_bad(field: str, value) -> None:
    assert_clear_error(lambda: _group_sampling(**{field: value}), field, case="GroupSamplingConfig/count bad")


@FAST
@given(value=bad_positive_int)
def test_group_sampling_ipc_bad(value) -> None:
    mu, sigma = torch.zeros(3), torch.ones(3)
    assert_clear_error(lambda: sample_group(mu, sigma, _group_sampling(), ipc=value), "ipc",
                       case="sample_group/ipc bad")


@FAST
@given(weights=st.one_of(
    st.lists(st.floats(0, 2), max_size=5).filter(lambda w: len(w) != 3),
    st.tuples(st.floats(0, 2), st.floats(-5, -1e-3), st.floats(0, 2)),
    st.tuples(st.just(float("nan")), st.floats(0, 1), st.floats(0, 1)),
))
def test_group_sampling_weights_bad_values(weights) -> None:
    assert_clear_error(lambda: _group_sampling(weights=list(weights)), "weights",
                       case="GroupSamplingConfig/weights bad")


@FAST
@given(weights=st.one_of(st.tuples(st.text("abcxyz", max_size=3), st.floats(0, 1), st.floats(0, 1)),
                         st.integers(), st.none()))
def test_group_sampling_weights_wrong_type(weights) -> None:
    assert_clear_error(lambda: _group_sampling(weights=weights), "weights",
                       case="GroupSamplingConfig/weights wrong type")


@FAST
@given(seed=not_an_int)
def test_group_sampling_seed_bad(seed) -> None:
    assert_clear_error(lambda: _group_sampling(seed=seed), "seed", case="GroupSamplingConfig/seed bad")


@FAST
@given(field=st.sampled_from(["m", "weights", "seed"]), value=st.one_of(not_an_int, st.integers(max_value=0)))
def test_group_sampling_made_directly_is_checked_where_it_is_used(field: str, value) -> None:
    if field == "seed" and isinstance(value, int) and not isinstance(value, bool):
        return  # any int is a seed
    config = GroupSamplingConfig(**{**GROUP_SAMPLING, field: value})
    assert_clear_error(lambda: sample_group(torch.zeros(3), torch.ones(3), config, ipc=2), field,
                       case="sample_group/config made directly")


# ----------------------------------------------------------------------------- LD3M config


def _ld3m(params: dict) -> LD3MConfig:
    return build(LD3MConfig, params, "ld3m")  # every check lives in the dataclasses (diffdistill.config)


@FAST
@given(key=unknown_key([f.name for f in dataclasses.fields(LD3MConfig)]))
def test_ld3m_unknown_key(key: str) -> None:
    assert_clear_error(lambda: _ld3m({key: 1}), key, case="LD3MConfig/unknown key")


@FAST
@given(section=st.sampled_from(["sampler", "dc", "dm", "mtt"]), key=st.text("abcdefghij_", min_size=1, max_size=10))
def test_ld3m_unknown_nested_key(section: str, key: str) -> None:
    if hasattr(getattr(LD3MConfig(), section), key):
        return
    assert_clear_error(lambda: _ld3m({section: {key: 1}}), key, case="LD3MConfig/unknown nested key")


@FAST
@given(field=st.sampled_from(["objective", "space", "init"]), value=st.one_of(st.text(max_size=8), not_a_string))
def test_ld3m_unknown_choice(field: str, value) -> None:
    if value in (*OBJECTIVES, *SPACES, "real", "noise"):
        return
    assert_clear_error(lambda: _ld3m({field: value}), field, case="LD3MConfig/unknown choice")


@FAST
@given(field=st.sampled_from(["ipc", "iterations", "checkpoint_every", "seed"]),
       value=st.one_of(not_an_int, st.integers(max_value=-1)))
def test_ld3m_int_bad(field: str, value) -> None:
    if field == "seed" and isinstance(value, int) and not isinstance(value, bool):
        return
    assert_clear_error(lambda: _ld3m({field: value}), field, case="LD3MConfig/int field bad")


@FAST
@given(field=st.sampled_from(["lr", "momentum"]),
       value=st.one_of(not_a_number.filter(lambda v: v is not None), st.floats(max_value=-1e-6),
                       st.floats(1.0, 10.0), st.just(float("nan"))))
def test_ld3m_float_bad(field: str, value) -> None:
    if field == "lr" and isinstance(value, float) and value >= 1.0:
        return  # a big lr is allowed
    assert_clear_error(lambda: _ld3m({field: value}), field, case="LD3MConfig/float field bad")


@FAST
@given(section=st.sampled_from(["sampler", "dc", "dm", "mtt"]), value=not_a_mapping)
def test_ld3m_section_not_a_mapping(section: str, value) -> None:
    assert_clear_error(lambda: _ld3m({section: value}), section, case="LD3MConfig/section not a mapping")


@FAST
@given(field=st.sampled_from(["num_steps", "chunk_size", "variant", "backprop", "guidance", "eta"]),
       value=st.one_of(not_a_number, st.integers(max_value=0)))
def test_ld3m_sampler_value_bad(field: str, value) -> None:
    if field in ("guidance", "eta") and isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return
    if field == "guidance" and isinstance(value, int) and not isinstance(value, bool):
        return  # a negative guidance is odd but defined
    assert_clear_error(lambda: _ld3m({"sampler": {field: value}}), field, case="LD3MConfig/sampler value bad")
