"""benchmarks/gpu_check.py (issue #14): its --smoke CPU mode writes a report with every section, the section
guards hold (a section that hangs, kills its worker or raises is recorded and the others still run; the global
deadline skips optional sections), and nothing it runs loads kedro, mlflow or kornia, which the device machine
lacks (they are blocked on import in these runs)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
BLOCKED = ("kedro", "kedro_datasets", "kedro_mlflow", "kedro_viz", "kedro_telemetry", "mlflow", "kornia")
@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _blocking_path(tmp_path: Path) -> Path:
    """A folder of stub packages that raise on import, put first on PYTHONPATH: importing any of BLOCKED fails
    as on the device machine, while probes that only look for a package (diffusers' availability checks) pass."""
    site = tmp_path / "blocked"
    for name in BLOCKED:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('{name} is blocked: the device machine does not have it')\n")
    return site


def _run(tmp_path: Path, *args: str, timeout: float) -> tuple[dict, str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(_blocking_path(tmp_path)), *filter(None, [os.environ.get("PYTHONPATH")])]))
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text(), proc.stdout


def test_the_blocker_blocks(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(_blocking_path(tmp_path)))
    for name in ("kedro.config", "mlflow", "kornia"):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True, text=True)
        assert proc.returncode != 0 and "is blocked" in proc.stderr, name


def test_smoke_report_has_every_section(tmp_path, gpu_check):
    report, markdown, stdout = _run(tmp_path, timeout=150)
    names = [section.name for section in gpu_check.SECTIONS]
    assert list(report["sections"]) == names
    assert report["meta"]["profile"] == "smoke" and report["meta"]["forbidden_modules_loaded"] == []
    for name in names:
        section = report["sections"][name]
        assert section["status"] == "ok", (name, section.get("error"), section.get("traceback"))
        assert section["comparisons"] or section["checks"], name
        assert not [c for c in section["checks"] if c["passed"] is False], (name, section["checks"])
        assert f"## {name}: " in markdown
    sections = report["sections"]
    assert "tests/distill/test_d3hr.py" in sections["cuda_tests"]["results"]["pytest_files"]
    assert {c["name"] for c in sections["cuda_tests"]["checks"]} >= {
        "LD3M iteration, CPU vs device: images in [0, 1]", "D3HR regenerate_group from the recipe"}
    assert {m for row in sections["dit_throughput"]["results"]["throughput"] for m in [row["mode"]]} == {
        "fp32", "tf32", "bf16"}
    rows = sections["ld3m_memory"]["results"]["rows"]
    assert {(row["mode"], row["steps"]) for row in rows if "time_s" in row} == {
        (mode, steps) for mode in ("replay", "plain", "checkpoint") for steps in gpu_check.SMOKE.ld3m_steps}
    assert sections["d3hr_sampling"]["results"]["rows"][0]["seconds_per_class"] > 0
    assert sections["eval_loop"]["results"]["speedup_fp32"] > 0
    assert sections["pixel_dm"]["results"]["seconds_per_iteration"] > 0
    assert "7/7 sections ok" in stdout


def test_guards_record_a_hang_a_crash_and_an_exception_and_go_on(tmp_path):
    report, markdown, _ = _run(
        tmp_path, "--sections", "environment", "d3hr_sampling", "eval_loop", "pixel_dm",
        "--inject-fault", "environment:hang", "--hard-cap", "environment=3",
        "--inject-fault", "d3hr_sampling:exit", "--inject-fault", "eval_loop:raise",
        "--deadline-s", "15",  # pixel_dm (optional, smoke budget 20 s) no longer fits
        timeout=90)
    sections = report["sections"]
    assert sections["environment"]["status"] == "timeout"
    assert sections["d3hr_sampling"]["status"] == "crashed" and "code 7" in sections["d3hr_sampling"]["error"]
    assert sections["eval_loop"]["status"] == "failed" and "fault injected" in sections["eval_loop"]["error"]
    assert sections["pixel_dm"]["status"] == "skipped" and "optional" in sections["pixel_dm"]["reason"]
    for status in ("timeout", "crashed", "failed", "skipped"):
        assert f"Status: **{status}**" in markdown
