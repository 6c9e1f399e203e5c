"""End to end: the per-class phases split into 2 class shards under ParallelRunner write the unsharded run's bytes.

One upstream run (preprocess, prior) is copied into two scratch projects: `shards: 1` under the SequentialRunner and
`shards: 2` under the ParallelRunner. Both copies keep only IPC 2 and the LD3M DM latent run (the cheapest
graph that still has a D3HR set of each sampler and an LD3M DM set), with LD3M chunks of 3 images (IPC 2: the full
run's chunks straddle classes, so the shards [0, 5) and [5, 10) also optimise the ghost classes [5, 6) and [3, 5)).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from diffdistill.datasets import TensorBundleDataset
from tests.kedro_project import kedro, scratch_project, versions

pytestmark = pytest.mark.slow

PHASES = "latents,gaussians,d3hr,ld3m"
FINAL = ["data/04_feature/latents.safetensors", "data/04_feature/noise.safetensors",
         "data/05_model_input/class_gaussians.safetensors",
         *(f"data/05_model_input/{s}/d3hr_selection.safetensors" for s in ("d3hr_ipc2", "d3hr_factorised_ipc2")),
         *(f"data/07_model_output/{s}/distilled_set.safetensors"
           for s in ("d3hr_ipc2", "d3hr_factorised_ipc2", "ld3m_dm_latent_ipc2")),
         "data/07_model_output/ld3m_dm_latent_ipc2/ld3m_state.safetensors"]


def _configure(root: Path, shards: int) -> None:
    """The graph keys of the scratch copy's test environment (base + test, diffdistill.pipelines.graph): `shards`
    and the LD3M runs in conf/base, IPC 2 only in conf/test (which pins its own IPCs); conf/test also gets LD3M
    chunks of 3 images, which straddle classes, so each LD3M shard also runs ghost classes."""
    test_ld3m = root / "conf/test/parameters_ld3m.yml"
    test_ld3m.write_text(test_ld3m.read_text().replace("sampler: {num_steps: 2}", "sampler: {num_steps: 2, chunk_size: 3}"))
    params = root / "conf/base/parameters.yml"
    params.write_text(re.sub(r"(?m)^shards: \d+", f"shards: {shards}", params.read_text()))
    test_params = root / "conf/test/parameters.yml"  # the test environment pins its own IPCs (it wins over base)
    test_params.write_text(re.sub(r"(?m)^ipcs: \[.*?\]", "ipcs: [2]", test_params.read_text()))
    ld3m = root / "conf/base/parameters_ld3m.yml"
    ld3m.write_text(re.sub(r"(?ms)^  runs:.*?\n(?=  #)", "  runs:\n    - {objective: dm, space: latent}\n",
                           ld3m.read_text()))


def _copy(upstream: Path, tmp: Path, shards: int) -> Path:
    root = tmp / "project"
    shutil.copytree(upstream, root)
    _configure(root, shards)
    return root


def _file(root: Path, relative: str) -> Path:
    (version,) = versions(root, relative)  # each run writes exactly one version
    return root / relative / version / Path(relative).name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    upstream = scratch_project(tmp_path_factory.mktemp("upstream"))
    _configure(upstream, 1)
    kedro(upstream, "run", "--env", "test", "--pipelines", "preprocess,teacher,prior")
    unsharded = _copy(upstream, tmp_path_factory.mktemp("unsharded"), 1)
    kedro(unsharded, "run", "--env", "test", "--pipelines", PHASES)
    sharded = _copy(upstream, tmp_path_factory.mktemp("sharded"), 2)
    kedro(sharded, "run", "--env", "test", "--pipelines", PHASES, "--runner", "ParallelRunner")
    return unsharded, sharded


@pytest.mark.parametrize("relative", FINAL)
def test_two_shards_under_parallel_runner_write_the_unsharded_bytes(runs, relative):
    unsharded, sharded = runs
    one, two = _file(unsharded, relative), _file(sharded, relative)
    assert _sha256(two) == _sha256(one)
    assert _sha256(Path(f"{two}.json")) == _sha256(Path(f"{one}.json"))  # sidecar: metadata and tensor digest
    a, b = (TensorBundleDataset(filepath=str(p)).load() for p in (one, two))
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a[name], b[name]) for name in a.tensors)


def test_each_shard_kept_a_versioned_part_over_its_class_range(runs):
    _, sharded = runs
    for shard, classes in (("shard0of2", [0, 5]), ("shard1of2", [5, 10])):
        for relative in (f"data/04_feature/shards/{shard}/latents_part.safetensors",
                         f"data/05_model_input/shards/{shard}/gaussians_part.safetensors",
                         f"data/07_model_output/shards/{shard}/d3hr_ipc2/d3hr_part.safetensors",
                         f"data/07_model_output/shards/{shard}/ld3m_dm_latent_ipc2/ld3m_part.safetensors"):
            part = TensorBundleDataset(filepath=str(_file(sharded, relative))).load()
            assert part.meta["classes"] == classes, relative
            if "labels" in part:  # per-sample parts; the Gaussians part holds one row per class instead
                assert set(part["labels"].unique().tolist()) == set(range(*classes)), relative
            else:
                assert part["counts"].shape == (classes[1] - classes[0],)


def test_lineage_of_the_parallel_run_names_every_node_and_version(runs):
    """ParallelRunner runs nodes (and their dataset hooks) in other processes: the record comes from the graph."""
    _, sharded = runs
    (record,) = [json.loads(p.read_text()) for p in (sharded / "data/lineage").glob("*.json")
                 if "latents" in json.loads(p.read_text()).get("pipeline_names", [])]
    assert record["status"] == "completed"
    save = record["save_version"]
    merge = record["nodes"]["latents.merge_shards"]
    assert set(merge["inputs"]) >= {"shard0of2.latents_part", "shard1of2.latents_part"}
    assert merge["inputs"]["shard0of2.latents_part"] == merge["inputs"]["shard1of2.latents_part"] == save
    assert merge["outputs"]["noise"] == save and merge["recorded_from"] == "graph"
    assert record["outputs"]["class_gaussians"] == save
    assert record["inputs"]["train_set"] not in (None, save)  # made by the upstream run, pinned by its version


def test_one_shard_per_process_then_the_merge_gives_the_same_latents(runs):
    """The one-shard-per-GPU route: one `kedro run --namespaces shard<i>of2` process per shard, side by side on the
    same data folder (and MLflow sqlite file), then the merge node alone."""
    unsharded, sharded = runs
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda ns: kedro(sharded, "run", "--env", "test", "--pipelines", "latents", "--namespaces", ns),
                      ["shard1of2", "shard0of2"]))
    kedro(sharded, "run", "--env", "test", "--pipelines", "latents", "--namespaces", "latents")
    relative = "data/04_feature/noise.safetensors"
    latest = versions(sharded, relative)[-1]
    assert len(versions(sharded, relative)) == 2
    assert _sha256(sharded / relative / latest / "noise.safetensors") == _sha256(_file(unsharded, relative))
