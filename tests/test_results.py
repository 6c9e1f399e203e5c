"""results/<dataset>.csv: rows from evaluation records, the fixed header, and README tables generated from them."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from diffdistill import results

PROJECT = Path(__file__).resolve().parents[1]


def _record(name="ld3m_dm_latent_ipc10", seeds=(0, 1, 2)):
    accs = {"convnet": [0.9, 0.92, 0.94], "alexnet": [0.5, 0.6, 0.7], "vgg11": [0.8, 0.8, 0.8],
            "resnet18": [0.85, 0.9, 0.95], "vit": [0.4, 0.5, 0.3]}
    rows = [{"arch": a, "seed": s, "test_accuracy": accs[a][i], "protocol": "dc", "epochs": 100, "set": name}
            for a in accs for i, s in enumerate(seeds)]
    return {"set": name, "status": "done", "meta": {"ipc": 10}, "rows": rows}


def test_rows_are_mean_and_population_std_per_arch_and_the_unseen_mean_over_seeds():
    rows = results.rows_of(_record(), iterations=20, git_sha="abc")
    assert [r["arch"] for r in rows] == [*results.ARCHS, "unseen_mean"]
    assert all(r["set"] == "ld3m_dm_latent" and r["ipc"] == 10 and r["n"] == 3 and r["iterations"] == 20
               for r in rows)
    convnet = rows[0]
    assert convnet["mean"] == pytest.approx(92.0) and convnet["std"] == pytest.approx(round(
        statistics.pstdev([90.0, 92.0, 94.0]), 2))
    per_seed = [statistics.fmean([50, 80, 85, 40]), statistics.fmean([60, 80, 90, 50]),
                statistics.fmean([70, 80, 95, 30])]
    unseen = rows[-1]
    assert unseen["mean"] == pytest.approx(round(statistics.fmean(per_seed), 2))
    assert unseen["std"] == pytest.approx(round(statistics.pstdev(per_seed), 2))
    assert set(rows[0]) == set(results.HEADER)


def test_each_protocol_of_a_record_gets_its_own_rows():
    record = _record("ld3m_mtt_pixel_ipc10")
    paper = [r | {"protocol": "dc_reference", "epochs": 1000, "test_accuracy": r["test_accuracy"] / 2}
             for r in record["rows"]]
    record["paper_protocols"] = {"dc_reference": {"protocol": {"name": "dc_reference"}, "rows": paper, "summary": {}}}
    rows = results.rows_of(record, iterations=20, git_sha="abc")
    assert [(r["protocol"], r["arch"]) for r in rows] == [
        (p, a) for p in ("dc", "dc_reference") for a in (*results.ARCHS, "unseen_mean")]
    common, reference = rows[0], rows[len(rows) // 2]
    assert (common["mean"], common["epochs"]) == (pytest.approx(92.0), 100)
    assert (reference["mean"], reference["epochs"]) == (pytest.approx(46.0), 1000)
    record["rows"][0] = record["rows"][0] | {"protocol": "glad"}
    with pytest.raises(ValueError, match=r"mixes protocols \['dc', 'glad'\]"):
        results.rows_of(record, iterations=20, git_sha="abc")


def test_one_seed_has_no_fake_spread_in_the_markdown(tmp_path):
    rows = results.rows_of(_record("full", seeds=(0,)) | {"meta": {}}, iterations=None, git_sha="abc")
    assert rows[0]["ipc"] == "" and rows[0]["std"] == 0.0
    path = tmp_path / "x.csv"
    results.write_csv(rows, path)
    table = results.markdown_table(results.read_csv(path))
    assert "| full | all | dc | 100 | 1 | – | 90.0 |" in table and "±" not in table


def test_a_csv_with_another_header_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("set,ipc,arch,mean\nrandom,1,convnet,10\n")
    with pytest.raises(ValueError, match="expected"):
        results.read_csv(path)


def test_readme_blocks_are_rewritten_from_the_csv(tmp_path):
    results.write_csv(results.rows_of(_record(), iterations=20, git_sha="abc"), tmp_path / "toy.csv")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:toy -->\nstale\n<!-- /results:toy -->\nend\n")
    assert results.render_readme(readme, tmp_path)
    text = readme.read_text()
    assert "stale" not in text and "| ld3m_dm_latent | 10 | dc | 100 | 3 | 20 | 92.0 ± 1.6 |" in text
    assert text.startswith("intro\n") and text.endswith("end\n")
    assert not results.render_readme(readme, tmp_path)  # idempotent


@pytest.mark.parametrize("path", sorted(p for p in (PROJECT / "results").glob("*.csv")
                                         if not p.stem.endswith(("_ddranking", "_cost"))), ids=lambda p: p.name)
def test_committed_tables_have_the_fixed_header_and_the_readme_shows_them(path):
    rows = results.read_csv(path)
    assert rows, f"{path} is empty"
    readme = (PROJECT / "README.md").read_text()
    start, end = f"<!-- results:{path.stem} -->", f"<!-- /results:{path.stem} -->"
    assert start in readme, f"README.md has no generated block for {path.name}"
    block = readme.split(start, 1)[1].split(end, 1)[0]
    assert results.markdown_table(rows) in block, "README table is stale: run `python -m diffdistill.results readme`"
    for row in rows:
        assert row["arch"] in (*results.ARCHS, "unseen_mean") and int(row["n"]) >= 1
        assert not row["set"].endswith(tuple(f"_ipc{i}" for i in range(1, 1000)))


@pytest.mark.parametrize("path", sorted((PROJECT / "results").glob("*_ddranking.csv")), ids=lambda p: p.name)
def test_committed_ddranking_tables_match_their_results_and_the_readme(path, tmp_path):
    rows = results.read_ddranking_csv(path)
    assert rows, f"{path} is empty"
    fresh = results.write_ddranking(_copy(path.with_name(path.stem.removesuffix("_ddranking") + ".csv"), tmp_path),
                                    PROJECT / "conf/base/parameters_evaluate.yml")
    assert fresh.read_text() == path.read_text(), "stale: run `python -m diffdistill.results ddranking`"
    start, end = f"<!-- results:{path.stem} -->", f"<!-- /results:{path.stem} -->"
    block = (PROJECT / "README.md").read_text().split(start, 1)[1].split(end, 1)[0]
    assert results.ddranking_table(rows) in block, "README table is stale: run `python -m diffdistill.results readme`"


def _copy(path, folder):
    target = folder / path.name
    target.write_text(path.read_text())
    return target


def test_collect_keeps_the_rows_of_sets_this_project_did_not_measure(tmp_path):
    old = results.rows_of(_record("herding_ipc10"), iterations=None, git_sha="old")
    results.write_csv(old, tmp_path / "t.csv")
    new = results.rows_of(_record("random_ipc10"), iterations=None, git_sha="new")
    kept = results.keep_unmeasured(results.read_csv(tmp_path / "t.csv"), new)
    assert {r["set"] for r in kept} == {"herding"} and {r["git_sha"] for r in kept} == {"old"}
    assert results.keep_unmeasured(results.read_csv(tmp_path / "t.csv"), old) == []
    results.write_csv(results.sort_rows(new + kept), tmp_path / "t.csv")
    assert len(results.read_csv(tmp_path / "t.csv")) == len(old) + len(new)


@pytest.mark.parametrize("path", sorted((PROJECT / "results").glob("*_cost.csv")), ids=lambda p: p.name)
def test_committed_cost_tables_are_in_the_readme(path):
    rows = results._read_rows(path, results.COST_HEADER)
    assert rows and all(float(r["wall_s"]) > 0 and int(r["nodes_without_cost"]) == 0 for r in rows)
    start, end = f"<!-- results:{path.stem} -->", f"<!-- /results:{path.stem} -->"
    block = (PROJECT / "README.md").read_text().split(start, 1)[1].split(end, 1)[0]
    assert results.cost_table(rows) in block, "README table is stale: run `python -m diffdistill.results readme`"


def test_the_readme_table_has_one_block_per_protocol_the_common_one_first(tmp_path):
    record = _record("ld3m_dm_latent_ipc10")
    paper = [r | {"protocol": "glad_reference"} for r in record["rows"]]
    record["paper_protocols"] = {"glad_reference": {"protocol": {"name": "glad_reference"}, "rows": paper,
                                                    "summary": {}}}
    rows = results.rows_of(record, iterations=20, git_sha="abc")
    rows += results.rows_of(_record("random_ipc10"), iterations=None, git_sha="abc")
    path = tmp_path / "t.csv"
    results.write_csv(results.sort_rows(rows), path)
    table = results.markdown_table(results.read_csv(path))
    common, paper_block = table.split("**Protocol `glad_reference`** (1 set)")
    assert common.startswith("**Protocol `dc`** (2 sets)")
    assert "| random | 10 | dc |" in common and "| ld3m_dm_latent | 10 | dc |" in common
    assert "glad_reference" not in common and "| dc |" not in paper_block


def test_collect_reads_the_dataset_folder_and_puts_the_paper_beside_the_matching_protocol_only(tmp_path):
    """`collect --dataset cifar10` reads data/cifar10 (the environment's data_root); DC Table 1's random value
    stands beside the row of DC's protocol (no augmentation, 300 epochs), never beside another protocol's."""
    import json

    from diffdistill.published import published_means

    record = _record("random_ipc10")
    record["rows"] = [r | {"protocol": "dc_reference_no_augment", "epochs": 300} for r in record["rows"]]
    paper = [r | {"protocol": "glad_reference"} for r in record["rows"]]
    record["paper_protocols"] = {"glad_reference": {"rows": paper}}
    folder = tmp_path / "data/cifar10/08_reporting/evaluation/random_ipc10.json/2026-12-02T00.00.00.000Z"
    folder.mkdir(parents=True)
    (folder / "random_ipc10.json").write_text(json.dumps(record))
    assert results.collect(tmp_path, data_root="data") == []  # the digits folder holds nothing
    rows = results.collect(tmp_path, data_root=results.data_root_of("cifar10"), published=published_means("cifar10"))
    published = {(r["protocol"], r["arch"]): r["published"] for r in rows}
    assert published[("dc_reference_no_augment", "convnet")] == 26.0
    assert published[("dc_reference_no_augment", "alexnet")] == ""  # DC Table 1 is ConvNet-only
    assert published[("glad_reference", "convnet")] == ""
    assert published_means("digits") == {}
