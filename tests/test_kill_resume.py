"""Nothing lost on a kill: SIGKILL the real `kedro run` inside every resumable loop (and once mid-save of a
versioned dataset), restart the same command, and compare with an uninterrupted run of it.

Proves (a) every final artifact — and every complete version an interrupted run left behind — is byte-identical
to the uninterrupted run's, and (b) no partial version is ever visible: after each kill, every version folder
either holds a complete version (sha256 sidecar verified on load) or only hidden temporary files that Kedro's
version lookup never picks, and loading the latest version through the dataset class works.

Compared with exclusions (fields that legitimately differ between two clean runs, checked by running the
command twice): `latents_report.json` -> `encode_invert_seconds`, `images_per_second` (wall-clock timings);
lineage records -> `created_at`, `mlflow_run_id`, `run_id`, `save_version` and every version string (they name
the run, not the data). Everything else is compared byte for byte. That no checkpoint is left at the end shows
each restart found the killed run's checkpoints (same key) and consumed them; the logs show the skipped work.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from kedro.io.core import DatasetError, Version
from safetensors.torch import load_file

from diffdistill.cli import cli
from diffdistill.datasets import (
    AtomicJSONDataset,
    AtomicTextDataset,
    DiffusersFolderDataset,
    ImageGridDataset,
    TensorBundleDataset,
)
from diffdistill.lineage import load_records
from tests.kedro_project import scratch_project

pytestmark = pytest.mark.slow

# One namespace of each resumable kind keeps the run short: prior, experts, LD3M (MTT, latent, IPC 1) and its
# evaluation, and D3HR (IPC 10: ten per-class group searches) with the latents and Gaussians it needs. The prior
# trains 4 + 4 steps with a checkpoint every 2 (a resumed run logs that it resumes at step 2 of 4).
COMMAND = ("run", "--env", "test", "--to-outputs", "ld3m_mtt_latent_ipc1.eval_results,d3hr_ipc10.distilled_set",
           "--params", "prior.train.autoencoder_train.steps=4,prior.train.denoiser_train.steps=4,"
           "prior.train.checkpoint_every=2,prior.train.log_every=1")
VERSION = re.compile(r"^\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d\.\d{3}Z$")
TIMING_FIELDS = {"latents_report.json": {"encode_invert_seconds", "images_per_second"}}
RUN_FIELDS = {"created_at", "mlflow_run_id", "run_id", "save_version"}
RUN_TIMEOUT_S = 240


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL the run as soon as `trigger` (a glob under the project root) matches.

    The kill counts as landing inside the loop only if the trigger still matches afterwards: a finished node
    deletes its checkpoints, and a finished save renames its hidden temporary away.
    """

    phase: str
    trigger: str
    busy_poll_after: str | None = None  # saves last milliseconds: poll without sleeping once this glob matches


# In the order the runner reaches them, so each restart gets one kill further.
KILL_POINTS = (
    KillPoint("prior training, after its first step checkpoint", "data/checkpoints/prior/*/autoencoder.pt"),
    KillPoint("experts, after expert 0's checkpoint", "data/checkpoints/experts/*/expert_00000.safetensors"),
    KillPoint("mid-save of prior_model (hidden temporary folder present)",
              "data/06_models/prior_model/*/.prior_model.partial-*",
              busy_poll_after="data/checkpoints/prior/*/denoiser.pt"),
    KillPoint("LD3M distillation, after a mid-run checkpoint",
              "data/checkpoints/ld3m/*/ld3m_checkpoint.safetensors"),
    KillPoint("evaluation, after the first architecture's row", "data/checkpoints/evaluate/*/convnet-seed0.json"),
    KillPoint("D3HR group sampling, after class 0's recipe", "data/checkpoints/d3hr/*/class0.json"),
)
ATTEMPTS = 3  # a kill can land just after the loop or the save finished; then the same point is tried again


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "true", "KEDRO_DISABLE_TELEMETRY": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
           "COLUMNS": "400"}  # wide enough that rich never wraps the log lines this test looks for
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def start_kedro(root: Path, log: Path) -> subprocess.Popen:
    """`kedro run` in its own process group (so the kill reaches every child), output to `log`."""
    with log.open("w") as handle:
        return subprocess.Popen([str(Path(sys.executable).with_name("kedro")), *COMMAND], cwd=root, env=_env(),
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_until(root: Path, point: KillPoint, log: Path) -> bool:
    """Start the command, SIGKILL its group when `point.trigger` matches; True if the kill landed inside."""
    assert not list(root.glob(point.trigger)), f"{point.trigger} matches before the run starts"
    process = start_kedro(root, log)
    deadline, busy = time.monotonic() + RUN_TIMEOUT_S, False
    try:
        while not list(root.glob(point.trigger)):
            busy = busy or bool(point.busy_poll_after and list(root.glob(point.busy_poll_after)))
            if process.poll() is not None:
                pytest.fail(f"kedro exited ({process.returncode}) before {point.phase}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{point.phase} was not reached in {RUN_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(0 if busy else 0.005)
    finally:
        if process.poll() is None:
            kill_group(process)
    assert process.returncode == -signal.SIGKILL
    return bool(list(root.glob(point.trigger)))


def run_to_the_end(root: Path, log: Path) -> None:
    process = start_kedro(root, log)
    try:
        process.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            kill_group(process)
    assert process.returncode == 0, log.read_text()[-6000:]


# --- the catalog as Kedro sees it ---------------------------------------------------------------------------


def dataset_for(folder: Path, version: str | None) -> Any:
    """The project's dataset class for a versioned artifact folder (`<name>.<ext>/<version>/<name>.<ext>`)."""
    kinds = {".safetensors": TensorBundleDataset, ".json": AtomicJSONDataset, ".png": ImageGridDataset,
             ".md": AtomicTextDataset, ".csv": AtomicTextDataset, ".html": AtomicTextDataset}
    kind = kinds.get(folder.suffix, DiffusersFolderDataset)  # a suffix-less artifact is a model folder
    return kind(filepath=str(folder), version=Version(version, None))


def versioned_artifacts(root: Path) -> dict[Path, list[Path]]:
    """{artifact folder: its version folders}, every versioned artifact under data/ (checkpoints excluded)."""
    found: dict[Path, list[Path]] = {}
    for folder in sorted((root / "data").rglob("*")):
        if folder.is_dir() and VERSION.match(folder.name) and "checkpoints" not in folder.parts:
            found.setdefault(folder.parent, []).append(folder)
    return found


def complete_versions(root: Path) -> dict[Path, list[Path]]:
    return {artifact: [v for v in versions if (v / artifact.name).exists()]
            for artifact, versions in versioned_artifacts(root).items()}


def assert_no_partial_version_visible(root: Path, after: str) -> None:
    """Every version folder holds a complete, verified version or only what Kedro never reads; latest loads."""
    for artifact, versions in versioned_artifacts(root).items():
        complete = []
        for version in versions:
            if (version / artifact.name).exists():
                dataset_for(artifact, version.name).load()  # TensorBundleDataset verifies the sha256 sidecar
                complete.append(version.name)
            else:  # unfinished save: hidden temporaries, or a tensor bundle's sidecar (written before the tensors)
                leftovers = [p.name for p in version.iterdir()]
                allowed = [n for n in leftovers if n.startswith(".") or n == f"{artifact.name}.json"]
                assert leftovers == allowed, f"after {after}: {version} holds a partial version {leftovers}"
        latest = dataset_for(artifact, None)
        if complete:
            assert latest.resolve_load_version() == max(complete), f"after {after}: {artifact} latest"
            latest.load()
        else:
            with pytest.raises(DatasetError):
                latest.load()
        # Every visible version is traceable: the run that saved it (killed or not) left its lineage record.
        records = {r["save_version"]: r for r in load_records(root)}
        for version in complete:
            assert version in set(records.get(version, {}).get("outputs", {}).values()), \
                f"after {after}: {artifact}/{version} has no lineage record"


def assert_lineage_show_works(root: Path, dataset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kedro lineage show` (the same click command, in this process) traces the dataset's latest version."""
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["lineage", "show", dataset])
    assert result.exit_code == 0 and f"{dataset} @ " in result.output, result.output


# --- comparison with the uninterrupted run ------------------------------------------------------------------


def _files(version: Path) -> dict[str, Path]:
    return {str(p.relative_to(version)): p for p in sorted(version.rglob("*")) if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(version).parts)}


def assert_same_version(got: Path, want: Path, artifact: str) -> None:
    got_files, want_files = _files(got), _files(want)
    assert sorted(got_files) == sorted(want_files), f"{got}: files differ from the uninterrupted run"
    for name, path in want_files.items():
        excluded = TIMING_FIELDS.get(artifact)
        if excluded:
            mine, theirs = json.loads(got_files[name].read_text()), json.loads(path.read_text())
            assert {k: v for k, v in mine.items() if k not in excluded} == \
                   {k: v for k, v in theirs.items() if k not in excluded}, f"{got_files[name]} differs"
            continue
        assert got_files[name].read_bytes() == path.read_bytes(), f"{got_files[name]} differs from {path}"
        if name.endswith(".safetensors"):
            mine, theirs = load_file(str(got_files[name])), load_file(str(path))
            assert mine.keys() == theirs.keys()
            assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name


def lineage_shape(record: dict[str, Any]) -> dict[str, Any]:
    """A lineage record without what names the run: which node read and wrote which artifacts, params, status."""
    kept = {k: v for k, v in record.items() if k not in RUN_FIELDS}
    kept["nodes"] = {node: {side: sorted(entry[side]) for side in ("inputs", "outputs")}
                     for node, entry in record["nodes"].items()}
    kept["inputs"], kept["outputs"] = sorted(record["inputs"]), sorted(record["outputs"])
    return kept


# --- the test -----------------------------------------------------------------------------------------------


def kill_at_every_point(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Path], dict]:
    """Run, kill at each point in turn (retrying a kill that landed too late), check the catalog after each kill,
    then run to the end. Returns every run's log and, per kill point, the index of the run killed inside it."""
    logs, survived = [], {}
    for point in KILL_POINTS:
        for _ in range(ATTEMPTS):
            logs.append(tmp_path / f"killed_{len(logs)}.log")
            if run_until(root, point, logs[-1]):
                survived[point.phase] = len(logs) - 1
                assert_no_partial_version_visible(root, point.phase)
                assert_lineage_show_works(root, "train_set", monkeypatch)  # saved before every kill point
                break
            assert_no_partial_version_visible(root, f"{point.phase} (kill landed too late)")
    logs.append(tmp_path / "killed_final.log")
    run_to_the_end(root, logs[-1])
    return logs, survived


def test_killed_and_resumed_run_equals_the_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "reference").mkdir()
    (tmp_path / "killed").mkdir()
    reference, killed = scratch_project(tmp_path / "reference"), scratch_project(tmp_path / "killed")
    # The reference runs on the other core while the killed project is interrupted and resumed.
    uninterrupted = start_kedro(reference, tmp_path / "reference.log")
    try:
        logs, survived = kill_at_every_point(killed, tmp_path, monkeypatch)
        assert uninterrupted.wait(timeout=RUN_TIMEOUT_S) == 0, (tmp_path / "reference.log").read_text()[-6000:]
    finally:
        if uninterrupted.poll() is None:
            kill_group(uninterrupted)
    assert set(survived) == {p.phase for p in KILL_POINTS}, f"kills that never landed inside: {survived}"

    # The restarts resumed from the checkpoints instead of starting over.
    after_prior_kill = logs[survived[KILL_POINTS[0].phase] + 1].read_text()
    assert "prior autoencoder: resuming at 2/4 steps" in after_prior_kill  # not from step 0
    text = "\n".join(log.read_text() for log in logs)
    assert "experts: resuming, 1 of 2 experts already trained" in text
    assert re.search(r"ld3m_mtt_latent_ipc1: resuming from \S+ after 1 iterations", text)

    # Nothing partial, nothing left over (each restart found the killed run's checkpoints under the same key and
    # deleted them when done), and every complete version equals the uninterrupted run's.
    assert_no_partial_version_visible(killed, "the final run")
    assert not [p for p in (killed / "data" / "checkpoints").rglob("*") if p.is_file()]
    want, got = complete_versions(reference), complete_versions(killed)
    assert {a.relative_to(reference) for a in want} == {a.relative_to(killed) for a in got}
    for artifact, (only,) in want.items():
        mine = got[killed / artifact.relative_to(reference)]
        assert mine, artifact
        for version in mine:
            assert_same_version(version, only, artifact.name)

    (want_record,) = sorted((reference / "data" / "lineage").glob("*.json"))
    final_record = sorted((killed / "data" / "lineage").glob("*.json"))[-1]
    assert lineage_shape(json.loads(final_record.read_text())) == lineage_shape(json.loads(want_record.read_text()))
