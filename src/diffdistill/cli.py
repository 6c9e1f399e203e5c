"""Project commands: `kedro lineage show <dataset> [--version V] [--depth N] [--json]`,
`kedro lineage cost <dataset>... [--json]`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from kedro.framework.cli.project import run as kedro_run

from diffdistill.lineage import artifact_cost, format_tree, lineage_json, load_records, trace
from diffdistill.user_errors import check_run, one_line_errors


@click.group(name="diffdistill")
def cli() -> None:
    """diffdistill project commands."""


@cli.group()
def lineage() -> None:
    """Audit which artifact versions produced which artifact."""


@lineage.command("show")
@click.argument("dataset")
@click.option("--version", "version", default=None, help="Version (timestamp) of the artifact; latest if omitted.")
@click.option("--depth", type=click.IntRange(min=0), default=None,
              help="Expand inputs this many levels up (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the DAG and its runs as JSON.")
def show(dataset: str, version: str | None, depth: int | None, as_json: bool) -> None:
    """Print the upstream artifacts, versions and runs that produced DATASET.

    Each artifact version is printed once, depth first, with the node and run that wrote it; a version read
    again further down is a one-line `(see above)`. The runs follow, once each: pipelines, environment, git
    state, start time and the `kedro run` command line that repeats them.
    """
    records = _records()
    root = _traced(records, dataset, version)
    if as_json:
        click.echo(json.dumps(lineage_json(root), indent=2, default=str))
    else:
        click.echo(format_tree(root, depth=depth))


@lineage.command("cost")
@click.argument("datasets", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per dataset.")
def cost(datasets: tuple[str, ...], as_json: bool) -> None:
    """What producing each DATASET (latest version) cost: wall and CPU seconds summed over every node of its
    lineage, the largest memory peaks, its bytes on disk and those of its inputs (`diffdistill.lineage.artifact_cost`).
    """
    records = _records()
    rows = [artifact_cost(_traced(records, name, None)) for name in datasets]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    def size(value: float | None, scale: float = 2**20) -> str:
        return "–" if value is None else f"{value / scale:.2f} MB"

    for row in rows:
        gaps = f" ({row['nodes_without_cost']} of them without a cost record)" if row["nodes_without_cost"] else ""
        click.echo(f"{row['artifact']}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU over {row['nodes']} "
                   f"nodes{gaps}; peak RSS {size(row['peak_rss_mb'], 1)}, CUDA peak {size(row['cuda_peak_mb'], 1)}; "
                   f"stored {size(row['bytes'])}, made from {size(row['upstream_bytes'])}")


def _records() -> list[dict]:
    records = load_records(Path.cwd())
    if not records:
        raise click.ClickException("No lineage records under data/lineage/: run a pipeline first (kedro run).")
    return records


def _traced(records: list[dict], dataset: str, version: str | None):
    root = trace(records, dataset, version)
    if root.run is None:
        known = sorted({name for r in records for name in r.get("outputs", {})})
        raise click.ClickException(
            f"No recorded run wrote {dataset!r}" + (f" at version {version}" if version else "")
            + f". Datasets with lineage: {', '.join(known) or 'none'}")
    return root


@cli.command("run", params=list(kedro_run.params), help=kedro_run.help, short_help="Run the pipeline.")
@click.pass_obj
def run(metadata, **options) -> None:
    """Kedro's `run`, after `check_run` refused the user errors it would otherwise meet mid-run."""
    with one_line_errors():
        check_run(metadata.project_path, metadata.package_name, options)
        kedro_run.callback(**options)
