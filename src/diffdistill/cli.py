"""Project commands: `kedro lineage show <dataset> [--version V] [--depth N] [--json]`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from kedro.framework.cli.project import run as kedro_run

from diffdistill.lineage import format_tree, lineage_json, load_records, trace
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
    records = load_records(Path.cwd())
    if not records:
        raise click.ClickException("No lineage records under data/lineage/: run a pipeline first (kedro run).")
    root = trace(records, dataset, version)
    if root.run is None:
        known = sorted({name for r in records for name in r.get("outputs", {})})
        raise click.ClickException(
            f"No recorded run wrote {dataset!r}" + (f" at version {version}" if version else "")
            + f". Datasets with lineage: {', '.join(known) or 'none'}")
    if as_json:
        click.echo(json.dumps(lineage_json(root), indent=2, default=str))
    else:
        click.echo(format_tree(root, depth=depth))


@cli.command("run", params=list(kedro_run.params), help=kedro_run.help, short_help="Run the pipeline.")
@click.pass_obj
def run(metadata, **options) -> None:
    """Kedro's `run`, after `check_run` refused the user errors it would otherwise meet mid-run."""
    with one_line_errors():
        check_run(metadata.project_path, metadata.package_name, options)
        kedro_run.callback(**options)
