"""The report node's tables and plot: honest cells (n = 1, not ± 0.0), a rounded CSV, an HTML page that renders, and
a bar plot that stays legible for 30 sets × 5 architectures (text bounding boxes, not a look)."""

from __future__ import annotations

import io
import random
import re
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest
from kedro.io.core import Version

from diffdistill.datasets import AtomicCSVDataset
from diffdistill.pipelines.report.nodes import (
    ROW_INCHES,
    accuracy_cell,
    accuracy_figure,
    build_report,
    comparison_table,
)

ARCHS = ["convnet", "alexnet", "vgg11", "resnet18", "vit"]
PARAMS = {"archs": ARCHS, "unseen_archs": ARCHS[1:]}
METAS = [{"method": "random"}, {"method": "herding"}, {"method": "d3hr"}, {"method": "d3hr", "variant": "factorised"},
         {"method": "dm", "objective": "dm", "space": "pixel"}, {"method": "ld3m", "objective": "dm", "space": "latent"},
         {"method": "ld3m", "objective": "dc", "space": "latent", "variant": "eq12"},
         {"method": "ld3m", "objective": "dm", "space": "decoder_only"},
         {"method": "ld3m", "objective": "dm", "space": "condition_only"},
         {"method": "ld3m", "objective": "dm", "space": "no_residual"},
         {"method": "ld3m", "objective": "mtt", "space": "latent"}, {"method": "mtt", "objective": "mtt", "space": "pixel"},
         {"method": "dc", "objective": "dc", "space": "pixel"},
         {"method": "ld3m", "objective": "mtt", "space": "latent", "variant": "eq12"},
         {"method": "ld3m", "objective": "dc", "space": "latent"}]


def result(name: str, meta: dict, means: dict[str, float], *, n: int = 3, std: float = 1.5) -> dict:
    summary = {a: {"mean": m, "std": std if n > 1 else 0.0, "n": n} for a, m in means.items()}
    unseen = [means[a] for a in ARCHS[1:] if a in means]
    if unseen:
        summary["unseen_mean"] = {"mean": sum(unseen) / len(unseen), "archs": ARCHS[1:]}
    return {"set": name, "status": "done", "meta": meta, "summary": summary, "protocol": {"name": "dc"}}


def thirty_sets(seed: int = 0) -> list[dict]:
    """15 kinds of set × IPC 1 and 10, accuracies drawn at random (some evaluated with one seed)."""
    rng = random.Random(seed)
    return [result(f"set{i}_ipc{ipc}", {**meta, "ipc": ipc}, {a: rng.uniform(10, 99) for a in ARCHS},
                   n=1 if i % 4 == 0 else 3, std=rng.uniform(0.1, 9))
            for ipc in (1, 10) for i, meta in enumerate(METAS)]


def test_a_single_seed_says_n_1_instead_of_a_zero_spread() -> None:
    assert accuracy_cell({"mean": 91.04, "std": 0.0, "n": 1}) == "91.0 (n = 1)"
    assert accuracy_cell({"mean": 91.04, "std": 0.66, "n": 3}) == "91.0 ± 0.7"
    assert accuracy_cell(None) == "–"
    one = result("full", {"method": "full"}, {a: 96.0 for a in ARCHS}, n=1)
    three = result("random_ipc1", {"method": "random", "ipc": 1}, {a: 50.0 for a in ARCHS}, n=3, std=2.0)
    markdown, html, csv, _, _ = build_report(PARAMS, {}, three, one)
    assert "± 0.0" not in markdown and "± 0.0" not in html
    full_row = next(line for line in markdown.splitlines() if "full data (upper bound)" in line)
    assert full_row.count("96.0 (n = 1)") == len(ARCHS)
    assert "50.0 ± 2.0" in markdown
    by_set = csv.set_index("set")
    assert by_set.loc["full", "seeds"] == 1 and pd.isna(by_set.loc["full", "convnet_std"])  # no spread to report
    assert by_set.loc["random_ipc1", "seeds"] == 3 and by_set.loc["random_ipc1", "convnet_std"] == 2.0


def test_cost_columns_come_from_the_lineage_costs_and_stay_empty_where_unknown(tmp_path: Path) -> None:
    import json

    from diffdistill.datasets import LineageCostDataset

    record = {"save_version": "v1", "status": "completed", "inputs": {},
              "outputs": {"train_set": "v1", "random_ipc1.distilled_set": "v1"},
              "nodes": {"load": {"inputs": {}, "outputs": {"train_set": "v1"},
                                 "cost": {"wall_s": 2.0, "cpu_s": 1.5, "peak_rss_mb": 300.0}},
                        "pick": {"inputs": {"train_set": "v1"}, "outputs": {"random_ipc1.distilled_set": "v1"},
                                 "cost": {"wall_s": 0.25, "cpu_s": 0.25, "peak_rss_mb": 310.4},
                                 "output_bytes": {"random_ipc1.distilled_set": 2048}}}}
    (tmp_path / "lineage").mkdir()
    (tmp_path / "lineage/v1.json").write_text(json.dumps(record))
    costs = LineageCostDataset(filepath=str(tmp_path / "lineage")).load()
    assert costs["random_ipc1"]["wall_s"] == 2.25 and costs["random_ipc1"]["bytes"] == 2048
    assert LineageCostDataset(filepath=str(tmp_path / "none")).load() == {}  # no records yet: no costs, no error
    made = result("random_ipc1", {"method": "random", "ipc": 1}, {a: 50.0 for a in ARCHS})
    bound = result("full", {"method": "full"}, {a: 96.0 for a in ARCHS}, n=1)
    markdown, html, csv, _, summary = build_report(PARAMS, costs, made, bound)
    header = next(line for line in markdown.splitlines() if line.startswith("| IPC"))
    assert [c.strip() for c in header.split("|")[-5:-1]] == ["made in (s)", "CPU (s)", "peak RSS (MB)", "stored (KB)"]
    row = next(line for line in markdown.splitlines() if "random subset" in line)
    assert [c.strip() for c in row.split("|")[-5:-1]] == ["2.2", "1.8", "310", "2.0"]
    full = next(line for line in markdown.splitlines() if "full data" in line)
    assert [c.strip() for c in full.split("|")[-5:-1]] == ["–"] * 4  # the bound distils nothing
    by_set = csv.set_index("set")
    assert (by_set.loc["random_ipc1", "wall_s"], by_set.loc["random_ipc1", "bytes"]) == (2.2, 2048)
    assert pd.isna(by_set.loc["full", "wall_s"]) and pd.isna(by_set.loc["full", "bytes"])
    assert "<th>made in (s)</th>" in html and summary["cost"]["random_ipc1"]["cpu_s"] == 1.75
    partial = {"random_ipc1": {**costs["random_ipc1"], "nodes_without_cost": 1}}
    row = next(line for line in build_report(PARAMS, partial, made)[0].splitlines() if "random subset" in line)
    assert [c.strip() for c in row.split("|")[-5:-3]] == ["–", "–"]  # a sum missing nodes is not shown


def test_unseen_mean_keeps_its_decimal_in_the_markdown() -> None:
    row = result("random_ipc1", {"method": "random", "ipc": 1}, {"convnet": 50.0, **{a: 57.0 for a in ARCHS[1:]}})
    markdown = build_report(PARAMS, {}, row)[0]
    # the table's first row, the unseen-mean cell (before the four cost cells): "57.0", not "57"
    assert re.search(r"\| 57\.0 +\|( – +\|){4}$", markdown.splitlines()[4])


def test_csv_is_rounded_with_one_column_per_number(tmp_path: Path) -> None:
    row = result("random_ipc1", {"method": "random", "ipc": 1}, {a: 7.000000000000001 for a in ARCHS},
                 std=1.23456789)
    csv = build_report(PARAMS, {}, row)[2]
    dataset = AtomicCSVDataset(filepath=str(tmp_path / "table.csv"), version=Version(None, None))
    dataset.save(csv)
    text = next(tmp_path.glob("table.csv/*/table.csv")).read_text()
    header, line = text.strip().splitlines()
    assert header == ("ipc,space,method,protocol,set,seeds,convnet_mean,convnet_std,alexnet_mean,alexnet_std,vgg11_mean,"
                      "vgg11_std,resnet18_mean,resnet18_std,vit_mean,vit_std,unseen_mean,wall_s,cpu_s,peak_rss_mb,bytes")
    assert line == "1,real,random subset,dc,random_ipc1,3," + ",".join(["7.0,1.23"] * len(ARCHS)) + ",7.0,,,,"
    assert "000000" not in text


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.closed_ok = True
        self.headers: list[str] = []
        self.rows: list[list[str]] = []
        self.code: list[str] = []
        self.title = ""

    def handle_starttag(self, tag, attrs) -> None:
        if tag not in ("meta", "br"):
            self.open.append(tag)
        if tag == "tr":
            self.rows.append([])

    def handle_endtag(self, tag) -> None:
        self.closed_ok &= bool(self.open) and self.open.pop() == tag

    def handle_data(self, data) -> None:
        if not self.open:
            return
        where = self.open[-1]
        if where == "th":
            self.headers.append(data.strip())
        elif where == "td":
            self.rows[-1].append(data.strip())
        elif where == "code":
            self.code.append(data)
        elif where == "title":
            self.title += data


def test_html_is_a_well_formed_page_without_markdown_syntax() -> None:
    page_text = build_report(PARAMS, {}, *thirty_sets(), {"set": "ld3m_dm_latent_ipc50", "status": "missing"})[1]
    assert page_text.startswith("<!DOCTYPE html>") and "`" not in page_text
    page = _Page()
    page.feed(page_text)
    assert page.closed_ok and not page.open, "every tag is closed in order"
    assert page.title == "diffdistill report"
    assert page.code == ["unseen mean", "made in (s)", "CPU (s)", "peak RSS (MB)", "stored (KB)"]
    assert page.headers == ["IPC", "space", "method", "protocol", "ConvNet", "AlexNet", "VGG11", "ResNet18", "ViT", "unseen mean",
                            "made in (s)", "CPU (s)", "peak RSS (MB)", "stored (KB)"]
    body = [r for r in page.rows if r]
    assert len(body) == 30 and all(len(r) == len(page.headers) for r in body)
    assert "Not evaluated yet (run their pipelines): ld3m_dm_latent_ipc50" in page_text


def test_bar_plot_stays_legible_for_thirty_sets_and_five_architectures() -> None:
    results = thirty_sets()
    table = comparison_table(results, ARCHS)
    fig = accuracy_figure(table, ARCHS, ARCHS[1:])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = fig.axes
    assert len(axes) == len(ARCHS) + 1  # a panel per architecture and one for the unseen mean
    assert fig.get_size_inches()[1] >= ROW_INCHES * 30
    labels = [t for t in axes[0].get_yticklabels() if t.get_text()]
    assert len(labels) == 30
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.y0)
    for lower, upper in pairwise(boxes):
        assert lower.y1 <= upper.y0 + 0.5, "set labels overlap"
    figure_box = fig.bbox
    panel = axes[0].get_window_extent(renderer)
    for box in boxes:
        assert box.x0 >= figure_box.x0 and box.x1 <= panel.x0, "a set label is cut off or runs into the first panel"
    panels = [ax.get_window_extent(renderer) for ax in axes]
    for left, right in pairwise(panels):
        assert left.x1 < right.x0, "panels overlap"
    titles = [ax.title.get_window_extent(renderer) for ax in axes]
    for left, right in pairwise(titles):
        assert left.x1 < right.x0, "panel titles overlap"
    for ax in axes:  # tick numbers of one panel do not run into each other
        ticks = sorted((t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()), key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in pairwise(ticks))
    legend = fig.legends[0].get_window_extent(renderer)
    assert all(legend.y1 <= p.y0 for p in panels), "the legend covers a panel"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_bar_plot_grows_with_the_number_of_sets() -> None:
    from PIL import Image

    small = build_report(PARAMS, {}, *thirty_sets()[:6])[3]
    large = build_report(PARAMS, {}, *thirty_sets())[3]
    assert isinstance(large, Image.Image) and large.width == small.width
    assert large.height - small.height == pytest.approx(24 * ROW_INCHES * 100, abs=2)  # 24 more rows at 100 dpi
    png = io.BytesIO()
    large.save(png, format="PNG")
    assert png.getvalue() == _png(build_report(PARAMS, {}, *thirty_sets())[3]), "same results, same picture"


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_no_evaluated_set_gives_a_report_that_says_so() -> None:
    markdown, html, csv, plot, summary = build_report(PARAMS, {}, {"set": "random_ipc1", "status": "missing"})
    assert "(no evaluated sets)" in markdown and "(no evaluated sets)" in html
    assert "Not evaluated yet (run their pipelines): random_ipc1" in markdown
    assert csv.empty and list(csv.columns)[:5] == ["ipc", "space", "method", "protocol", "set"]
    assert plot.width > 100 and summary == {"sets": [], "distilled_sets": [], "missing": ["random_ipc1"],
                                            "ddranking": [], "cost": {}}
    assert "DD-Ranking scores: none yet" in markdown


def _record(name: str, meta: dict, accuracy: dict[str, float]) -> dict:
    """An eval_results record as evaluate writes it: per protocol, rows of (arch, seed) and their summary."""
    def entry(protocol: str, value: float) -> dict:
        rows = [{"set": name, "arch": a, "seed": 0, "protocol": protocol, "epochs": 100, "test_accuracy": value / 100}
                for a in ARCHS]
        summary = {a: {"mean": value, "std": 0.0, "n": 1} for a in ARCHS}
        summary["unseen_mean"] = {"mean": value, "archs": ARCHS[1:]}
        return {"protocol": {"name": protocol}, "rows": rows, "summary": summary}

    common, *papers = accuracy.items()
    return {"set": name, "status": "done", "meta": meta, **entry(*common),
            "paper_protocols": {p: entry(p, v) for p, v in papers}}


def test_each_protocol_is_its_own_block_and_the_report_gives_ddranking_scores() -> None:
    results = [_record("full", {"method": "full"}, {"dc": 98.0}),
               _record("random_ipc1", {"method": "random", "ipc": 1}, {"dc": 70.0, "soft_label_reference": 90.0}),
               _record("d3hr_ipc1", {"method": "d3hr", "ipc": 1}, {"dc": 80.0, "soft_label_reference": 95.0})]
    params = {**PARAMS, "protocol": "dc", "paper_protocols": {"d3hr": "soft_label_reference"}}
    markdown, html, csv, plot, summary = build_report(params, {}, *results)
    assert list(csv["protocol"]) == ["dc", "dc", "dc", "soft_label_reference", "soft_label_reference"]  # common first
    assert list(csv["set"])[3:] == ["random_ipc1", "d3hr_ipc1"]
    (convnet,) = [r for r in summary["ddranking"] if r["arch"] == "convnet"]
    assert (convnet["set"], convnet["hlr"], convnet["ior"], convnet["any_protocol"]) == \
           ("d3hr", 18.0, 5.0, "soft_label_reference")
    assert "| d3hr | 1 | dc / soft_label_reference | 18.0 | 5.0 |" in markdown and "DD-Ranking scores" in html
