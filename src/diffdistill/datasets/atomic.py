"""Atomic writes: a killed run must never leave a partial version that a later load could pick up.

Kedro resolves the latest version by globbing `<filepath>/*/<basename>`, so a version becomes
visible the moment its main file (or folder) appears under its final name. Everything is first
written under a hidden temporary name in the same folder, then renamed into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError, VersionNotFoundError, get_filepath_str
from kedro_datasets._typing import JSONPreview
from kedro_datasets.json import JSONDataset

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


class AtomicJSONDataset(JSONDataset):
    """kedro-datasets' JSONDataset, saved atomically, with a JSON preview for kedro-viz.

    `optional: true` makes loading a never-saved artifact return None (reports over many sets skip the
    ones whose pipeline has not run yet).
    """

    def __init__(self, *, optional: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._optional = optional

    def _missing(self) -> bool:
        if not self._optional:
            return False
        try:
            self.resolve_load_version()
        except VersionNotFoundError:
            return True
        return False

    def save(self, data: Any) -> None:
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        payload = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
        write_bytes_atomic(self._fs, save_path, payload)
        self._invalidate_cache()

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
        return JSONPreview(json.dumps(self.load(), indent=2, default=str)[:20000])


class AtomicTextDataset(JSONDataset):
    """A versioned text file (markdown, HTML, CSV), saved atomically; previewed as HTML or a table."""

    def save(self, data: str) -> None:
        if not isinstance(data, str):
            raise TypeError(f"{self} saves text, got {type(data).__name__}")
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        write_bytes_atomic(self._fs, save_path, data.encode())
        self._invalidate_cache()

    def load(self) -> str:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, "rb") as handle:
            return handle.read().decode()

    def preview(self) -> JSONPreview:
        return JSONPreview(json.dumps(self.load()[:20000]))
