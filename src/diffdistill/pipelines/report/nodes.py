"""Nodes of the `report` pipeline: the LD3M paper's table layout (rows: space × method, columns: architectures)."""

from __future__ import annotations

import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402

from diffdistill.results import ARCH_LABELS  # noqa: E402

# Rows of the table and of the plot go in this order of spaces within each IPC; each space has one colour.
SPACE_ORDER = ["real", "pixel", "decoder only", "condition only", "no residual", "latent (LD3M, Eq. 12 as printed)",
               "latent (LD3M)", "noise (D3HR)"]
CSV_DECIMALS = 2  # accuracies in %: two decimals are well below the spread over seeds
ROW_INCHES = 0.24  # height of one set's row in the bar plot: 8-pt labels with room between them
PANEL_INCHES, LABEL_INCHES = 2.0, 3.4  # width of one architecture's panel and of the set labels


def row_label(meta: dict[str, Any]) -> tuple[str, str]:
    """(space, method) of a set, e.g. ("latent (LD3M)", "DM"), ("real", "random")."""
    method = str(meta.get("method", "?"))
    if method in ("random", "herding"):
        return "real", {"random": "random subset", "herding": "herding"}[method]
    if method == "full":
        return "real", "full data (upper bound)"
    if method == "external":
        return "external", str(meta.get("name", "?"))
    if method == "d3hr":
        return "noise (D3HR)", "group sampling" + (" (factorised)" if meta.get("variant") == "factorised" else "")
    space = str(meta.get("space", "latent"))
    objective = str(meta.get("objective", method)).upper()
    if space == "latent" and meta.get("variant") == "eq12":
        return "latent (LD3M, Eq. 12 as printed)", objective
    return {"latent": "latent (LD3M)", "pixel": "pixel"}.get(space, space.replace("_", " ")), objective


def accuracy_cell(stats: dict[str, Any] | None) -> str:
    """"mean ± std" over seeds; a single seed has no spread to show, so "mean (n = 1)"; "–" when not evaluated."""
    if not stats:
        return "–"
    if stats.get("n") == 1:
        return f"{stats['mean']:.1f} (n = 1)"
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def comparison_table(results: list[dict[str, Any]], archs: list[str],
                     costs: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per evaluated set and protocol: mean ± std per architecture, the mean over unseen architectures,
    and what the set cost to make (`costs`: set -> `diffdistill.lineage.artifact_cost`; "–" where unknown).

    The common protocol's rows come first (`_common`), then each paper protocol's block: rows compare only within
    one protocol. Hidden columns (`_`-prefixed) keep the numbers: `_<arch>_mean`, `_<arch>_std` (NaN for one
    seed), `_seeds`, and `_<cost key>` for COST_COLUMNS.
    """
    costs = costs or {}
    records = []
    for result in results:
        if result.get("status") != "done":
            continue
        meta = result.get("meta", {})
        space, method = row_label(meta)
        entries = [(True, result), *((False, entry) for entry in result.get("paper_protocols", {}).values())]
        for common, entry in entries:
            row: dict[str, Any] = {"IPC": meta.get("ipc") if meta.get("ipc") is not None else "all",
                                   "space": space, "method": method, "protocol": _protocol_name(entry),
                                   "set": result["set"], "_common": common}
            seeds = []
            for arch in archs:
                stats = entry["summary"].get(arch)
                row[ARCH_LABELS.get(arch, arch)] = accuracy_cell(stats)
                row[f"_{arch}_mean"] = stats["mean"] if stats else float("nan")
                row[f"_{arch}_std"] = stats["std"] if stats and stats.get("n") != 1 else float("nan")
                if stats and stats.get("n") is not None:
                    seeds.append(int(stats["n"]))
            unseen = entry["summary"].get("unseen_mean")
            row["unseen mean"] = f"{unseen['mean']:.1f}" if unseen else "–"
            row["_unseen_mean"] = unseen["mean"] if unseen else float("nan")
            row["_seeds"] = min(seeds) if seeds else None
            row.update(cost_cells(costs.get(result["set"])))
            records.append(row)
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    order = {space: i for i, space in enumerate(SPACE_ORDER)}
    table["_protocol_order"] = [("" if common else protocol) for common, protocol in
                                zip(table["_common"], table["protocol"], strict=True)]
    table["_ipc_order"] = table["IPC"].map(lambda v: 10**9 if v == "all" else int(v))
    table["_space_order"] = table["space"].map(lambda s: order.get(s, len(order)))
    return table.sort_values(["_protocol_order", "_ipc_order", "_space_order", "method"]).reset_index(drop=True)


# What a set cost to make, from its lineage (every producing node once, shared upstream phases in full):
# visible label -> key of `artifact_cost`. The CSV carries all of them; bytes are the set's own on disk.
COST_COLUMNS = {"made in (s)": "wall_s", "CPU (s)": "cpu_s", "peak RSS (MB)": "peak_rss_mb",
                "stored (KB)": "bytes"}


def cost_cells(cost: dict[str, Any] | None) -> dict[str, Any]:
    """The cost columns of one set's rows: text cells and hidden `_<key>` numbers (NaN where unknown, e.g. the
    full-data bound, which distils nothing, or runs recorded before cost accounting)."""
    cost = cost or {}
    partial = bool(cost.get("nodes_without_cost"))  # a sum that misses nodes would under-state the time
    cells: dict[str, Any] = {}
    for label, key in COST_COLUMNS.items():
        value = None if partial and key in ("wall_s", "cpu_s") else cost.get(key)
        cells[f"_{key}"] = float("nan") if value is None else float(value)
        cells[label] = "–" if value is None else CELL_FORMAT[key](float(value))
    return cells


CELL_FORMAT = {"wall_s": "{:.1f}".format, "cpu_s": "{:.1f}".format, "peak_rss_mb": "{:.0f}".format,
               "bytes": lambda n: f"{n / 1024:.1f}"}


def _protocol_name(entry: dict[str, Any]) -> str:
    protocol = entry.get("protocol")
    if isinstance(protocol, dict):
        return str(protocol.get("name", "?"))
    rows = entry.get("rows") or []
    return str(rows[0].get("protocol", "?")) if rows else "?"


def common_protocol(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the common protocol (the bar plot compares every set under one protocol)."""
    return table[table["_common"]].reset_index(drop=True) if not table.empty else table


def visible(table: pd.DataFrame) -> pd.DataFrame:
    return table[[c for c in table.columns if not c.startswith("_") and c != "set"]] if not table.empty else table


def numeric(table: pd.DataFrame, archs: list[str]) -> pd.DataFrame:
    """The machine-readable table: one row per set, `seeds`, then mean and std (empty for one seed) per
    architecture and the unseen mean, in % rounded to CSV_DECIMALS, then the set's cost (COST_COLUMNS' keys:
    seconds, MB, bytes; empty where unknown)."""
    columns = {"IPC": "ipc", "space": "space", "method": "method", "protocol": "protocol", "set": "set",
               "_seeds": "seeds"}
    for arch in archs:
        columns[f"_{arch}_mean"] = f"{arch}_mean"
        columns[f"_{arch}_std"] = f"{arch}_std"
    columns["_unseen_mean"] = "unseen_mean"
    columns.update({f"_{key}": key for key in COST_COLUMNS.values()})
    out = table[list(columns)].rename(columns=columns)
    accuracy = [c for c in out.columns if c.endswith(("_mean", "_std"))]
    out[accuracy] = out[accuracy].astype(float).round(CSV_DECIMALS)
    out["seeds"] = out["seeds"].astype("Int64")
    out["bytes"] = out["bytes"].astype(float).round().astype("Int64")
    out[["wall_s", "cpu_s", "peak_rss_mb"]] = out[["wall_s", "cpu_s", "peak_rss_mb"]].astype(float).round(1)
    return out


def caption(unseen_archs: list[str], code) -> str:
    """What the numbers are; `code(text)` marks a column name (backticks in markdown, <code> in HTML)."""
    return ("Test accuracy (%) of architectures trained from scratch on each set; final epoch, mean ± std over seeds "
            "(n = 1: a single seed, so no spread). " + code("unseen mean") + " averages "
            + ", ".join(ARCH_LABELS.get(a, a) for a in unseen_archs) + ". What the set cost to make, from its "
            "lineage (every phase that produced it once, shared phases such as the teacher and the prior in full): "
            + code("made in (s)") + " wall and " + code("CPU (s)") + " process-CPU seconds, " + code("peak RSS (MB)")
            + " the largest memory peak among its phases, " + code("stored (KB)") + " the set's bytes on disk.")


def html_page(table: pd.DataFrame, unseen_archs: list[str], missing: list[str],
              scores: list[dict[str, Any]] | None = None) -> str:
    """A standalone HTML page: the caption, the table (numbers right-aligned), the sets not evaluated yet, and
    DD-Ranking's scores."""
    body = (table.to_html(index=False, border=0, classes="report", na_rep="–") if not table.empty
            else "<p>(no evaluated sets)</p>")
    if scores:
        body += ("\n<h2>DD-Ranking scores</h2>\n<p>HLR = full data - set (hard labels), IOR = set - random subset "
                 "(the set's own protocol), in points; LRS / ARS in [0, 100], higher is better.</p>\n"
                 + pd.DataFrame.from_records(scores).to_html(index=False, border=0, classes="report", na_rep="–"))
    note = (f"<p>Not evaluated yet (run their pipelines): {html.escape(', '.join(missing))}</p>" if missing else "")
    style = ("body{font-family:system-ui,sans-serif;margin:2em}table.report{border-collapse:collapse}"
             "table.report th,table.report td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right;"
             "white-space:nowrap}table.report td:nth-child(-n+3),table.report th:nth-child(-n+3){text-align:left}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>diffdistill report</title>\n"
            f"<style>{style}</style>\n</head>\n<body>\n<h1>Cross-architecture evaluation</h1>\n"
            f"<p>{caption(unseen_archs, lambda s: f'<code>{html.escape(s)}</code>')}</p>\n{body}\n{note}\n"
            "</body>\n</html>\n")


def figure_image(fig: Any) -> Image.Image:
    """A matplotlib figure as an RGB PIL image (closes the figure); figures without a layout engine get tight_layout."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def set_labels(table: pd.DataFrame) -> list[str]:
    """One label per row of the bar plot: IPC, space, method, and "n = 1" for a single seed (no error bar)."""
    return [f"{'all data' if ipc == 'all' else f'IPC {ipc}'} · {space} · {method}" + (" (n = 1)" if seeds == 1 else "")
            for ipc, space, method, seeds in zip(table["IPC"], table["space"], table["method"], table["_seeds"],
                                                 strict=True)]


def accuracy_figure(table: pd.DataFrame, archs: list[str], unseen_archs: list[str]) -> Figure:
    """Horizontal bars faceted by architecture: one panel per architecture plus the unseen mean, one row per set
    (the set labels once, on the left), ±1 std over seeds as error bars (none for one seed), colour = space.
    The figure grows by ROW_INCHES per set, so 30 sets × 5 architectures stay legible."""
    panels = [(ARCH_LABELS.get(a, a), f"_{a}_mean", f"_{a}_std") for a in archs]
    panels.append(("unseen mean", "_unseen_mean", None))
    rows = max(len(table), 1)
    fig, axes = plt.subplots(1, len(panels), sharey=True, squeeze=False, layout="constrained", dpi=100,
                             figsize=(LABEL_INCHES + PANEL_INCHES * len(panels), 1.6 + ROW_INCHES * rows))
    axes = axes[0]
    fig.suptitle("Cross-architecture evaluation: test accuracy (%), final epoch, mean ± std over seeds; unseen mean = "
                 + ", ".join(ARCH_LABELS.get(a, a) for a in unseen_archs), fontsize=10)
    if table.empty:
        axes[0].text(0.5, 0.5, "no evaluated sets yet", ha="center", va="center", transform=axes[0].transAxes)
        return fig
    y = np.arange(len(table))
    palette = plt.get_cmap("tab10")
    spaces = [s for s in SPACE_ORDER if s in set(table["space"])] + sorted(set(table["space"]) - set(SPACE_ORDER))
    colour = {space: palette(i % 10) for i, space in enumerate(spaces)}
    colours = [colour[s] for s in table["space"]]
    # A line between IPC groups: the rows of one IPC compare with each other, not across.
    breaks = [i - 0.5 for i in range(1, len(table)) if table["IPC"].iloc[i] != table["IPC"].iloc[i - 1]]
    for ax, (title, mean, std) in zip(axes, panels, strict=True):
        xerr = table[std].to_numpy(dtype=float) if std else None
        ax.barh(y, table[mean].to_numpy(dtype=float), height=0.7, color=colours, xerr=xerr,
                error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"})
        for line in breaks:
            ax.axhline(line, color="0.6", lw=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 100)
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", color="0.9", lw=0.6)
        ax.set_axisbelow(True)
        ax.set_xlabel("test accuracy (%)", fontsize=8)
    axes[0].set_yticks(y, set_labels(table), fontsize=8)
    axes[0].set_ylim(len(table) - 0.5, -0.5)  # first row on top, as in the table
    fig.legend(handles=[Patch(color=colour[s], label=s) for s in spaces], loc="outside lower center",
               ncols=min(len(spaces), 4), fontsize=8, frameon=False)
    return fig


def bar_plot(table: pd.DataFrame, archs: list[str], unseen_archs: list[str]) -> Image.Image:
    return figure_image(accuracy_figure(table, archs, unseen_archs))


def build_report(params: dict[str, Any], costs: dict[str, dict[str, Any]],
                 *results: dict[str, Any]) -> tuple[str, str, pd.DataFrame, Image.Image, dict]:
    """Markdown + HTML + CSV table (every set under every protocol it was scored under, with what it cost to make:
    `costs` from `lineage_costs`), a bar plot (the common protocol) and DD-Ranking's scores over every set that has
    been evaluated."""
    from diffdistill.config import build
    from diffdistill.evaluation.config import ReportConfig

    config = build(ReportConfig, {k: v for k, v in params.items() if k in ("archs", "unseen_archs")}, "evaluate")
    archs, unseen = list(config.archs), list(config.unseen_archs)
    table = comparison_table(list(results), archs, costs)
    shown = visible(table)
    scores = ddranking_scores(list(results), params)
    missing = sorted(r["set"] for r in results if r.get("status") != "done")
    note = f"\n\nNot evaluated yet (run their pipelines): {', '.join(missing)}\n" if missing else "\n"
    markdown = (caption(unseen, lambda s: f"`{s}`") + "\n\n"
                + (shown.to_markdown(index=False, disable_numparse=True) if not shown.empty else "(no evaluated sets)")
                + note + ddranking_markdown(scores))
    csv = (numeric(table, archs) if not table.empty
           else pd.DataFrame(columns=["ipc", "space", "method", "protocol", "set"]))
    done = [r["set"] for r in results if r.get("status") == "done"]
    summary = {"sets": done, "distilled_sets": [name for name in done if name != "full"], "missing": missing,
               "ddranking": scores, "cost": {name: costs[name] for name in done if name in costs}}
    plot = bar_plot(common_protocol(table), archs, unseen)
    return markdown, html_page(shown, unseen, missing, scores), csv, plot, summary


def ddranking_scores(results: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """DD-Ranking's HLR / IOR / LRS / ARS per set, IPC and architecture (`diffdistill.ddranking`): hard labels =
    the common protocol, each set's own = its first `evaluate.paper_protocols` entry."""
    from diffdistill import ddranking
    from diffdistill.results import rows_of

    rows = [row for r in results if r.get("status") == "done" for row in rows_of(r, iterations=None, git_sha="")]
    return ddranking.score_rows(rows, hard_protocol=str(params.get("protocol", "dc")),
                                own_protocols=params.get("paper_protocols") or {})


def ddranking_markdown(scores: list[dict[str, Any]]) -> str:
    if not scores:
        return ("\nDD-Ranking scores: none yet (they need the full-data bound and the random subset of the same IPC "
                "under the same protocols).\n")
    from diffdistill.results import ddranking_table

    return ("\nDD-Ranking scores (Li et al. 2025; `diffdistill.ddranking`): HLR = full data - set with hard labels, "
            "IOR = set - random subset under the set's own protocol, in points; LRS / ARS in [0, 100], higher is "
            "better; from the means over seeds.\n\n"
            + ddranking_table([{k: str(v) for k, v in row.items()} for row in scores]) + "\n")


def rolling_snr(values: list[float], window: int) -> tuple[list[int], list[float]]:
    """(iterations, rolling mean / rolling std of `values` over `window` iterations); constant windows are skipped."""
    series = pd.Series(values, dtype="float64")
    window = max(2, min(int(window), len(series)))
    snr = series.rolling(window).mean() / series.rolling(window).std()
    snr = snr.replace([float("inf"), -float("inf")], float("nan")).dropna()
    return [int(i) for i in snr.index], [float(v) for v in snr]


def gradient_snr_plot(params: dict[str, Any], *records: dict[str, Any] | None) -> Image.Image:
    """Paper Fig. 7: SNR of ‖∂L/∂Z‖ over iterations with (`latent`, the reproduction variant) vs without
    (`no_residual`) the residual skip, one panel per (objective, IPC); dashed lines are linear fits. Sets not run yet are skipped."""
    window = int(params.get("snr_window", 10))
    panels: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        if record and record.get("grad_norm"):
            panels.setdefault((record["objective"], int(record["ipc"])), []).append(record)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.5 * max(1, len(panels)), 3.4), dpi=100,
                             squeeze=False)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no LD3M gradient records yet\n(run the ld3m pipeline: latent and no_residual)",
                        ha="center", va="center", fontsize=9)
        axes[0][0].set_axis_off()
    labels = {"latent": "with residual (the published code's x0 skip)", "no_residual": "without residual"}
    for ax, ((objective, ipc), group) in zip(axes[0], sorted(panels.items()), strict=False):
        for record in sorted(group, key=lambda r: r["space"] != "latent"):
            steps, snr = rolling_snr(record["grad_norm"], window)
            if not steps:
                continue
            mean_norm = float(np.mean(record["grad_norm"]))
            line, = ax.plot(steps, snr, lw=1, marker="." if len(steps) < 20 else None, label=f"{labels.get(record['space'], record['space'])}, "
                                                    f"mean ‖∂L/∂Z‖ {mean_norm:.3g}")
            if len(steps) > 2:
                fit = np.polyval(np.polyfit(steps, snr, 1), steps)
                ax.plot(steps, fit, ls="--", lw=1, color=line.get_color())
        ax.set_title(f"{objective.upper()}, IPC {ipc}", fontsize=9)
        ax.set_xlabel("distillation iteration")
        shown = max(2, min(window, max(len(r["grad_norm"]) for r in group)))  # as `rolling_snr` clips it
        ax.set_ylabel(f"SNR of ‖∂L/∂Z‖ (window {shown})")
        ax.legend(fontsize=7)
    return figure_image(fig)
