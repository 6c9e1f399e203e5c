"""Project commands: `kedro lineage show <dataset> [--version V]`."""

from __future__ import annotations

from pathlib import Path

import click
from kedro.framework.cli.project import run as kedro_run

from diffdistill.lineage import format_tree, load_records, trace
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
def show(dataset: str, version: str | None) -> None:
    """Print the chain of upstream artifacts, versions and runs that produced DATASET."""
    records = load_records(Path.cwd())
    if not records:
        raise click.ClickException("No lineage records under data/lineage/: run a pipeline first (kedro run).")
    tree = trace(records, dataset, version)
    if tree.run is None:
        known = sorted({name for r in records for name in r.get("outputs", {})})
        raise click.ClickException(
            f"No recorded run wrote {dataset!r}" + (f" at version {version}" if version else "")
            + f". Datasets with lineage: {', '.join(known) or 'none'}")
    click.echo(format_tree(tree))


@cli.command("run", params=list(kedro_run.params), help=kedro_run.help, short_help="Run the pipeline.")
@click.pass_obj
def run(metadata, **options) -> None:
    """Kedro's `run`, after `check_run` refused the user errors it would otherwise meet mid-run."""
    with one_line_errors():
        check_run(metadata.project_path, metadata.package_name, options)
        kedro_run.callback(**options)
