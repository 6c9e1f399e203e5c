"""Nodes of the `report` pipeline: the LD3M paper's table layout (rows: space × method, columns: architectures)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

ARCH_LABELS = {"convnet": "ConvNet", "alexnet": "AlexNet", "vgg11": "VGG11", "resnet18": "ResNet18", "vit": "ViT"}


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


def comparison_table(results: list[dict[str, Any]], archs: list[str]) -> pd.DataFrame:
    """One row per evaluated set: mean ± std per architecture and the mean over unseen architectures."""
    records = []
    for result in results:
        if result.get("status") != "done":
            continue
        meta = result.get("meta", {})
        space, method = row_label(meta)
        row: dict[str, Any] = {"IPC": meta.get("ipc") if meta.get("ipc") is not None else "all",
                               "space": space, "method": method, "set": result["set"]}
        for arch in archs:
            stats = result["summary"].get(arch)
            row[ARCH_LABELS.get(arch, arch)] = f"{stats['mean']:.1f} ± {stats['std']:.1f}" if stats else "–"
            row[f"_{arch}_mean"] = stats["mean"] if stats else float("nan")
            row[f"_{arch}_std"] = stats["std"] if stats else float("nan")
        unseen = result["summary"].get("unseen_mean")
        row["unseen mean"] = f"{unseen['mean']:.1f}" if unseen else "–"
        row["_unseen_mean"] = unseen["mean"] if unseen else float("nan")
        records.append(row)
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    order = {"real": 0, "pixel": 1, "decoder only": 2, "condition only": 3, "no residual": 4,
             "latent (LD3M, Eq. 12 as printed)": 5, "latent (LD3M)": 6, "noise (D3HR)": 7}
    table["_ipc_order"] = table["IPC"].map(lambda v: 10**9 if v == "all" else int(v))
    table["_space_order"] = table["space"].map(lambda s: order.get(s, 8))
    return table.sort_values(["_ipc_order", "_space_order", "method"]).reset_index(drop=True)


def visible(table: pd.DataFrame) -> pd.DataFrame:
    return table[[c for c in table.columns if not c.startswith("_") and c != "set"]] if not table.empty else table


def figure_image(fig: Any) -> Image.Image:
    """A matplotlib figure as an RGB PIL image (closes the figure)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def numeric(table: pd.DataFrame, archs: list[str]) -> pd.DataFrame:
    """The machine-readable table: numbers, one mean and one std column per architecture."""
    columns = {"IPC": "ipc", "space": "space", "method": "method", "set": "set"}
    for arch in archs:
        columns[f"_{arch}_mean"] = f"{arch}_mean"
        columns[f"_{arch}_std"] = f"{arch}_std"
    columns["_unseen_mean"] = "unseen_mean"
    return table[list(columns)].rename(columns=columns)


def bar_plot(table: pd.DataFrame, archs: list[str]) -> Image.Image:
    """Grouped bars (one group per set, one bar per architecture) with ±1 std error bars."""
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * max(len(table), 1) * len(archs) / 3), 4), dpi=100)
    if not table.empty:
        width = 0.8 / len(archs)
        for i, arch in enumerate(archs):
            xs = [j + (i - (len(archs) - 1) / 2) * width for j in range(len(table))]
            ax.bar(xs, table[f"_{arch}_mean"], width, yerr=table[f"_{arch}_std"], capsize=2,
                   label=ARCH_LABELS.get(arch, arch))
        ax.set_xticks(range(len(table)))
        ax.set_xticklabels([f"{r.method}\n{r.space}\nIPC {r.IPC}" for r in table.itertuples()], fontsize=7)
        ax.legend(fontsize=7, ncol=len(archs))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Cross-architecture evaluation (mean ± std over seeds, final epoch)", fontsize=9)
    return figure_image(fig)


def build_report(params: dict[str, Any], *results: dict[str, Any]) -> tuple[str, str, str, Image.Image, dict]:
    """Markdown + HTML + CSV table and a bar plot over every set that has been evaluated."""
    from diffdistill.config import build
    from diffdistill.evaluation.config import ReportConfig

    config = build(ReportConfig, {k: v for k, v in params.items() if k in ("archs", "unseen_archs")}, "evaluate")
    archs = list(config.archs)
    table = comparison_table(list(results), archs)
    shown = visible(table)
    missing = sorted(r["set"] for r in results if r.get("status") != "done")
    note = f"\n\nNot evaluated yet (run their pipelines): {', '.join(missing)}\n" if missing else "\n"
    header = ("Test accuracy (%) of architectures trained from scratch on each set; final epoch, mean ± std over "
              "seeds. `unseen mean` averages " + ", ".join(ARCH_LABELS.get(a, a) for a in config.unseen_archs)
              + ".\n\n")
    markdown = header + (shown.to_markdown(index=False) if not shown.empty else "(no evaluated sets)") + note
    html = ("<html><head><meta charset='utf-8'><title>diffdistill report</title></head><body>"
            f"<p>{header.strip()}</p>" + shown.to_html(index=False, border=0) + f"<p>{note.strip()}</p></body></html>")
    csv = numeric(table, archs).to_csv(index=False) if not table.empty else ""
    done = [r["set"] for r in results if r.get("status") == "done"]
    summary = {"sets": done, "distilled_sets": [name for name in done if name != "full"], "missing": missing}
    return markdown, html, csv, bar_plot(table, archs), summary


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
    import numpy as np

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
        ax.set_ylabel(f"SNR of ‖∂L/∂Z‖ (window {window})")
        ax.legend(fontsize=7)
    return figure_image(fig)
