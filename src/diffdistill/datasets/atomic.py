"""Atomic writes: a killed run must never leave a partial version that a later load could pick up.

Kedro resolves the latest version by globbing `<filepath>/*/<basename>`, so a version becomes
visible the moment its main file (or folder) appears under its final name. Everything is first
written under a hidden temporary name in the same folder, then renamed into place.

`latest: <path>` (the report's entries): every save also writes the same bytes, atomically and after the
versioned file, to that fixed, unversioned path, so the newest results have a name that does not change.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io.core import DatasetError, VersionNotFoundError, get_filepath_str, get_protocol_and_path
from kedro_datasets._typing import HTMLPreview, JSONPreview, TablePreview
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import CSVDataset

from diffdistill.data import atomic as data_atomic


def temporary_sibling(path: str) -> str:
    """A hidden name next to `path` that no version glob matches."""
    return str(data_atomic.temporary_sibling(path))


def write_bytes_atomic(fs: Any, path: str, payload: bytes) -> None:
    """Write `payload` to `path` through fsspec `fs`, appearing under its final name all at once."""
    parent = os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = temporary_sibling(path)
    with fs.open(tmp, "wb") as handle:
        handle.write(payload)
    fs.mv(tmp, path)


def commit_local_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Rename a fully written folder into place (same filesystem, so atomic)."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp_dir, final_dir)


class LatestCopy:
    """Mixin of the atomic datasets: `save_payload` writes the versioned file, then the `latest` copy if one is set."""

    _latest: str | None = None

    def keep_latest_at(self, latest: str | None) -> None:
        """Set the fixed path (as the catalog gives it, protocol and all) that every save also writes."""
        self._latest = get_protocol_and_path(latest)[1] if latest else None

    @property
    def latest_path(self) -> str | None:
        """The fixed path every save also writes (catalog key `latest`), or None."""
        return self._latest

    def save_payload(self, payload: bytes) -> None:
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        write_bytes_atomic(self._fs, save_path, payload)
        if self._latest:  # second, so the fixed name never shows a version that is not saved yet
            write_bytes_atomic(self._fs, self._latest, payload)
        self._invalidate_cache()


PREVIEW_LIST_ITEMS = 20


def _shortened(value: Any) -> Any:
    """`value` with every list longer than PREVIEW_LIST_ITEMS cut to that many items plus a note of how many more."""
    if isinstance(value, dict):
        return {key: _shortened(item) for key, item in value.items()}
    if isinstance(value, list):
        head = [_shortened(item) for item in value[:PREVIEW_LIST_ITEMS]]
        more = len(value) - PREVIEW_LIST_ITEMS
        return head + [f"… {more} more"] if more > 0 else head
    return value


class AtomicJSONDataset(LatestCopy, JSONDataset):
    """kedro-datasets' JSONDataset, saved atomically, with a JSON preview for kedro-viz.

    `optional: true` makes loading a never-saved artifact return None (reports over many sets skip the
    ones whose pipeline has not run yet).
    """

    def __init__(self, *, optional: bool = False, latest: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._optional = optional
        self.keep_latest_at(latest)

    def _missing(self) -> bool:
        if not self._optional:
            return False
        try:
            self.resolve_load_version()
        except VersionNotFoundError:
            return True
        return False

    def save(self, data: Any) -> None:
        self.save_payload(json.dumps(data, indent=2, sort_keys=True, default=str).encode())

    def load(self) -> Any:
        if self._missing():
            return None
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, "rb") as handle:
            payload = handle.read()
        try:
            return json.loads(payload)
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            raise DatasetError(f"{load_path} is not valid JSON ({exc}); it was truncated or edited. Re-run the "
                               "pipeline that produces it, or pin another version with --load-versions") from exc

    def preview(self) -> JSONPreview:
        """The document as kedro-viz's JSON viewer takes it: always valid JSON, an object or array at the top, long
        lists cut to their first items (gradient histories and recipes run to thousands of entries)."""
        value = self.load()
        if not isinstance(value, dict | list):
            value = {"value": value}
        return JSONPreview(json.dumps(_shortened(value), indent=2, default=str))


# kedro-viz's HTML preview runs a small markdown converter over the sanitised HTML, which turns any
# `_text_` on one line into <em>text</em>, so set names such as ld3m_dm_latent_ipc1 lose their underscores. A
# newline stops that pattern (it never crosses one); inside an attribute value it renders as nothing.
_KEEP_UNDERSCORE = '_<span title="\n"></span>'
_TAG = re.compile(r"(<[^>]*>)")


def _underscores_kept(text: str, *, skip_line=lambda line: False) -> str:
    """`text` (HTML or markdown) with every underscore outside tags protected from kedro-viz's emphasis rule."""
    def guard(segment: str) -> str:
        return "".join(part if part.startswith("<") else part.replace("_", _KEEP_UNDERSCORE)
                       for part in _TAG.split(segment))
    return "\n".join(line if skip_line(line) else guard(line) for line in text.split("\n"))


class AtomicTextDataset(LatestCopy, JSONDataset):
    """A versioned text file (markdown or HTML), saved atomically; kedro-viz shows it rendered (HTMLPreview)."""

    def __init__(self, *, latest: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keep_latest_at(latest)

    def save(self, data: str) -> None:
        if not isinstance(data, str):
            raise TypeError(f"{self} saves text, got {type(data).__name__}")
        self.save_payload(data.encode())

    def load(self) -> str:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, "rb") as handle:
            return handle.read().decode()

    def preview(self) -> HTMLPreview:
        """HTML as it is (on one line: kedro-viz's renderer makes every newline a <br>); any other text goes to
        kedro-viz's markdown renderer (pipe tables, headings, `code`)."""
        text = self.load()[:200_000]
        if PurePosixPath(self._filepath).suffix.lower() in (".html", ".htm"):
            return HTMLPreview(_underscores_kept(" ".join(text.splitlines())))
        # Pipe-table rows stay untouched: the renderer's table pattern needs each row on one line.
        return HTMLPreview(_underscores_kept(text, skip_line=lambda line: line.lstrip().startswith("|")))


class AtomicCSVDataset(LatestCopy, CSVDataset):
    """kedro-datasets' pandas CSVDataset (a DataFrame; kedro-viz table preview), saved atomically.

    Empty cells (a std over one seed) preview as empty: kedro-viz's API cannot send NaN.
    """

    def __init__(self, *, latest: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keep_latest_at(latest)

    def save(self, data: pd.DataFrame) -> None:
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"{self} saves a pandas DataFrame, got {type(data).__name__}")
        buffer = io.StringIO()
        data.to_csv(buffer, **self._save_args)
        self.save_payload(buffer.getvalue().encode())

    def preview(self, nrows: int = 5) -> TablePreview:
        table = super().preview(nrows=nrows)
        table["data"] = [["" if isinstance(v, float) and math.isnan(v) else v for v in row] for row in table["data"]]
        return TablePreview(table)
