"""Class shards: the class-range split, the sharded graph, and shard parts that merge into the unsharded bytes."""

from __future__ import annotations

import pytest
import torch

from diffdistill.data.bundle import TensorBundle
from diffdistill.distill.ld3m import computed_classes
from diffdistill.pipelines import sharding
from diffdistill.pipelines.gaussians.nodes import fit_gaussians_classes, fit_noise_gaussians, merge_gaussian_parts
from diffdistill.pipelines.ld3m.records import merge_histories
from diffdistill.pipelines.sharding import check_parts_cover, class_range, class_ranges, shard_namespace
from tests.distill.test_ld3m import _config, _run


@pytest.mark.parametrize(("num_classes", "count", "expected"), [
    (10, 1, [(0, 10)]),
    (10, 2, [(0, 5), (5, 10)]),
    (10, 3, [(0, 4), (4, 7), (7, 10)]),   # K does not divide the classes: sizes differ by one, larger first
    (10, 4, [(0, 3), (3, 6), (6, 8), (8, 10)]),
    (1000, 8, [(125 * i, 125 * (i + 1)) for i in range(8)]),
    (3, 3, [(0, 1), (1, 2), (2, 3)]),
])
def test_class_ranges_tile_the_classes_contiguously(num_classes, count, expected):
    ranges = class_ranges(num_classes, count)
    assert ranges == expected
    assert [class_range(num_classes, (i, count)) for i in range(count)] == expected
    assert class_range(num_classes, None) == (0, num_classes)


def test_more_shards_than_classes_is_refused_naming_the_parameter():
    with pytest.raises(ValueError, match=r"shards=11 exceeds the 10 classes.*shards <= 10"):
        class_ranges(10, 11)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True, None])
def test_shard_count_below_one_or_not_an_int_is_refused_naming_the_parameter(bad):
    with pytest.raises(ValueError, match=r"parameter shards=.* must be an int >= 1.*conf/base/parameters.yml"):
        class_ranges(10, bad)


def test_shard_index_outside_the_count_is_refused():
    with pytest.raises(ValueError, match="shard index 2 is outside 0..1"):
        class_range(10, (2, 2))


def test_parts_that_do_not_tile_the_classes_are_refused():
    def part(start, stop):
        return TensorBundle({}, {"classes": [start, stop]})

    check_parts_cover([part(0, 5), part(5, 10)], 10, "latents")
    with pytest.raises(ValueError, match="do not tile 0..10"):
        check_parts_cover([part(0, 5), part(6, 10)], 10, "latents")
    with pytest.raises(ValueError, match="end at class 5 but the data has 10 classes"):
        check_parts_cover([part(0, 5)], 10, "latents")


# --- the graph ---


@pytest.fixture
def shards(monkeypatch):
    """Build pipelines as if conf/base said `shards: K` (everything else from the real conf/base)."""
    from diffdistill.pipelines import graph

    monkeypatch.setattr(graph, "_run_env", {"env": "grid"})  # conf/base's graph, whatever an earlier test's session set
    real = sharding.graph_parameter

    def with_shards(count):
        monkeypatch.setattr(sharding, "graph_parameter",
                            lambda key: count if key == sharding.SHARDS_PARAMETER else real(key))
    return with_shards


def test_one_shard_builds_todays_graph(shards):
    from diffdistill.pipelines.gaussians.pipeline import create_pipeline as gaussians
    from diffdistill.pipelines.latents.pipeline import create_pipeline as latents

    shards(1)
    assert [n.name for n in latents().nodes] == ["encode_and_invert"]
    assert [n.name for n in gaussians().nodes] == ["fit_noise_gaussians"]


def test_k_shards_are_namespaced_copies_feeding_one_merge_per_phase_and_set(shards):
    from diffdistill.pipelines.d3hr.pipeline import create_pipeline as d3hr
    from diffdistill.pipelines.latents.pipeline import create_pipeline as latents
    from diffdistill.pipelines.ld3m.pipeline import create_pipeline as ld3m

    shards(3)
    pipe = latents()
    assert sorted(n.name for n in pipe.nodes) == [
        "latents.merge_shards", *(f"{shard_namespace(i, 3)}.encode_and_invert_classes" for i in range(3))]
    assert pipe.outputs() == {"latents", "noise", "latents_report", "latents_metrics"}
    assert {n.name for n in pipe.only_nodes_with_namespaces(["shard1of3"]).nodes} == {
        "shard1of3.encode_and_invert_classes"}

    pipe = d3hr()
    merge = next(n for n in pipe.nodes if n.name == "d3hr_ipc1.merge_shards")
    assert [i for i in merge.inputs if i.endswith("d3hr_part")] == [
        f"shard{i}of3.d3hr_ipc1.d3hr_part" for i in range(3)]
    assert "d3hr_ipc1.distilled_set" in merge.outputs

    names = {n.name for n in ld3m().nodes}
    assert "ld3m_dm_latent_ipc1.merge_shards" in names and "shard2of3.ld3m_dm_latent_ipc1.distill_ld3m_classes" in names
    # DC and MTT couple the classes (one net over the whole set): they stay unsharded
    assert "ld3m_dc_latent_ipc1.distill_ld3m_set" in names and "ld3m_mtt_latent_ipc1.distill_ld3m_set" in names
    assert not any(name.startswith("shard") and "_dc_" in name for name in names)


def test_shards_parameter_is_checked_when_the_graph_is_built(shards):
    from diffdistill.pipelines.latents.pipeline import create_pipeline as latents

    shards(0)
    with pytest.raises(ValueError, match="parameter shards=0 must be an int >= 1"):
        latents()


# --- parts merge into the unsharded artifacts ---


def _noise_and_latents(num_classes=5, per_class=7, dim=(2, 3, 3)):
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    meta = {"num_classes": num_classes, "prior_fingerprint": "p", "class_names": [str(k) for k in range(num_classes)],
            "num_steps": 10, "invert_steps": 6, "invert_guidance": 1.0, "start_step": 4}
    noise = TensorBundle({"noise": torch.randn((len(labels), *dim), generator=g) * 3 + 1, "labels": labels}, meta)
    latents = TensorBundle({"latents": torch.rand((len(labels), *dim), generator=g) ** 3, "labels": labels}, meta)
    return noise, latents


def test_gaussian_shards_merge_into_the_unsharded_gaussians_and_report_exactly():
    noise, latents = _noise_and_latents()
    params = {"batch_size": 3}  # batches split classes: merge order must not depend on the other classes
    whole, report, metrics = fit_noise_gaussians(noise, latents, params)
    parts = [fit_gaussians_classes(noise, latents, params, shard=(i, 2)) for i in range(2)]
    assert [p.meta["classes"] for p in parts] == [[0, 3], [3, 5]]
    merged, merged_report, merged_metrics = merge_gaussian_parts(noise, params, *parts)
    assert merged.tensors.keys() == whole.tensors.keys() and merged.meta == whole.meta
    for name in whole.tensors:
        assert torch.equal(merged[name], whole[name]), name
    assert merged_report == report and merged_metrics == metrics


@pytest.mark.parametrize(("ipc", "chunk", "classes", "num_classes", "expected"), [
    (10, 10, (3, 7), 10, (3, 7)),        # chunks are whole classes: no ghost class
    (1, 10, (0, 5), 10, (0, 10)),        # a chunk holds 10 classes: the shard computes all of them
    (2, 10, (3, 7), 10, (0, 10)),
    (10, 4, (3, 7), 10, (2, 8)),         # grid and class boundaries meet every lcm(10, 4) = 20 images = 2 classes
    (1, 10, (125, 250), 1000, (120, 250)),
])
def test_a_ld3m_shard_widens_to_where_the_full_runs_chunks_meet_class_boundaries(ipc, chunk, classes, num_classes,
                                                                                  expected):
    config = _config(ipc=ipc, sampler=dict(num_steps=3, chunk_size=chunk))
    assert computed_classes(classes, config, num_classes) == expected


def test_ld3m_dm_class_range_reproduces_the_full_runs_rows_exactly():
    # ipc 2, chunk 3: full-run chunks straddle classes, so each shard also computes ghost classes (all 3 here)
    config = _config(sampler=dict(num_steps=3, guidance=2.0, eta=0.5, chunk_size=3))
    full = _run(config)
    first = _run(config, classes=(0, 1))
    rest = _run(config, classes=(1, 3))
    for name in ("images", "labels"):
        assert torch.equal(torch.cat([first.images[name], rest.images[name]]), full.images[name])
    for name in full.state.tensors:
        assert torch.equal(torch.cat([first.state[name], rest.state[name]]), full.state[name]), name
    assert first.images.meta == full.images.meta


def test_ld3m_class_range_is_refused_for_objectives_that_couple_classes():
    with pytest.raises(ValueError, match="needs objective 'dm'"):
        _run(_config(objective="dc"), classes=(0, 1))
    with pytest.raises(ValueError, match=r"classes=\[2, 5\) must be a non-empty range inside \[0, 3\)"):
        _run(_config(), classes=(2, 5))


def test_ld3m_histories_recombine_as_the_dm_sum_over_classes():
    merged = merge_histories([
        {"loss": [1.0, 2.0], "grad_norm_latents": [3.0, 0.0], "peak_memory_bytes": [5.0, 1.0], "time_s": [1.0, 1.0]},
        {"loss": [0.5, 0.5], "grad_norm_latents": [4.0, 2.0], "peak_memory_bytes": [2.0, 7.0], "time_s": [2.0, 2.0]},
    ])
    assert merged == {"loss": [1.5, 2.5], "grad_norm_latents": [5.0, 2.0], "peak_memory_bytes": [5.0, 7.0],
                      "time_s": [3.0, 3.0]}

