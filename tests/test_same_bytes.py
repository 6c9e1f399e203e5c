"""Same params => same bytes: every artifact of a `kedro run --env test` equals the committed fixture.

The fixture (`tests/fixtures/env_test_sha256.json`) holds the sha256 of every file of the latest version of every
versioned artifact under data/ (tensors, their sidecars, models, JSON, images, tables). Fields that differ between
two clean runs of the same commit — wall-clock timings — are dropped from JSON before hashing (`VOLATILE`, found by
diffing two clean runs), and the report tables' timing columns are blanked (`VOLATILE_COLUMNS`). Lineage
records, MLflow files and checkpoints are not artifacts and are not compared.

Regenerate after an intended change of bytes (say which and why in the commit):
    python -m tests.test_same_bytes --write            # run --env test with this checkout
    python -m tests.test_same_bytes --from <project>   # or take a finished run of older code
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kedro_project import PROJECT_ROOT, kedro, scratch_project

pytestmark = pytest.mark.slow

FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "env_test_sha256.json"
VERSION = re.compile(r"^\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d\.\d{3}Z$")
# JSON keys whose values are wall-clock measurements: the only fields in which two clean runs of one commit differ
# (checked by diffing every artifact file of two runs).
VOLATILE = {"encode_invert_seconds", "images_per_second", "cost"}
# The report's cost columns (what each set took to make, from the lineage records): wall and CPU seconds and memory
# peaks differ between runs; the set's bytes (`stored (KB)` / `bytes`) do not and stay compared.
VOLATILE_COLUMNS = {"made in (s)", "CPU (s)", "peak RSS (MB)", "wall_s", "cpu_s", "peak_rss_mb"}
CELL = re.compile(r"<t[hd][^>]*>.*?</t[hd]>", re.S)


def _mask_columns(cells: list[str], header: list[str]) -> list[str]:
    return ["" if i < len(header) and header[i] in VOLATILE_COLUMNS else c for i, c in enumerate(cells)]


def _scrub_text(text: str, suffix: str) -> str:
    """The report's tables with their timing columns blanked (markdown, HTML, CSV)."""
    lines, header = text.split("\n"), None
    out = []
    for line in lines:
        if suffix == ".csv":
            cells = next(csv.reader([line]), [])  # quoted cells hold commas ("latent (LD3M, Eq. 12 as printed)")
            header = header or cells
            out.append(",".join(_mask_columns(cells, header)))
        elif suffix == ".md" and line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            header = cells if header is None else header
            out.append("|".join(_mask_columns(cells, header)))
        elif suffix == ".md":
            header = None
            out.append(line)
        else:
            out.append(line)
    text = "\n".join(out)
    if suffix == ".html":
        rows = re.split(r"(<tr[^>]*>.*?</tr>)", text, flags=re.S)
        header = None
        for i, row in enumerate(rows):
            if not row.startswith("<tr"):
                continue
            cells = CELL.findall(row)
            names = [re.sub(r"<[^>]+>", "", c).strip() for c in cells]
            if "made in (s)" in names:
                header = names
            elif header is not None and len(cells) == len(header):
                rows[i] = "".join(_mask_columns(cells, header))
        text = "".join(rows)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def file_digest(path: Path) -> str:
    data = path.read_bytes()
    if path.parent.parent.parent.name == "report" and path.suffix in (".md", ".html", ".csv"):
        data = _scrub_text(data.decode(), path.suffix).encode()
    if path.suffix == ".json":
        try:
            data = json.dumps(_scrub(json.loads(data)), sort_keys=True).encode()
        except ValueError:
            pass
    return hashlib.sha256(data).hexdigest()


def artifact_digests(root: Path) -> dict[str, str]:
    """{artifact path / file inside its latest version: sha256} for every versioned artifact under data/."""
    digests: dict[str, str] = {}
    for folder in sorted({p.parent for p in (root / "data").rglob("*") if p.is_dir() and VERSION.match(p.name)}):
        if "checkpoints" in folder.parts or "lineage" in folder.parts:
            continue
        versions = sorted(p for p in folder.iterdir() if p.is_dir() and VERSION.match(p.name)
                          and (p / folder.name).exists())
        if not versions:
            continue
        latest = versions[-1]
        for path in sorted(latest.rglob("*")):
            relative = path.relative_to(latest)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                digests[f"{folder.relative_to(root)}/{relative}"] = file_digest(path)
    return digests


def platform() -> dict[str, str]:
    """What the bytes depend on besides the code: torch's build and the CPU kernels it dispatches to."""
    import platform as host

    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": host.machine()}


def write_fixture(digests: dict[str, str]) -> None:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps({"platform": platform(), "sha256": digests}, indent=1, sort_keys=True) + "\n")
    print(f"{len(digests)} artifact files -> {FIXTURE}")


def run_env_test(tmp_path: Path) -> dict[str, str]:
    root = scratch_project(tmp_path)
    kedro(root, "run", "--env", "test", timeout=1800)
    return artifact_digests(root)


def test_env_test_artifacts_equal_the_fixture(tmp_path: Path) -> None:
    fixture = json.loads(FIXTURE.read_text())
    if fixture["platform"] != platform():  # float kernels differ across CPUs / torch builds: bytes are per platform
        pytest.skip(f"fixture recorded on {fixture['platform']}, this machine is {platform()}; "
                    "regenerate with `python -m tests.test_same_bytes --write` before a restructuring")
    want = fixture["sha256"]
    got = run_env_test(tmp_path)
    assert sorted(got) == sorted(want), {"missing": sorted(set(want) - set(got)), "new": sorted(set(got) - set(want))}
    changed = sorted(k for k in want if got[k] != want[k])
    assert not changed, f"{len(changed)} artifact files changed bytes: {changed}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            digests = run_env_test(Path(tmp))
        write_fixture(digests)
    elif len(sys.argv) == 3 and sys.argv[1] == "--from":  # a finished project folder (run by older code)
        write_fixture(artifact_digests(Path(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "--compare":  # two finished project folders
        a, b = (artifact_digests(Path(p)) for p in sys.argv[2].split(","))
        print(json.dumps({"only_a": sorted(set(a) - set(b)), "only_b": sorted(set(b) - set(a)),
                          "differ": sorted(k for k in a if k in b and a[k] != b[k]), "same": sum(
                              a[k] == b.get(k) for k in a)}, indent=1))
    else:
        raise SystemExit("usage: python -m tests.test_same_bytes --write | --from ROOT | --compare ROOT_A,ROOT_B")
