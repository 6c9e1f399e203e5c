"""What kedro-viz gets from the report's datasets (the preview kind it picks from the annotation, content it can
render), and the fixed `latest` copy every save also writes."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.io.core import Version

from diffdistill.datasets import (
    AtomicCSVDataset,
    AtomicJSONDataset,
    AtomicTextDataset,
    ImageBundleDataset,
    ImageGridDataset,
)
from diffdistill.datasets.atomic import PREVIEW_LIST_ITEMS
from tests.datasets.test_tensor_bundle import make_bundle

V1, V2 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"


def preview_type(dataset) -> str:
    """The preview kind as kedro-viz 12.5 reads it (`DataNodeMetadata.set_preview_type`)."""
    annotation = inspect.signature(dataset.preview).return_annotation
    return getattr(annotation, "__name__", str(annotation))


def kedro_viz_emphasis(text: str) -> str:
    """kedro-viz's HTML preview turns `_text_` on one line into <em>text</em> (its markdown pass, `. ` stops at newlines)."""
    return re.sub(r"_(.*?)_", r"<em>\1</em>", text)


def visible_text(markup: str) -> str:
    return re.sub(r"<[^>]*>", "", markup)


@pytest.mark.parametrize("kind, suffix, payload", [
    (AtomicTextDataset, "md", "| a |\n|---|\n| 1 |\n"),
    (AtomicTextDataset, "html", "<p>x</p>"),
    (AtomicJSONDataset, "json", {"a": 1}),
    (AtomicCSVDataset, "csv", pd.DataFrame({"a": [1.5]})),
    (ImageGridDataset, "png", torch.zeros(3, 4, 5, dtype=torch.uint8)),
])
def test_latest_copy_holds_the_newest_version_byte_for_byte(tmp_path: Path, kind, suffix, payload) -> None:
    path, latest = tmp_path / f"table.{suffix}", tmp_path / "latest" / f"table.{suffix}"
    kind(filepath=str(path), latest=str(latest), version=Version(None, V1)).save(payload)
    first = (path / V1 / path.name).read_bytes()
    assert latest.read_bytes() == first
    second_payload = {"a": 2} if suffix == "json" else payload
    kind(filepath=str(path), latest=str(latest), version=Version(None, V2)).save(second_payload)
    assert latest.read_bytes() == (path / V2 / path.name).read_bytes()
    assert sorted(p.name for p in latest.parent.iterdir()) == [latest.name], "no temporary is left beside it"
    reader = kind(filepath=str(path), version=Version(None, None))
    assert reader.resolve_load_version() == V2, "the latest folder is not mistaken for a version"
    assert kind(filepath=str(path), latest=str(latest)).latest_path == str(latest)


def test_report_text_previews_as_rendered_html_keeping_set_names(tmp_path: Path) -> None:
    markdown = ("`unseen mean` averages AlexNet.\n\n| IPC | method |\n|:--|:--|\n| 1 | DM |\n\n"
                "Not evaluated yet (run their pipelines): ld3m_dm_latent_ipc1, d3hr_ipc10\n")
    md = AtomicTextDataset(filepath=str(tmp_path / "table.md"))
    md.save(markdown)
    assert preview_type(md) == "HTMLPreview"
    shown = md.preview()
    assert "| IPC | method |\n|:--|:--|\n| 1 | DM |" in shown  # the pipe table reaches kedro-viz's table pattern
    rendered = kedro_viz_emphasis(shown)
    assert "<em>" not in rendered
    assert "ld3m_dm_latent_ipc1, d3hr_ipc10" in visible_text(rendered)

    page = AtomicTextDataset(filepath=str(tmp_path / "table.html"))
    page.save("<html>\n<body>\n<table class=\"report\">\n<tr><td>ld3m_dm_latent_ipc1</td></tr>\n</table>\n</body>\n</html>\n")
    assert preview_type(page) == "HTMLPreview"
    shown = page.preview()
    assert "\n<" not in shown and '<table class="report">' in shown  # one line: kedro-viz makes newlines <br>
    assert "ld3m_dm_latent_ipc1" in visible_text(kedro_viz_emphasis(shown).replace("\n", ""))


def test_csv_previews_as_a_table_kedro_viz_can_send(tmp_path: Path) -> None:
    ds = AtomicCSVDataset(filepath=str(tmp_path / "table.csv"))
    ds.save(pd.DataFrame({"set": ["full", "random_ipc1"], "seeds": [1, 3], "convnet_std": [float("nan"), 0.5]}))
    assert preview_type(ds) == "TablePreview"
    table = ds.preview(nrows=100)
    assert table["columns"] == ["set", "seeds", "convnet_std"]
    assert table["data"] == [["full", 1, ""], ["random_ipc1", 3, 0.5]]
    json.dumps(table, allow_nan=False)  # NaN is not JSON: it would break kedro-viz's API response


def test_json_preview_is_always_a_valid_json_object(tmp_path: Path) -> None:
    ds = AtomicJSONDataset(filepath=str(tmp_path / "history.json"))
    ds.save({"grad_norm": list(range(5000)), "nested": {"recipes": [{"seed": i} for i in range(50)]}})
    assert preview_type(ds) == "JSONPreview"
    shown = json.loads(ds.preview())
    assert shown["grad_norm"] == [*range(PREVIEW_LIST_ITEMS), f"… {5000 - PREVIEW_LIST_ITEMS} more"]
    assert len(shown["nested"]["recipes"]) == PREVIEW_LIST_ITEMS + 1
    ds.save("just text")
    assert json.loads(ds.preview()) == {"value": "just text"}  # kedro-viz's JSON viewer needs an object


def test_image_previews_are_titled_grids(tmp_path: Path) -> None:
    ds = ImageBundleDataset(filepath=str(tmp_path / "random_ipc2" / "distilled_set.safetensors"), title="random_ipc2")
    ds.save(make_bundle())
    assert preview_type(ds) == "ImagePreview"
    untitled = ImageBundleDataset(filepath=str(tmp_path / "random_ipc2" / "distilled_set.safetensors"))
    assert untitled.preview() != ds.preview()  # the title defaults to the file's stem, not the set name
    assert preview_type(ImageGridDataset(filepath=str(tmp_path / "g.png"))) == "ImagePreview"
