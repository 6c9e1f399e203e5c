"""Nodes of the `evaluate` pipeline (the training loop is imported inside the nodes: building the graph stays
light)."""

from __future__ import annotations

import logging
import statistics
from typing import TYPE_CHECKING, Any

from diffdistill.config import build
from diffdistill.data.bundle import TensorBundle
from diffdistill.pipelines.metrics import as_mlflow_metrics
from diffdistill.progress import Progress
from diffdistill.workdir import WorkDir, split_fingerprint

if TYPE_CHECKING:
    from diffdistill.evaluation.config import EvaluateConfig

logger = logging.getLogger(__name__)


def summarise_rows(rows: list[dict[str, Any]], archs: list[str], unseen: list[str]) -> dict[str, Any]:
    """Mean ± std (population of seeds, in %) per architecture, and the mean over the unseen architectures."""
    summary: dict[str, Any] = {}
    for arch in archs:
        accs = [100.0 * r["test_accuracy"] for r in rows if r["arch"] == arch]
        if accs:
            summary[arch] = {"mean": statistics.fmean(accs), "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                             "n": len(accs)}
    unseen_means = [summary[a]["mean"] for a in unseen if a in summary]
    if unseen_means:
        summary["unseen_mean"] = {"mean": statistics.fmean(unseen_means), "archs": [a for a in unseen if a in summary]}
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """One log line of a set's test accuracy: `convnet 75.8 ± 0.7, alexnet 48.4 ± 2.4; unseen mean 43.4 (%)`."""
    archs = ", ".join(f"{arch} {stats['mean']:.1f} ± {stats['std']:.1f}" for arch, stats in summary.items()
                      if arch != "unseen_mean")
    unseen = f"; unseen mean {summary['unseen_mean']['mean']:.1f}" if "unseen_mean" in summary else ""
    return f"test accuracy {archs}{unseen} (%)"


def _protocol(config: EvaluateConfig, train_set: TensorBundle, overrides: dict[str, Any], path: str):
    from diffdistill.evaluation import channel_stats, get_protocol

    # Normalise every set with the real train split's statistics, so distilled and real images share one scale.
    mean, std = channel_stats(train_set["images"])
    return get_protocol(config.protocol, path=path, **{**config.protocol_overrides, **overrides,
                                                       "mean": mean.tolist(), "std": std.tolist()})


def evaluate_set(distilled_set: TensorBundle | None, train_set: TensorBundle, test_set: TensorBundle,
                 teacher_model: TensorBundle, params: dict[str, Any], device: str,
                 *, set_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train every architecture × seed from scratch on the set; final-epoch test accuracy of each."""
    from diffdistill.evaluation.config import EvaluateConfig
    from diffdistill.evaluation.saved import check_classifier_fits, classifier_from_bundle

    if distilled_set is None:  # expected until its phase has run: the report names it (README "Phases")
        logger.info("%s: no saved version yet, skipped (run the pipeline that produces it)", set_name)
        return {"set": set_name, "status": "missing", "rows": [], "summary": {}}, {}
    config = build(EvaluateConfig, params, "evaluate")
    protocol = _protocol(config, train_set, {}, "evaluate.protocol_overrides")
    if protocol.loss == "soft_label":
        check_classifier_fits(teacher_model, train_set, "teacher_model", "train_set")
    teacher = classifier_from_bundle(teacher_model, device) if protocol.loss == "soft_label" else None
    rows = _train_rows(set_name, distilled_set, test_set, config.archs, config.seeds, protocol, device,
                       teacher=teacher, allow_unbalanced=False)
    summary = summarise_rows(rows, config.archs, config.unseen_archs)
    logger.info("%s: %s", set_name, summary_line(summary))
    results = {"set": set_name, "status": "done", "meta": _set_meta(distilled_set), "protocol": protocol.to_dict(),
               "rows": rows, "summary": summary}
    return results, _summary_metrics(summary)


def evaluate_full_data(train_set: TensorBundle, test_set: TensorBundle, params: dict[str, Any],
                       device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The upper bound: the same architectures trained on the whole real train split."""
    from diffdistill.evaluation.config import EvaluateConfig

    config = build(EvaluateConfig, params, "evaluate")
    protocol = _protocol(config, train_set, config.full_data.protocol_overrides,
                         "evaluate.full_data.protocol_overrides")
    rows = _train_rows("full", train_set, test_set, config.archs, config.full_data.seeds, protocol, device,
                       teacher=None, allow_unbalanced=True)
    summary = summarise_rows(rows, config.archs, config.unseen_archs)
    logger.info("full: %s", summary_line(summary))
    meta = {"method": "full", "ipc": None, "num_images": len(train_set), "class_names": train_set.class_names}
    return ({"set": "full", "status": "done", "meta": meta, "protocol": protocol.to_dict(), "rows": rows,
             "summary": summary}, _summary_metrics(summary))


def _train_rows(set_name: str, train: TensorBundle, test: TensorBundle, archs: list[str], seeds: list[int],
                protocol, device: str, *, teacher, allow_unbalanced: bool) -> list[dict[str, Any]]:
    """One from-scratch training per (arch, seed); finished rows survive a killed run and are reused."""
    from diffdistill.evaluation import train_and_evaluate

    done = WorkDir.keyed("evaluate", set_name, protocol.to_dict(), split_fingerprint(train),
                          split_fingerprint(test), device)
    rows = []
    with Progress(f"evaluate {set_name}", len(archs) * len(seeds), unit="runs") as bar:
        for arch in archs:
            for seed in seeds:
                key = f"{arch}-seed{int(seed)}"
                row = done.get_json(key)
                if row is None:
                    result = train_and_evaluate(train, test, arch=arch, protocol=protocol, seed=int(seed),
                                                device=device, teacher=teacher, allow_unbalanced=allow_unbalanced)
                    row = {"set": set_name, "arch": arch, "seed": int(seed), "test_accuracy": result["test_accuracy"],
                           "epochs": result["epochs"], "protocol": result["protocol"]}
                    done.put_json(key, row)
                    bar.advance(last=f"{arch} seed {int(seed)} {100 * row['test_accuracy']:.1f}%")
                else:
                    bar.skip(1)
                rows.append(row)
    done.clear()
    return rows


def _set_meta(bundle: TensorBundle) -> dict[str, Any]:
    keep = ("method", "ipc", "objective", "space", "variant", "num_classes", "class_names", "seed")
    return {k: bundle.meta[k] for k in keep if k in bundle.meta}


def _summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for arch, stats in summary.items():
        values[f"{arch}_mean"] = stats["mean"]
        if "std" in stats:
            values[f"{arch}_std"] = stats["std"]
    return as_mlflow_metrics(values)
