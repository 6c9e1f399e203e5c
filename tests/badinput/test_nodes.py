"""Node functions under pipelines/*/nodes.py with parameter dicts that have wrong keys or wrong types.

Every node gets a valid parameter dict (the shape of conf/base) with one key dropped, or one value replaced by
a value of the wrong type; the error must name the key. Nodes that belong to other helpers (gaussians, d3hr)
are exercised too.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from diffdistill.data.bundle import TensorBundle
from diffdistill.evaluation import get_protocol, train_classifier
from diffdistill.evaluation.saved import classifier_to_bundle
from diffdistill.pipelines.baselines.nodes import make_herding_subset, make_random_subset
from diffdistill.pipelines.evaluate.nodes import evaluate_full_data, evaluate_set
from diffdistill.pipelines.latents.nodes import encode_and_invert
from diffdistill.pipelines.preprocess.nodes import load_raw_source
from diffdistill.pipelines.prior.nodes import build_prior, score_prior
from diffdistill.pipelines.report.nodes import build_report
from diffdistill.pipelines.teacher.nodes import train_teacher
from tests.badinput.clarity import assert_clear_error
from tests.badinput.strategies import bounded
from tests.badinput.test_bundles import distilled, real_split

NODE = bounded(25)
WRONG = {int: ["3", 2.5, None, [1], True], float: ["high", None, [1.0], {"a": 1}], str: [3, None, ["dc"], 1.5],
         list: ["convnet", 3, None, {"a": 1}], dict: ["epochs", 3, [1, 2]]}

PARAMS = {
    "preprocess": ({"source": "digits", "image_size": 16, "seed": 0, "test_size": 450, "max_per_class": 5},
                   {"source": str, "image_size": int, "seed": int, "test_size": int, "max_per_class": int}),
    "baselines": ({"seed": 0}, {"seed": int}),
    "teacher": ({"arch": "convnet", "protocol": "dc", "protocol_overrides": {"epochs": 1}, "seed": 0},
                {"arch": str, "protocol": str, "protocol_overrides": dict, "seed": int}),
    "evaluate": ({"archs": ["convnet"], "unseen_archs": ["convnet"], "protocol": "dc",
                  "protocol_overrides": {"epochs": 1}, "seeds": [0],
                  "full_data": {"seeds": [0], "protocol_overrides": {"epochs": 1}}},
                 {"archs": list, "unseen_archs": list, "protocol": str, "protocol_overrides": dict, "seeds": list,
                  "full_data": dict}),
    "latents": ({"num_steps": 4, "invert_steps": 2, "invert_guidance": 1.0, "sample_posterior": False,
                 "batch_size": 4, "round_trip_images": 2, "seed": 0},
                {"num_steps": int, "invert_steps": int, "invert_guidance": float, "batch_size": int,
                 "round_trip_images": int, "seed": int}),
    "prior_quality": ({"quality": {"max_test_images": 4, "samples_per_class": 1, "num_steps": 2, "guidance": 1.0,
                                   "seed": 1}},
                      {"max_test_images": int, "samples_per_class": int, "num_steps": int, "seed": int}),
    "report": ({"archs": ["convnet"], "unseen_archs": ["convnet"]}, {"archs": list, "unseen_archs": list}),
}


def _broken(section: str, data) -> tuple[dict, str]:
    """A copy of `section`'s valid params with one key dropped or given a wrong-type value; (params, key)."""
    params, types = PARAMS[section]
    params = copy.deepcopy(params)
    key = data.draw(st.sampled_from(sorted(types)), label="key")
    target = params["quality"] if section == "prior_quality" else params
    optional = (section == "preprocess" and key != "source") or key == "protocol_overrides"  # have defaults
    if not optional and data.draw(st.booleans(), label="drop"):
        del target[key]
    else:
        target[key] = data.draw(st.sampled_from(WRONG[types[key]]), label="value")
    return params, key


@pytest.fixture(scope="module", autouse=True)
def scratch_cwd(tmp_path_factory):
    """Nodes keep resumable state under ./data/checkpoints: never in the checkout."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("nodes"))
    yield
    os.chdir(previous)


@pytest.fixture(scope="module")
def split3() -> tuple[TensorBundle, TensorBundle]:
    return real_split(n_per_class=4, classes=3), real_split(n_per_class=2, classes=3, split="test", seed=1)


@pytest.fixture(scope="module")
def teacher3(split3) -> TensorBundle:
    train, _ = split3
    model = train_classifier(train, arch="convnet", protocol=get_protocol("dc", epochs=1), seed=0,
                             net_overrides={"width": 4})
    bundle = classifier_to_bundle(model, {"arch": "convnet", "in_channels": 1, "num_classes": 3, "image_size": 8})
    bundle.meta["net_overrides"] = {"width": 4}
    return bundle


@pytest.fixture(scope="module")
def prior3():
    from tests.prior.tiny import build_prior as tiny_prior

    return tiny_prior("kl", "unet_identity")


@NODE
@given(data=st.data())
def test_preprocess_node(data) -> None:
    params, key = _broken("preprocess", data)
    if key in ("max_per_class", "image_size") and params[key] is None:
        return  # None = no cap / the source's default size: valid
    name = "source" if key == "source" else key
    assert_clear_error(lambda: load_raw_source(params), name, case="preprocess.load_raw_source/bad params")


@NODE
@given(data=st.data())
def test_baselines_random_node(split3, data) -> None:
    params, key = _broken("baselines", data)
    assert_clear_error(lambda: make_random_subset(split3[0], params, ipc=1, name="random_ipc1"), key,
                       case="baselines.make_random_subset/bad params")


@NODE
@given(ipc=st.one_of(st.integers(5, 50), st.integers(-3, 0)))
def test_baselines_ipc_out_of_range(split3, ipc: int) -> None:
    assert_clear_error(lambda: make_random_subset(split3[0], {"seed": 0}, ipc=ipc, name=f"random_ipc{ipc}"), "ipc",
                       case="baselines.make_random_subset/ipc out of range")


@pytest.mark.parametrize("mismatch", ["channels", "image_size", "classes"])
def test_herding_with_a_teacher_of_another_dataset(split3, teacher3, mismatch: str) -> None:
    """The teacher_model of an older run (other channels / size / classes) must be refused, not crash in a conv."""
    train = {"channels": real_split(n_per_class=4, classes=3, channels=3),
             "image_size": real_split(n_per_class=4, classes=3, size=16),
             "classes": real_split(n_per_class=4, classes=2)}[mismatch]
    assert_clear_error(lambda: make_herding_subset(train, teacher3, {"seed": 0}, "cpu", ipc=1, name="herding_ipc1"),
                       "teacher_model",
                       case=f"baselines.make_herding_subset/teacher {mismatch} mismatch")


@NODE
@given(data=st.data())
def test_teacher_node(split3, data) -> None:
    params, key = _broken("teacher", data)
    assert_clear_error(lambda: train_teacher(*split3, params, "cpu"), key, case="teacher.train_teacher/bad params")


@NODE
@given(data=st.data())
def test_evaluate_set_node(split3, teacher3, data) -> None:
    params, key = _broken("evaluate", data)
    if key == "full_data":
        return  # read by evaluate_full_data only
    train, test = split3
    assert_clear_error(lambda: evaluate_set(distilled(classes=3), train, test, teacher3, params, "cpu",
                                            set_name="random_ipc1"), key, case="evaluate.evaluate_set/bad params")


@NODE
@given(data=st.data())
def test_evaluate_full_data_node(split3, data) -> None:
    params, key = _broken("evaluate", data)
    if key == "seeds":
        return  # the full-data bound reads full_data.seeds
    assert_clear_error(lambda: evaluate_full_data(*split3, params, "cpu"), key,
                       case="evaluate.evaluate_full_data/bad params")


@NODE
@given(data=st.data())
def test_latents_node(split3, prior3, data) -> None:
    params, key = _broken("latents", data)
    assert_clear_error(lambda: encode_and_invert(split3[0], prior3, params, "cpu"), key,
                       case="latents.encode_and_invert/bad params")


@NODE
@given(num_steps=st.integers(1, 8), invert_steps=st.one_of(st.integers(-3, 0), st.integers(9, 20)))
def test_latents_invert_steps_out_of_range(split3, prior3, num_steps: int, invert_steps: int) -> None:
    params = {**PARAMS["latents"][0], "num_steps": num_steps, "invert_steps": invert_steps}
    assert_clear_error(lambda: encode_and_invert(split3[0], prior3, params, "cpu"), "invert_steps",
                       case="latents.encode_and_invert/invert_steps out of range")


def test_latents_with_a_prior_of_another_dataset(prior3) -> None:
    train = real_split(n_per_class=2, classes=3, size=16)
    assert_clear_error(lambda: encode_and_invert(train, prior3, PARAMS["latents"][0], "cpu"), "image_size",
                       case="latents.encode_and_invert/prior of another dataset")


@NODE
@given(data=st.data())
def test_prior_score_node(split3, teacher3, prior3, data) -> None:
    params, key = _broken("prior_quality", data)
    assert_clear_error(lambda: score_prior(prior3, split3[1], teacher3, params, "cpu"), key,
                       case="prior.score_prior/bad params")


@NODE
@given(source=st.one_of(st.text(max_size=8), st.none(), st.integers()))
def test_prior_build_node_unknown_source(split3, source) -> None:
    if source in ("train", "train_denoiser", "fine_tune", "dit_folder", "components"):
        return
    assert_clear_error(lambda: build_prior(split3[0], {"source": source}, "cpu"), "source",
                       case="prior.build_prior/unknown source")


@pytest.mark.parametrize("source,params,name", [
    ("dit_folder", {"dit_folder": None}, "dit_folder"),
    ("dit_folder", {"dit_folder": "/nonexistent/dit"}, "/nonexistent/dit"),
    ("components", {"components": {"vae": None, "denoiser": None}}, "vae"),
    ("components", {"components": {"vae": "/nonexistent/vae", "denoiser": "/nonexistent/unet"}}, "/nonexistent/vae"),
    ("train_denoiser", {"components": {"vae": None}}, "vae"),
    ("train_denoiser", {"components": {"vae": "/nonexistent/vae"}}, "/nonexistent/vae"),
    ("train", {"native_size": 64}, "native_size"),
    ("train", {"train": {"denoiser_train": {"steps": "ten"}}}, "steps"),
    ("train", {"train": {"autoencodr": {}}}, "autoencodr"),
])
def test_prior_build_node_bad_folders_and_train_params(split3, source: str, params: dict, name: str) -> None:
    assert_clear_error(lambda: build_prior(split3[0], {"source": source, **params}, "cpu"), name,
                       case=f"prior.build_prior/{source} {name}")


@NODE
@given(data=st.data())
def test_report_node(data) -> None:
    params, key = _broken("report", data)
    result = {"set": "random_ipc1", "status": "done", "meta": {"method": "random", "ipc": 1},
              "summary": {"convnet": {"mean": 50.0, "std": 1.0, "n": 1}}}
    assert_clear_error(lambda: build_report(params, {}, result), key, case="report.build_report/bad params")


# ----------------------------------------------------------------------------- nodes owned by other helpers
# pipelines/gaussians and pipelines/d3hr read their parameters with bare `params[...]` / int(...): a missing
# key is a bare KeyError and a wrong type Python's own message. Reported to the lead, not fixed here.


def _noise_pair():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(4)
    meta = {"prior_fingerprint": "abc", "class_names": ["a", "b", "c"], "num_classes": 3, "num_steps": 4,
            "invert_steps": 2, "invert_guidance": 1.0, "start_step": 2}
    noise = TensorBundle({"noise": torch.randn(12, 2, 2, 2, generator=g), "labels": labels}, meta)
    latents = TensorBundle({"latents": torch.randn(12, 2, 2, 2, generator=g), "labels": labels}, meta)
    return noise, latents


GAUSSIAN_PARAMS = {"batch_size": int}
GROUP_PARAMS = {"m": int, "weights": list, "chunk_size": int, "seed": int}


@NODE
@given(drop=st.booleans(), value=st.sampled_from(WRONG[int]))
def test_gaussians_node(drop: bool, value) -> None:
    from diffdistill.pipelines.gaussians.nodes import fit_noise_gaussians

    params = {} if drop else {"batch_size": value}
    assert_clear_error(lambda: fit_noise_gaussians(*_noise_pair(), params), "batch_size",
                       case="gaussians.fit_noise_gaussians/bad params")


@NODE
@given(key=st.sampled_from(sorted(GROUP_PARAMS)), drop=st.booleans(), data=st.data())
def test_d3hr_select_groups_node(split3, key: str, drop: bool, data) -> None:
    from diffdistill.distill.d3hr import fit_class_gaussians
    from diffdistill.pipelines.d3hr.nodes import select_groups

    noise, _ = _noise_pair()
    bundle = fit_class_gaussians([(noise["noise"], noise["labels"])], 3).to_bundle()
    bundle.meta.update({k: noise.meta[k] for k in ("prior_fingerprint", "class_names", "num_steps", "invert_steps",
                                                   "invert_guidance", "start_step")})
    sampling = {"m": 4, "weights": [1.0, 1.0, 0.5], "chunk_size": 2, "seed": 0}
    if drop:
        del sampling[key]
    else:
        sampling[key] = data.draw(st.sampled_from(WRONG[GROUP_PARAMS[key]]))
    assert_clear_error(lambda: select_groups(bundle, split3[0], {"group_sampling": sampling}, ipc=1,
                                             factorised=False), key, case="d3hr.select_groups/bad params")
