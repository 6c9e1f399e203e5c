"""`d3hr.generation` read per IPC: one guidance for every IPC, or a table {ipc: guidance}."""

import pytest

from diffdistill.config import ConfigError
from diffdistill.pipelines.d3hr.nodes import _generation

GENERATION = {"guidance": 3.0, "batch_size": 8, "soft_labels": False}


def test_one_guidance_serves_every_ipc():
    params = {"generation": GENERATION}
    assert _generation(params, 1).guidance == _generation(params, 10).guidance == 3.0


def test_guidance_per_ipc_picks_the_ipc_entry():
    params = {"generation": {**GENERATION, "guidance": {1: 3.0, "10": 1.5}}}  # YAML keys may arrive as strings
    assert _generation(params, 1).guidance == 3.0
    assert _generation(params, 10).guidance == 1.5


def test_guidance_table_without_the_ipc_says_what_to_add():
    params = {"generation": {**GENERATION, "guidance": {1: 3.0}}}
    with pytest.raises(ConfigError, match=r"d3hr.generation.guidance has no entry for ipc 10 \(has \[1\]\); add one"):
        _generation(params, 10)
