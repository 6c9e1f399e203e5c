"""Atomic file writes for checkpoints and records: a killed process leaves the old file or the new one, never half.

The payload is written under a hidden temporary name in the same folder (unique per process and call, so
concurrent writers never share one), then renamed over the final name: a rename within one filesystem is atomic.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def temporary_sibling(path: str | os.PathLike[str]) -> Path:
    """A hidden name next to `path` that no glob for `path`'s name (or a version folder) matches."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` to fill a temporary sibling of `path`, then rename it into place; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # the write failed: leave the previous file as it was, and no litter
            tmp.unlink()
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | os.PathLike[str], value: Any, **dumps_kwargs: Any) -> Path:
    return write_text_atomic(path, json.dumps(value, **dumps_kwargs))
