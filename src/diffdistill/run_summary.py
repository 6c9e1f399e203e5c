"""`RunSummaryHook`: a `kedro run` ends by saying where its results are.

After a run that wrote the report: the comparison table (markdown), the fixed paths of the latest report files,
and the two commands that browse them (kedro-viz, the MLflow UI). After any other run: what it wrote, briefly.
What a run wrote is read back from the catalog when the run ends (every versioned output whose newest version is
this run's save version), so it is the same under every runner, ParallelRunner included.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from kedro.framework.hooks import hook_impl
from kedro.io.core import DatasetError, VersionNotFoundError

logger = logging.getLogger(__name__)

LISTED = 12  # a run that wrote more artifacts than this is summarised per folder
VIZ_URL, MLFLOW_URL = "http://127.0.0.1:4141", "http://127.0.0.1:5000"


def written_datasets(catalog: Any, names: list[str], save_version: str) -> dict[str, Any]:
    """{name: dataset} of the versioned datasets among `names` whose newest saved version is `save_version`."""
    written = {}
    for name in sorted(names):
        try:
            dataset = catalog.get(name)
        except Exception:  # noqa: BLE001 - a dataset the catalog cannot build was not written either
            continue
        if dataset is None or not getattr(dataset, "_version", None):
            continue
        try:
            if dataset.resolve_load_version() == save_version:
                written[name] = dataset
        except (DatasetError, VersionNotFoundError):
            continue
    return written


def _relative(path: str | Path, root: Path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(root.resolve())) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def tracking_command(root: Path) -> str:
    """`mlflow ui` for the tracking store this run logged to (the project's sqlite file unless configured else)."""
    uri = "sqlite:///mlflow.db"
    try:
        import mlflow

        uri = mlflow.get_tracking_uri() or uri
    except ImportError:
        pass
    prefix = "sqlite:///"
    if uri.startswith(prefix) and Path(uri[len(prefix):]).is_absolute():
        uri = prefix + _relative(uri[len(prefix):], root)
    return f"mlflow ui --backend-store-uri {uri}"


def browse_lines(env: str | None, root: Path) -> list[str]:
    viz = "kedro viz run" + (f" --env {env}" if env else "")
    mlflow = tracking_command(root)
    width = max(len(viz), len(mlflow)) + 2
    return ["Browse the results:",
            f"  {viz:<{width}}# pipeline graph, every artifact's preview: {VIZ_URL}",
            f"  {mlflow:<{width}}# runs, parameters, metrics, attached files: {MLFLOW_URL}"]


def written_lines(written: dict[str, Any], save_version: str, root: Path) -> list[str]:
    """What the run wrote: one path per artifact, or a count per folder when there are more than LISTED."""
    paths = [_relative(str(d._filepath), root) for d in written.values()]
    lines = [f"This run wrote {len(paths)} artifact{'s' if len(paths) != 1 else ''}, version {save_version} "
             f"(each in <path>/{save_version}/):"]
    if len(paths) <= LISTED:
        return lines + [f"  {p}" for p in paths]
    folders: dict[str, int] = {}
    for path in paths:
        parts = Path(path).parts
        folder = str(Path(*parts[:3])) if len(parts) > 3 else str(Path(path).parent)
        folders[folder] = folders.get(folder, 0) + 1
    return lines + [f"  {folder + '/':<48}{count} artifact{'s' if count != 1 else ''}"
                    for folder, count in sorted(folders.items())]


def summary_text(written: dict[str, Any], save_version: str, env: str | None, root: Path) -> str:
    """The end-of-run text for the datasets a run wrote."""
    def options(dataset: Any) -> dict[str, Any]:
        return (getattr(dataset, "metadata", None) or {}).get("diffdistill") or {}

    with_latest = {name: d for name, d in written.items() if getattr(d, "latest_path", None)}
    lines: list[str] = [""]
    for dataset in written.values():
        if options(dataset).get("print_after_run"):
            where = getattr(dataset, "latest_path", None) or str(dataset._filepath)
            lines += [f"Comparison table ({_relative(where, root)}):", "",
                      dataset.load().rstrip(), ""]
    if with_latest:
        lines.append("Latest results (fixed paths, rewritten by every run that writes them):")
        lines += [f"  {_relative(d.latest_path, root)}" for d in sorted(with_latest.values(), key=lambda d: d.latest_path)]
        example = Path(_relative(str(next(iter(with_latest.values()))._filepath), root))
        lines += [f"  this run's versioned copies: <path>/{save_version}/, e.g. {example / save_version / example.name}",
                  ""]
    else:  # a phase run: what it wrote, then where to look, without blank lines (a phase's log stays short)
        return "\n".join(written_lines(written, save_version, root) + browse_lines(env, root)[1:]) + "\n"
    return "\n".join(lines + browse_lines(env, root)) + "\n"


class RunSummaryHook:
    """Prints the end-of-run summary (`summary_text`) to stdout once a run succeeds."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._save_version: str | None = None

    @hook_impl
    def after_catalog_created(self, save_version: str) -> None:
        self._save_version = save_version

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if self._save_version is None:
            return
        root = Path(run_params.get("project_path") or os.getcwd())
        try:
            written = written_datasets(catalog, sorted(pipeline.all_outputs()), self._save_version)
            text = summary_text(written, self._save_version, run_params.get("env"), root)
        except Exception as exc:  # noqa: BLE001 - a summary must never turn a finished run into a failed one
            logger.warning("Could not summarise the run: %s", exc)
            return
        stream = self._stream or sys.stdout
        stream.write(text)
        stream.flush()
