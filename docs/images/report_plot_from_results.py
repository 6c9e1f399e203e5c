"""Draw the report's bar plot from a committed results table (the README's numbers), for docs/images.

    python docs/images/report_plot_from_results.py results/digits.csv docs/images/report-accuracy.png [protocol]

The report node draws the same figure from the evaluation artifacts of a run; the committed CSV holds those numbers
for every set measured so far, which no single CPU run reproduces quickly. One figure compares sets under one
protocol: `protocol` (default `dc`, the common one) picks its rows.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from diffdistill.pipelines.report.nodes import bar_plot, comparison_table
from diffdistill.results import ARCHS, UNSEEN, read_csv

SPACES = ("decoder_only", "condition_only", "no_residual", "latent", "pixel")


def set_meta(name: str, ipc: str) -> dict:
    """The distilled-set metadata the report's row labels read, from a results row's set name (no `_ipc<N>`)."""
    meta: dict = {"ipc": int(ipc) if ipc else None}
    if name in ("random", "herding", "full"):
        return {**meta, "method": name}
    if name.startswith("d3hr"):
        return {**meta, "method": "d3hr", "variant": "factorised" if name == "d3hr_factorised" else "paper"}
    _, objective, rest = name.split("_", 2)  # ld3m_<objective>_<space>[_<variant>]
    space = next(s for s in SPACES if rest == s or rest.startswith(s + "_"))
    variant = rest[len(space) + 1:] or None
    return {**meta, "method": "ld3m", "objective": objective, "space": space, **({"variant": variant} if variant else {})}


def results_from_csv(path: Path, protocol: str = "dc") -> list[dict]:
    """One evaluation result per (set, IPC) under `protocol`, in the shape `evaluate` writes (`summary[arch]` =
    mean, std, n)."""
    rows = [row for row in read_csv(path) if row["protocol"] == protocol]
    if not rows:
        raise SystemExit(f"{path} has no rows under protocol {protocol!r}")
    grouped: dict[tuple[str, str], dict] = defaultdict(dict)
    for row in rows:
        stats = {"mean": float(row["mean"]), "std": float(row["std"]), "n": int(row["n"])}
        grouped[(row["set"], row["ipc"])][row["arch"]] = stats
    return [{"set": f"{name}_ipc{ipc}" if ipc else name, "status": "done", "meta": set_meta(name, ipc),
             "summary": summary} for (name, ipc), summary in grouped.items()]


def main(source: str, target: str, protocol: str = "dc") -> None:
    results = results_from_csv(Path(source), protocol)
    bar_plot(comparison_table(results, ARCHS), ARCHS, UNSEEN).save(target)
    print(f"{len(results)} sets × {len(ARCHS)} architectures -> {target}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
