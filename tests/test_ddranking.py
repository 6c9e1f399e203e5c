"""DD-Ranking's scores: hand values of the formulas, the rows they are computed from, and refused inputs."""

from __future__ import annotations

import math

import pytest

from diffdistill.ddranking import augmentation_robust_score, label_robust_score, robust_score, score_rows
from diffdistill.evaluation import PROTOCOLS, get_protocol

E = math.e


def test_robust_score_maps_minus_one_zero_and_one():
    assert robust_score(-1.0) == pytest.approx(0.0)
    assert robust_score(1.0) == pytest.approx(1.0)
    assert robust_score(0.0) == pytest.approx((1 - 1 / E) / (E - 1 / E))  # 0.2689
    assert robust_score(0.0) == pytest.approx(0.26894, abs=1e-5)


def test_label_robust_score_by_hand():
    # full 0.90, syn 0.60 hard: HLR 0.30; syn 0.70 vs random 0.50 under its own protocol: IOR 0.20
    scores = label_robust_score(0.90, 0.60, 0.70, 0.50)
    assert scores["hlr"] == pytest.approx(0.30) and scores["ior"] == pytest.approx(0.20)
    alpha = 0.5 * 0.20 - 0.5 * 0.30  # -0.05
    assert scores["lrs"] == pytest.approx((math.exp(alpha) - 1 / E) / (E - 1 / E))
    assert scores["lrs"] == pytest.approx(0.24819, abs=1e-5)
    assert label_robust_score(0.9, 0.6, 0.7, 0.5, weight=1.0)["lrs"] == pytest.approx(robust_score(0.20))


def test_augmentation_robust_score_by_hand():
    beta = 0.5 * (0.80 - 0.60) + 0.5 * (0.70 - 0.65)  # 0.125
    assert augmentation_robust_score(0.80, 0.60, 0.70, 0.65) == pytest.approx((math.exp(beta) - 1 / E) / (E - 1 / E))


@pytest.mark.parametrize("bad", [1.2, -0.1])
def test_accuracies_in_percent_are_refused(bad):
    with pytest.raises(ValueError, match="fractions"):
        label_robust_score(0.9, bad, 0.7, 0.5)


def _row(name, ipc, arch, protocol, mean):
    return {"set": name, "ipc": ipc, "arch": arch, "protocol": protocol, "mean": mean}


def test_score_rows_pairs_hard_full_and_own_protocol_random():
    rows = [_row("full", "", "convnet", "dc", 90.0), _row("random", 1, "convnet", "dc", 50.0),
            _row("random", 1, "convnet", "soft_label_reference", 60.0),
            _row("d3hr", 1, "convnet", "dc", 60.0), _row("d3hr", 1, "convnet", "soft_label_reference", 80.0),
            _row("herding", 1, "convnet", "dc", 70.0),
            _row("herding", 10, "convnet", "dc", 80.0)]  # no random at IPC 10: no score
    out = {(r["set"], r["ipc"]): r for r in score_rows(rows, hard_protocol="dc",
                                                        own_protocols={"d3hr": "soft_label_reference"})}
    assert set(out) == {("d3hr", 1), ("herding", 1)}
    d3hr, herding = out["d3hr", 1], out["herding", 1]
    assert d3hr["any_protocol"] == "soft_label_reference"
    assert d3hr["hlr"] == pytest.approx(30.0) and d3hr["ior"] == pytest.approx(20.0)  # 90-60; 80-60, not 80-50
    assert d3hr["lrs"] == pytest.approx(24.82, abs=0.01) and d3hr["ars"] == ""
    assert herding["any_protocol"] == "dc" and herding["ior"] == pytest.approx(20.0) and herding["hlr"] == 20.0


def test_score_rows_adds_ars_when_no_augment_rows_exist():
    rows = [_row("full", "", "convnet", "dc", 90.0), _row("random", 1, "convnet", "dc", 60.0),
            _row("random", 1, "convnet", "dc_no_augment", 65.0), _row("dm", 1, "convnet", "dc", 80.0),
            _row("dm", 1, "convnet", "dc_no_augment", 70.0)]
    (row,) = score_rows(rows, hard_protocol="dc")
    assert row["ars"] == pytest.approx(100 * augmentation_robust_score(0.80, 0.60, 0.70, 0.65), abs=0.01)


def test_every_protocol_has_a_no_augment_twin():
    for name, protocol in list(PROTOCOLS.items()):
        if name.endswith("_no_augment"):
            continue
        twin = get_protocol(f"{name}_no_augment")
        assert twin.augment == "none" and not twin.cutmix
        assert {k: v for k, v in twin.to_dict().items() if k not in ("name", "augment", "cutmix")} == \
               {k: v for k, v in protocol.to_dict().items() if k not in ("name", "augment", "cutmix")}


def test_results_cli_writes_the_scores_and_the_readme_block(tmp_path):
    from diffdistill import results

    rows = [{"set": s, "ipc": ipc, "arch": a, "protocol": p, "mean": m, "std": 0.0, "n": 1, "epochs": 100,
             "iterations": "", "published": "", "git_sha": "abc"}
            for s, ipc, p, m in [("full", "", "dc", 98.0), ("random", 1, "dc", 70.0), ("herding", 1, "dc", 85.0),
                                 ("random", 1, "soft_label_reference", 90.0), ("d3hr", 1, "dc", 80.0),
                                 ("d3hr", 1, "soft_label_reference", 95.0)]
            for a in ("convnet", "unseen_mean")]
    results.write_csv(rows, tmp_path / "digits.csv")
    conf = tmp_path / "parameters_evaluate.yml"
    conf.write_text("evaluate:\n  protocol: dc\n  paper_protocols:\n    d3hr: soft_label_reference\n"
                    "    herding: [dc_reference, glad_reference]\n")
    out = results.write_ddranking(tmp_path / "digits.csv", conf)
    scores = {(r["set"], r["arch"]): r for r in results.read_ddranking_csv(out)}
    assert float(scores["d3hr", "convnet"]["hlr"]) == 18.0 and float(scores["d3hr", "convnet"]["ior"]) == 5.0
    assert scores["herding", "convnet"]["any_protocol"] == "dc"  # no herding rows under dc_reference: the common one
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- results:digits_ddranking -->\nold\n<!-- /results:digits_ddranking -->\ny\n")
    assert results.render_readme(readme, tmp_path)
    text = readme.read_text()
    assert "| d3hr | 1 | dc / soft_label_reference | 18.0 | 5.0 |" in text and "old" not in text
