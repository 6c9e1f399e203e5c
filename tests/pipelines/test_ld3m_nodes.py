"""The `ld3m` node and pipeline: distilled-set format and lineage meta, name/IPC/lineage refusals, resume bytes,
parameter resolution, the namespaces the registry builds, and the report's gradient-SNR hook."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from diffusers import DDIMScheduler
from kedro.io.core import Version

from diffdistill.data.bundle import TensorBundle
from diffdistill.datasets import AtomicJSONDataset
from diffdistill.evaluation import channel_stats
from diffdistill.pipelines.experts.nodes import train_expert_trajectories
from diffdistill.pipelines.ld3m import nodes
from diffdistill.pipelines.ld3m import params as ld3m_params
from diffdistill.pipelines.report.nodes import gradient_snr_plot, rolling_snr
from diffdistill.workdir import module_fingerprint, split_fingerprint

NUM_CLASSES, SIDE = 3, 8
PROJECT = Path(__file__).resolve().parents[2]
PARAMS = {
    "iterations": {"dc": 1, "dm": 2, "mtt": 1},
    "lr": {"latent": {"dc": 1e-3, "dm": 0.05, "mtt": 10.0}, "pixel": {"dm": 0.5}},
    "seed": 0, "checkpoint_every": 1, "dsa_strategy": "auto", "net_overrides": {"width": 4}, "snr_window": 3,
    "sampler": {"num_steps": 2, "guidance": 2.0, "chunk_size": 4},
    "dc": {"batch_real": 4, "outer_loop": 1, "inner_loop": 1},
    "dm": {"batch_real": 4},
    "mtt": {"expert_epochs": 1, "max_start_epoch": 1, "syn_steps": 2},
}
EXPERT_PARAMS = {"num_experts": 2, "epochs": 2, "batch_size": 8, "net": "convnet", "net_overrides": {"width": 4},
                 "dsa_strategy": "none", "seed": 0}


def train_set(seed: int = 0, per_class: int = 4) -> TensorBundle:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (NUM_CLASSES * per_class, 1, SIDE, SIDE), generator=g, dtype=torch.uint8)
    labels = torch.arange(NUM_CLASSES * per_class) % NUM_CLASSES
    return TensorBundle({"images": images, "labels": labels},
                        {"class_names": ["a", "b", "c"], "num_classes": NUM_CLASSES, "source": "digits"})


def tiny_prior():
    """A real LatentPrior (diffusers AutoencoderKL + UNet2DModel), 8 px <-> 2×4×4, 3 classes."""
    from diffdistill.prior import AutoencoderConfig, DenoiserConfig, LatentPrior
    from diffdistill.prior.train import build_autoencoder, build_denoiser

    g = torch.Generator().manual_seed(0)
    vae = build_autoencoder(AutoencoderConfig(block_out_channels=(8, 8), norm_num_groups=4, latent_channels=2),
                            1, SIDE, g)
    unet = build_denoiser(DenoiserConfig(block_out_channels=(8, 16), attention_head_dim=8, norm_num_groups=4), 2, 4, g)
    config = dict(DDIMScheduler(num_train_timesteps=100).config)
    return LatentPrior(vae, unet, config, label_table=torch.randn((NUM_CLASSES + 1, 32), generator=g))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # scratch_dir writes under ./data


def run(objective="dm", space="latent", ipc=2, params=None, real=None, **inputs):
    if space != "pixel":
        inputs.setdefault("prior_model", tiny_prior())
    return nodes.distill_ld3m_set(real or train_set(), params or PARAMS, "cpu", objective=objective, space=space,
                                  ipc=ipc, **inputs)


def test_distilled_set_has_the_common_format_and_lineage_meta():
    real, prior = train_set(), tiny_prior()
    distilled, grid, state, history, gradients = run(prior_model=prior, real=real)
    images = distilled["images"]
    assert images.dtype == torch.float32 and images.shape == (6, 1, SIDE, SIDE)
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert distilled["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    meta = distilled.meta
    assert (meta["method"], meta["objective"], meta["space"], meta["ipc"]) == ("ld3m", "dm", "latent", 2)
    assert meta["class_names"] == ["a", "b", "c"] and meta["num_classes"] == 3 and meta["source"] == "digits"
    mean, std = channel_stats(real["images"])
    assert meta["mean"] == pytest.approx(mean.tolist()) and meta["std"] == pytest.approx(std.tolist())
    assert meta["prior_fingerprint"] == module_fingerprint(prior)
    assert meta["train_set_fingerprint"] == split_fingerprint(real)
    assert meta["lr"] == 0.05 and meta["iterations"] == 2 and meta["set"] == "ld3m_dm_latent_ipc2"
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    assert {"latents", "conditions", "labels", "noise.start"} <= set(state.tensors)  # eta 0: no per-step noise
    assert state.meta["prior_fingerprint"] == meta["prior_fingerprint"]
    assert [p["step"] for p in history["loss"]] == [0, 1] and "grad_norm_latents" in history
    assert gradients["grad_norm"] == [p["value"] for p in history["grad_norm_latents"]]
    assert gradients["space"] == "latent" and all(g > 0 for g in gradients["grad_norm"])
    assert not list(Path("data").glob("checkpoints/ld3m/*"))  # finished: scratch removed


def test_learning_rates_and_iterations_resolve_per_objective_space_and_ipc():
    assert ld3m_params.learning_rate(PARAMS, "dm", "no_residual") == 0.05  # every prior space uses `latent`
    assert ld3m_params.learning_rate(PARAMS, "dm", "pixel") == 0.5
    assert ld3m_params.learning_rate(PARAMS, "dc", "pixel") is None  # the core's default (0.1)
    params = {**PARAMS, "lr": {**PARAMS["lr"], "decoder_only": {"dm": 0.3}}, "iterations": {"dm": {1: 7, "10": 3}}}
    assert ld3m_params.ld3m_config(params, train_set(), "cpu", objective="dm", space="decoder_only", ipc=10).lr == 0.3
    assert ld3m_params.ld3m_config(params, train_set(), "cpu", objective="dm", space="latent", ipc=1).iterations == 7
    with pytest.raises(ValueError, match=r"ld3m.iterations.dm has no entry for ipc 2"):
        ld3m_params.ld3m_config(params, train_set(), "cpu", objective="dm", space="latent", ipc=2)
    with pytest.raises(ValueError, match="ld3m.iterations needs an entry for objective 'dc'"):
        ld3m_params.ld3m_config(params, train_set(), "cpu", objective="dc", space="latent", ipc=1)
    config = ld3m_params.ld3m_config(PARAMS, train_set(), "cpu", objective="dm", space="pixel", ipc=1)
    assert config.dsa_strategy == "color_crop_cutout_scale_rotate"  # auto: digits drop flip
    per_ipc = {**params, "iterations": {"dm": 5}, "lr": {"latent": {"dm": {1: 0.01, "10": 0.1}}}}  # like iterations
    assert ld3m_params.ld3m_config(per_ipc, train_set(), "cpu", objective="dm", space="latent", ipc=10).lr == 0.1
    assert ld3m_params.ld3m_config(per_ipc, train_set(), "cpu", objective="dm", space="latent", ipc=1).lr == 0.01
    with pytest.raises(ValueError, match=r"ld3m.lr.latent.dm has no entry for ipc 2"):
        ld3m_params.ld3m_config(per_ipc, train_set(), "cpu", objective="dm", space="latent", ipc=2)


def test_pixel_space_needs_no_prior_and_uses_the_pixel_rate():
    distilled, *_, gradients = nodes.distill_ld3m_set(train_set(), PARAMS, "cpu", objective="dm", space="pixel",
                                                      ipc=1)
    assert distilled.meta["lr"] == 0.5 and "prior_fingerprint" not in distilled.meta
    assert gradients["grad_norm_of"] == "images" and len(gradients["grad_norm"]) == 2


@pytest.mark.parametrize(("objective", "space", "name"), [("dsa", "latent", "objective='dsa'"),
                                                          ("dm", "w_plus", "space='w_plus'")])
def test_unknown_names_are_refused_naming_the_parameter(objective, space, name):
    with pytest.raises(ValueError, match=rf"ld3m.runs has {name}"):
        run(objective=objective, space=space)


def test_ipc_larger_than_a_class_is_refused_before_any_work():
    real = train_set()
    keep = torch.cat([torch.nonzero(real["labels"] != 1).flatten(), torch.nonzero(real["labels"] == 1).flatten()[:2]])
    short = TensorBundle({"images": real["images"][keep], "labels": real["labels"][keep]}, real.meta)
    with pytest.raises(ValueError, match=r"ipcs contains 3.*\{'b': 2\}"):
        run(ipc=3, real=short, prior_model=None)  # fails on the IPC, not on the missing prior


def test_mtt_runs_on_matching_experts_and_refuses_others():
    real = train_set()
    experts, _ = train_expert_trajectories(real, EXPERT_PARAMS, "cpu")
    distilled, *_ = run("mtt", ipc=1, real=real, expert_trajectories=experts)
    assert distilled.meta["objective"] == "mtt" and "experts_fingerprint" in distilled.meta

    other = train_set(seed=1)
    with pytest.raises(ValueError, match=(rf"trained on train_set {split_fingerprint(real)} but the loaded "
                                          rf"train_set is {split_fingerprint(other)}.*--pipelines experts")):
        run("mtt", ipc=1, real=other, expert_trajectories=experts)
    with pytest.raises(ValueError, match=r"arch 'convnet' .*ld3m.mtt.net is 'alexnet'.*--pipelines experts"):
        run("mtt", ipc=1, real=real, expert_trajectories=experts,
            params={**PARAMS, "mtt": {**PARAMS["mtt"], "net": "alexnet"}})
    with pytest.raises(ValueError, match=r"overrides \{'width': 4\}.*ld3m.net_overrides \{\}"):
        run("mtt", ipc=1, real=real, expert_trajectories=experts, params={**PARAMS, "net_overrides": {}})


def test_a_killed_run_resumes_to_the_same_bytes(monkeypatch):
    params = {**PARAMS, "iterations": {"dm": 3}}
    whole = run(params=params)

    core = nodes.distill_ld3m

    def killed_in_iteration_2(*args, on_step=None, **kwargs):
        def step(metrics):
            if on_step is not None:
                on_step(metrics)
            if metrics["iteration"] == 1:
                raise KeyboardInterrupt("killed")  # before iteration 2's checkpoint: resumes from step 1

        return core(*args, on_step=step, **kwargs)

    monkeypatch.setattr(nodes, "distill_ld3m", killed_in_iteration_2)
    with pytest.raises(KeyboardInterrupt):
        run(params=params)
    assert len(list(Path("data").glob("checkpoints/ld3m/*/ld3m_checkpoint.safetensors"))) == 1
    monkeypatch.setattr(nodes, "distill_ld3m", core)
    resumed = run(params=params)
    assert torch.equal(whole[0]["images"], resumed[0]["images"]) and whole[0].meta == resumed[0].meta
    for name, tensor in whole[2].tensors.items():
        assert torch.equal(tensor, resumed[2][name]), name
    assert resumed[4]["loss"] == whole[4]["loss"] and len(resumed[4]["grad_norm"]) == 3  # history stitched


def test_registry_builds_one_namespace_per_run_and_ipc(monkeypatch):
    monkeypatch.chdir(PROJECT)
    from diffdistill.pipelines import graph

    monkeypatch.setattr(graph, "_run_env", {"env": "grid"})  # conf/base alone: the full grid
    from diffdistill.pipelines.evaluate.pipeline import evaluated_sets
    from diffdistill.pipelines.ld3m.pipeline import create_pipeline
    from diffdistill.pipelines.report.pipeline import residual_pairs

    conf = yaml.safe_load((PROJECT / "conf/base/parameters_ld3m.yml").read_text())["ld3m"]["runs"]
    ipcs = yaml.safe_load((PROJECT / "conf/base/parameters.yml").read_text())["ipcs"]
    expected = {f"ld3m_{r['objective']}_{r['space']}" + (f"_{r['variant']}" if r.get("variant") else "") + f"_ipc{i}"
                for r in conf for i in ipcs}
    assert {"ld3m_dm_latent_eq12_ipc1", "ld3m_dm_latent_ipc1"} <= expected  # Eq. 12 beside the reproduction
    pipeline = create_pipeline()
    assert {n.namespace for n in pipeline.nodes} == expected and len(pipeline.nodes) == len(expected)
    for node in pipeline.nodes:
        objective, space = node.namespace.split("_")[1], node.namespace.split("_", 2)[2].rsplit("_ipc", 1)[0]
        space = space.removesuffix("_eq12")
        assert ("prior_model" in node.inputs) == (space != "pixel")
        assert ("expert_trajectories" in node.inputs) == (objective == "mtt")
        assert f"{node.namespace}.distilled_set" in node.outputs
    assert expected <= set(evaluated_sets())
    assert "ld3m_dm_latent_ipc1.ld3m_gradients" in residual_pairs()
    assert "ld3m_dm_no_residual_ipc1.ld3m_gradients" in residual_pairs()


def test_a_run_with_a_variant_is_its_own_set_with_its_own_rate():
    params = {**PARAMS, "lr": {**PARAMS["lr"], "latent_eq12": {"dm": 7.0}}}
    eq12 = ld3m_params.ld3m_config(params, train_set(), "cpu", objective="dm", space="latent", ipc=1, variant="eq12")
    default = ld3m_params.ld3m_config(params, train_set(), "cpu", objective="dm", space="latent", ipc=1)
    assert (eq12.sampler.variant, eq12.lr) == ("eq12", 7.0) and (default.sampler.variant, default.lr) == ("reference",
                                                                                                        0.05)
    assert ld3m_params.learning_rate(params, "dm", "no_residual") == 0.05  # `latent_eq12` is not every prior space's
    distilled, _, state, _, gradients = run(ipc=1, variant="eq12", params=params)
    assert distilled.meta["set"] == "ld3m_dm_latent_eq12_ipc1" and distilled.meta["variant"] == "eq12"
    assert set(distilled.meta["sensitivity"]) == {"init_psnr_db", "init_grad_norm_latents", "init_grad_norm_noise",
                                                  "init_sensitivity_ratio"}
    assert gradients["sensitivity"] == distilled.meta["sensitivity"]
    reference, *_ = run(ipc=1, params=params)  # 2 steps of a 100-step schedule: z_T is not yet pure noise
    ratios = [d.meta["sensitivity"]["init_sensitivity_ratio"] for d in (distilled, reference)]
    assert ratios[1] > 2 * ratios[0], ratios


@pytest.mark.parametrize(("space", "variant", "message"), [
    ("no_residual", "eq12", "applies to space 'latent' only"), ("latent", "paper", "'paper' was renamed 'eq12'"),
    ("latent", "x0", "must be one of reference, eq12, none"),
])
def test_a_bad_run_variant_is_refused_naming_the_valid_ones(space, variant, message):
    with pytest.raises(ValueError, match=message):
        ld3m_params.check_run("dm", space, variant)


def test_dc_schedule_is_explicit_per_kind_of_space_in_conf_base():
    conf = yaml.safe_load((PROJECT / "conf/base/parameters_ld3m.yml").read_text())["ld3m"]
    assert conf["dc"]["schedule"] == {"prior": "glad", "pixel": "dc_table"}
    assert conf["sampler"]["variant"] == "reference"
    paper = yaml.safe_load((PROJECT / "conf/paper/parameters_ld3m.yml").read_text())["ld3m"]
    assert paper["sampler"]["variant"] == "reference"
    params = {**PARAMS, "dc": {"batch_real": 4, "schedule": conf["dc"]["schedule"]}}
    for space, loops in (("latent", (1, 1)), ("condition_only", (1, 1)), ("pixel", (10, 50))):
        config = ld3m_params.ld3m_config(params, train_set(per_class=10), "cpu", objective="dc", space=space, ipc=10)
        assert config.dc_config().loops(10) == loops
    with pytest.raises(ValueError, match=r"ld3m.dc.schedule has keys \['latent'\]"):
        ld3m_params.dc_schedule({"dc": {"schedule": {"latent": "glad"}}}, "latent")


def test_rolling_snr_is_rolling_mean_over_rolling_std():
    steps, snr = rolling_snr([1.0, 3.0, 1.0, 3.0, 2.0], window=2)
    assert steps == [1, 2, 3, 4]
    assert snr[:3] == pytest.approx([2 / 2**0.5] * 3) and snr[3] == pytest.approx(2.5 / 0.5**0.5)


def test_gradient_snr_plot_skips_sets_that_have_not_run(tmp_path):
    versioned = AtomicJSONDataset(filepath=str(tmp_path / "v.json"), version=Version(None, None), optional=True)
    assert versioned.load() is None
    record = {"objective": "dm", "space": "latent", "ipc": 1, "grad_norm": [1.0, 2.0, 1.5, 2.5, 1.0]}
    versioned.save(record)
    assert AtomicJSONDataset(filepath=str(tmp_path / "v.json"), version=Version(None, None)).load() == record
    image = gradient_snr_plot({"snr_window": 3}, record, None, {**record, "space": "no_residual"})
    assert image.size[0] > 100 and image.mode == "RGB"
    assert gradient_snr_plot({}, None, None).size[0] > 100
