"""Nodes of the `evaluate` pipeline (the training loop is imported inside the nodes: building the graph stays
light)."""

from __future__ import annotations

import dataclasses
import logging
import statistics
from typing import TYPE_CHECKING, Any

from diffdistill.config import ConfigError, build
from diffdistill.data.bundle import TensorBundle
from diffdistill.pipelines.metrics import as_mlflow_metrics
from diffdistill.progress import Progress
from diffdistill.workdir import WorkDir, split_fingerprint

if TYPE_CHECKING:
    from diffdistill.evaluation import ProtocolConfig
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


def method_of(set_name: str) -> str:
    """The method of a set namespace, the key of `evaluate.paper_protocols`: `ld3m_dm_latent_ipc10` -> `ld3m_dm_latent`."""
    return set_name.rsplit("_ipc", 1)[0]


def _protocols(config: EvaluateConfig, train_set: TensorBundle, method: str, overrides: dict[str, Any],
               path: str) -> list[ProtocolConfig]:
    """The common protocol (`evaluate.protocol` + `protocol_overrides` + `overrides`), then the method's paper
    protocols (each + its `paper_protocol_overrides` + `overrides`)."""
    from diffdistill.evaluation import channel_stats, get_protocol

    if config.paper_protocols and method not in config.paper_protocols:
        logger.warning("evaluate.paper_protocols has no entry for %r: its sets are scored under the common protocol "
                       "%r only; add `%s: <protocol>` (or `%s: []`)", method, config.protocol, method, method)
    # Normalise every set with the real train split's statistics, so distilled and real images share one scale.
    mean, std = channel_stats(train_set["images"])
    stats = {"mean": mean.tolist(), "std": std.tolist()}
    protocols = [get_protocol(config.protocol, path=path, **{**config.protocol_overrides, **overrides, **stats})]
    for name in config.paper_protocols_of(method):
        paper = config.paper_protocol_overrides.get(name, {})
        protocols.append(get_protocol(name, path=f"evaluate.paper_protocol_overrides.{name}",
                                      **{**paper, **overrides, **stats}))
    return protocols


def _results(set_name: str, meta: dict[str, Any], train: TensorBundle, test: TensorBundle,
             protocols: list[ProtocolConfig], config: EvaluateConfig, seeds: list[int], device: str, *,
             teacher_model: TensorBundle | None, train_set: TensorBundle,
             allow_unbalanced: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rows and summary per protocol. The record's top level is the common protocol's (what a one-protocol reader
    sees); `paper_protocols` holds each paper protocol's, keyed by its name. Every row names its protocol.
    `evaluate.arch_budget` sets an architecture's seeds and epochs, and whether the paper protocols train it."""
    from diffdistill.evaluation import get_protocol

    teacher = None
    soft = [p.name for p in protocols if p.loss == "soft_label"]
    if soft and teacher_model is None:
        raise ConfigError(f"the full-data bound trains with hard labels (its node has no teacher), but {soft} train "
                          "on soft labels; list hard-label protocols in evaluate.paper_protocols.full (and a "
                          "hard-label evaluate.protocol)")
    if soft:
        from diffdistill.evaluation.saved import check_classifier_fits, classifier_from_bundle

        check_classifier_fits(teacher_model, train_set, "teacher_model", "train_set")
        teacher = classifier_from_bundle(teacher_model, device)
    entries, metrics = {}, {}
    for protocol in protocols:
        budgets = {arch: config.budget(arch) for arch in config.archs}
        runs = [(arch, list(b.seeds or seeds), get_protocol(protocol, epochs=b.epochs or protocol.epochs))
                for arch, b in budgets.items() if protocol is protocols[0] or not b.common_only]
        rows = _train_rows(set_name, train, test, runs, protocol, device,
                           teacher=teacher if protocol.loss == "soft_label" else None,
                           allow_unbalanced=allow_unbalanced)
        summary = summarise_rows(rows, config.archs, config.unseen_archs)
        logger.info("%s (%s): %s", set_name, protocol.name, summary_line(summary))
        entries[protocol.name] = {"protocol": protocol.to_dict(), "rows": rows, "summary": summary}
        prefix = "" if protocol is protocols[0] else f"{protocol.name}."
        metrics.update(_summary_metrics(summary, prefix))
    common = entries.pop(protocols[0].name)
    return {"set": set_name, "status": "done", "meta": meta, "split": split_name(test), **common,
            "paper_protocols": entries}, metrics


def split_name(test: TensorBundle) -> str:
    """Which test split a number was measured on, e.g. `digits/test (450)`, `imagenet_subset:imagenette/val (500)`:
    the papers' ImageNet subsets and fast.ai's imagenette2 tree are different test sets of the same classes."""
    meta = test.meta
    subset = f":{meta['subset']}" if meta.get("subset") else ""
    return f"{meta.get('source', '?')}{subset}/{meta.get('split', '?')} ({len(test)})"


def evaluate_set(distilled_set: TensorBundle | None, train_set: TensorBundle, test_set: TensorBundle,
                 teacher_model: TensorBundle, params: dict[str, Any], device: str,
                 *, set_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train every architecture × seed from scratch on the set, under the common protocol and under its paper's;
    final-epoch test accuracy of each."""
    from diffdistill.evaluation.config import EvaluateConfig

    if distilled_set is None:  # expected until its phase has run: the report names it (README "Phases")
        logger.info("%s: no saved version yet, skipped (run the pipeline that produces it)", set_name)
        return {"set": set_name, "status": "missing", "rows": [], "summary": {}, "paper_protocols": {}}, {}
    config = build(EvaluateConfig, params, "evaluate")
    protocols = _protocols(config, train_set, method_of(set_name), {}, "evaluate.protocol_overrides")
    return _results(set_name, _set_meta(distilled_set), distilled_set, test_set, protocols, config, config.seeds,
                    device, teacher_model=teacher_model, train_set=train_set, allow_unbalanced=False)


def evaluate_full_data(train_set: TensorBundle, test_set: TensorBundle, params: dict[str, Any],
                       device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The upper bound: the same architectures trained on the whole real train split, under the common protocol
    and the protocols `evaluate.paper_protocols.full` lists (hard labels: a soft-label protocol's teacher was
    trained on this very split)."""
    from diffdistill.evaluation.config import EvaluateConfig

    # the bound is sized by `full_data` alone, never by the sets' arch_budget
    config = dataclasses.replace(build(EvaluateConfig, params, "evaluate"), arch_budget={})
    if config.full_data.archs is not None:  # the bound on a subset of the architectures
        archs = list(config.full_data.archs)
        config = dataclasses.replace(config, archs=archs, unseen_archs=[a for a in config.unseen_archs if a in archs])
    protocols = _protocols(config, train_set, "full", config.full_data.protocol_overrides,
                           "evaluate.full_data.protocol_overrides")
    meta = {"method": "full", "ipc": None, "num_images": len(train_set), "class_names": train_set.class_names}
    return _results("full", meta, train_set, test_set, protocols, config, config.full_data.seeds, device,
                    teacher_model=None, train_set=train_set, allow_unbalanced=True)


def _train_rows(set_name: str, train: TensorBundle, test: TensorBundle,
                runs: list[tuple[str, list[int], ProtocolConfig]], protocol: ProtocolConfig, device: str, *,
                teacher, allow_unbalanced: bool) -> list[dict[str, Any]]:
    """One from-scratch training per (arch, seed) of `runs` (arch, its seeds, `protocol` at its epochs); finished
    rows survive a killed run and are reused."""
    from diffdistill.evaluation import train_and_evaluate

    done = WorkDir.keyed("evaluate", set_name, protocol.to_dict(), split_fingerprint(train),
                          split_fingerprint(test), device)
    rows = []
    with Progress(f"evaluate {set_name} ({protocol.name})", sum(len(s) for _, s, _ in runs), unit="runs") as bar:
        for arch, seeds, arch_protocol in runs:
            for seed in seeds:
                # the protocol's own epochs keep the key of a run without a budget (its rows are reused)
                budget = "" if arch_protocol.epochs == protocol.epochs else f"-epochs{arch_protocol.epochs}"
                key = f"{arch}{budget}-seed{int(seed)}"
                row = done.get_json(key)
                if row is None:
                    result = train_and_evaluate(train, test, arch=arch, protocol=arch_protocol, seed=int(seed),
                                                device=device, teacher=teacher, allow_unbalanced=allow_unbalanced)
                    row = {"set": set_name, "arch": arch, "seed": int(seed), "test_accuracy": result["test_accuracy"],
                           "epochs": result["epochs"], "protocol": result["protocol"], "net": result["net"],
                           "lr": result["lr_base"], "lr_source": result["lr_source"],
                           "batch_size": result["batch_size"]}
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


def _summary_metrics(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    values = {}
    for arch, stats in summary.items():
        values[f"{prefix}{arch}_mean"] = stats["mean"]
        if "std" in stats:
            values[f"{prefix}{arch}_std"] = stats["std"]
    return as_mlflow_metrics(values)
