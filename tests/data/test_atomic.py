"""Atomic writes: the old file or the new one, never half; no temporary left behind."""

from __future__ import annotations

import json

import pytest

from diffdistill.data.atomic import temporary_sibling, write_atomic, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    path = write_json_atomic(tmp_path / "deep" / "record.json", {"step": 1})
    assert json.loads(path.read_text()) == {"step": 1}

    def half_then_crash(tmp) -> None:
        tmp.write_text('{"step": 2')  # a torn write...
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(path, half_then_crash)
    assert json.loads(path.read_text()) == {"step": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]
    write_json_atomic(path, {"step": 3})
    assert json.loads(path.read_text()) == {"step": 3}


def test_temporaries_are_hidden_and_unique(tmp_path) -> None:
    a, b = temporary_sibling(tmp_path / "x.safetensors"), temporary_sibling(tmp_path / "x.safetensors")
    assert a != b and a.parent == tmp_path and a.name.startswith(".x.safetensors.partial-")
    assert not list(tmp_path.glob("x.safetensors*"))  # a version glob never matches them
