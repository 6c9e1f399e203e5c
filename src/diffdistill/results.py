"""Committed result tables: `results/<dataset>.csv` from a project's evaluation artifacts, and the README tables
generated from those CSVs (never typed).

    python -m diffdistill.results collect --dataset digits [--project .]   # data/ -> results/digits.csv (rows of
                                                                            # sets not measured here are kept;
                                                                            # --dataset cifar10 reads data/cifar10)
    python -m diffdistill.results ddranking --dataset digits                # results/digits.csv -> DD-Ranking's
                                                                            # scores, results/digits_ddranking.csv
    python -m diffdistill.results cost --project . --out results/<name>_cost.csv   # what each distilled set cost
                                                                            # (from the project's lineage records)
    python -m diffdistill.results readme                                    # results/*.csv -> README.md blocks

One CSV row per set × IPC × architecture × protocol (`set` without its `_ipc<N>` suffix; `split` the test split it
was measured on, `<source>[:<subset>]/<split> (<images>)`), plus rows with
`arch` = `unseen_mean`: per training seed the mean over the unseen architectures, then mean ± std over seeds.
`mean` / `std` in % (std over seeds as `np.std`, the references' convention; 0 with n = 1), `epochs` the
evaluation's training epochs (per architecture: `evaluate.arch_budget` may train the slow ones shorter; the
`unseen_mean` row carries the smallest of its architectures'), `iterations` the distillation iterations (LD3M;
empty for sets that do not iterate),
`published` the paper's value where one exists for this dataset and protocol (empty otherwise).
`<dataset>_ddranking.csv` holds DD-Ranking's HLR / IOR / LRS / ARS per set, IPC and architecture, computed from
`<dataset>.csv` (`diffdistill.ddranking`). The README holds one block per CSV between `<!-- results:<stem> -->` and
`<!-- /results:<stem> -->`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from diffdistill import ddranking
from diffdistill.published import published_means

HEADER = ["set", "ipc", "arch", "protocol", "split", "mean", "std", "n", "epochs", "iterations", "published",
          "git_sha"]
ARCHS = ["convnet", "alexnet", "vgg11", "resnet18", "vit"]
UNSEEN = ["alexnet", "vgg11", "resnet18", "vit"]
ARCH_LABELS = {"convnet": "ConvNet", "alexnet": "AlexNet", "vgg11": "VGG11", "resnet18": "ResNet18", "vit": "ViT",
               "unseen_mean": "unseen mean"}


def _latest(folder: Path) -> Path | None:
    """The newest complete version of a versioned artifact folder (`<name>/<timestamp>/<name>`)."""
    versions = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() \
        else []
    for version in reversed(versions):
        path = version / folder.name
        if path.exists():
            return path
    return None


def set_iterations(project: Path, set_name: str, data_root: str = "data") -> int | None:
    """Distillation iterations recorded in a distilled set's meta sidecar (None for sets that do not iterate)."""
    path = _latest(project / data_root / "07_model_output" / set_name / "distilled_set.safetensors")
    sidecar = None if path is None else path.with_name(path.name + ".json")
    if sidecar is None or not sidecar.is_file():
        return None
    meta = json.loads(sidecar.read_text()).get("meta", {})
    if meta.get("method") in ("ld3m", "dc", "dm", "mtt"):
        return int(meta["iterations"])
    return None


def rows_of(result: dict[str, Any], *, iterations: int | None, git_sha: str,
            published: dict[tuple[str, int | None, str, str], float] | None = None) -> list[dict[str, Any]]:
    """CSV rows of one `<set>.eval_results` record: the common protocol's (its top level), then each paper
    protocol's (`paper_protocols`), never pooled across protocols."""
    out = []
    for entry in [result, *result.get("paper_protocols", {}).values()]:
        if entry.get("rows"):
            out += _protocol_rows(result, entry["rows"], iterations=iterations, git_sha=git_sha, published=published)
    return out


def _protocol_rows(result: dict[str, Any], records: list[dict[str, Any]], *, iterations: int | None, git_sha: str,
                   published: dict[tuple[str, int | None, str, str], float] | None) -> list[dict[str, Any]]:
    name = result["set"]
    ipc = result.get("meta", {}).get("ipc")
    base = name.rsplit("_ipc", 1)[0] if ipc is not None else name
    by_arch: dict[str, dict[int, float]] = {}
    protocols = {row["protocol"] for row in records}
    if len(protocols) != 1:
        raise ValueError(f"{name}: one entry of eval_results mixes protocols {sorted(protocols)}")
    (protocol,) = protocols
    epochs_of: dict[str, int] = {}  # per architecture: `evaluate.arch_budget` may train the slow ones shorter
    for row in records:
        by_arch.setdefault(row["arch"], {})[int(row["seed"])] = 100.0 * float(row["test_accuracy"])
        epochs_of[row["arch"]] = int(row["epochs"])
    out = []

    def emit(arch: str, values: list[float], epochs: int) -> None:
        key = (base, ipc, arch, protocol)
        out.append({"set": base, "ipc": "" if ipc is None else int(ipc), "arch": arch, "protocol": protocol,
                    "split": result.get("split", ""), "mean": round(statistics.fmean(values), 2),
                    "std": round(statistics.pstdev(values), 2) if len(values) > 1 else 0.0, "n": len(values),
                    "epochs": epochs, "iterations": "" if iterations is None else iterations,
                    "published": "" if not published or key not in published else published[key], "git_sha": git_sha})

    for arch in [a for a in ARCHS if a in by_arch] + sorted(set(by_arch) - set(ARCHS)):
        emit(arch, [by_arch[arch][s] for s in sorted(by_arch[arch])], epochs_of[arch])
    seeds = sorted(set.intersection(*(set(by_arch[a]) for a in UNSEEN))) if all(a in by_arch for a in UNSEEN) else []
    if seeds:
        emit("unseen_mean", [statistics.fmean(by_arch[a][s] for a in UNSEEN) for s in seeds],
             min(epochs_of[a] for a in UNSEEN))
    return out


def git_sha(project: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=project, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def lineage_sha(project: Path, version: str) -> str | None:
    """The commit (12 hex, `+dirty` if the tree had changes) of the run that saved `version`, from its lineage record."""
    record = project / "data/lineage" / f"{version}.json"
    if not record.is_file():
        return None
    data = json.loads(record.read_text())
    sha = str(data.get("git_sha") or "")[:12]
    return sha + ("+dirty" if data.get("git_dirty") and sha else "") or None


def data_root_of(dataset: str) -> str:
    """The artifact folder of a dataset's Kedro environment (its conf/<env>/globals.yml `data_root`): `data` for
    the digits environments, `data/<dataset>` for each other dataset."""
    return "data" if dataset == "digits" else f"data/{dataset}"


def collect(project: Path, sets: Iterable[str] | None = None, data_root: str = "data",
            published: dict[tuple[str, int | None, str, str], float] | None = None) -> list[dict[str, Any]]:
    """Rows of every evaluated set (latest version of each `<set>.eval_results`) under `project`/`data_root`,
    with `published` ((set, ipc, arch, protocol) -> %, `diffdistill.published`) beside the rows it keys."""
    folder = project / data_root / "08_reporting/evaluation"
    sha = git_sha(project)
    rows = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        name = entry.name.removesuffix(".json")
        if sets is not None and name not in sets:
            continue
        path = _latest(entry) if entry.is_dir() else entry
        if path is None:
            continue
        result = json.loads(path.read_text())
        if result.get("status") != "done" or not result.get("rows"):
            continue
        rows.extend(rows_of(result, iterations=set_iterations(project, name, data_root),
                            git_sha=lineage_sha(project, path.parent.name) or sha, published=published))
    return sort_rows(rows)


def _set_order(name: str) -> tuple[int, str]:
    order = ["full", "random", "herding", "d3hr", "d3hr_factorised"]
    return (order.index(name), "") if name in order else (len(order), name)


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    arch_order = {a: i for i, a in enumerate([*ARCHS, "unseen_mean"])}
    return sorted(rows, key=lambda r: (r["ipc"] == "", r["ipc"] if r["ipc"] != "" else 0, _set_order(r["set"]),
                                       r["protocol"], arch_order.get(r["arch"], 99), r["arch"]))


def keep_unmeasured(old: list[dict[str, str]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of an existing table whose (set, ipc, protocol) this project did not measure (they keep their git_sha)."""
    measured = {(str(r["set"]), str(r["ipc"]), str(r["protocol"])) for r in new}
    kept = [r for r in old if (r["set"], r["ipc"], r["protocol"]) not in measured]
    for row in kept:
        for key in ("ipc", "n", "epochs"):
            row[key] = int(row[key]) if row[key] != "" else ""
        row["mean"], row["std"] = float(row["mean"]), float(row["std"])
    return kept


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    _write_rows(rows, HEADER, path)


def _write_rows(rows: list[dict[str, Any]], header: list[str], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buffer.getvalue())
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    return _read_rows(path, HEADER)


def _cell(row: dict[str, str] | None) -> str:
    if row is None:
        return "–"
    text = f"{float(row['mean']):.1f}"
    if int(row["n"]) > 1:
        text += f" ± {float(row['std']):.1f}"
    if row.get("published"):
        text += f" ({float(row['published']):.1f})"
    return text


def markdown_table(rows: list[dict[str, str]]) -> str:
    """One table per protocol, so that no comparison mixes protocols: the protocol that scores the most sets (the
    common one) first, then each paper protocol's (random, herding and the bound under it, then the sets whose paper
    it is). One line per (set, IPC); columns the architectures and the unseen mean; n = 1 shows no ±."""
    by_protocol: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_protocol.setdefault(row["protocol"], []).append(row)
    coverage = {p: len({(r["set"], r["ipc"]) for r in block}) for p, block in by_protocol.items()}
    order = sorted(by_protocol, key=lambda p: (-coverage[p], p))
    if len(order) == 1:
        return _protocol_table(rows)
    return "\n\n".join(f"**Protocol `{p}`** ({coverage[p]} set{'s' * (coverage[p] != 1)})\n\n{_protocol_table(by_protocol[p])}"
                       for p in order)


def _sets(count: int) -> str:
    return f"{count} set" + ("s" if count != 1 else "")


def _protocol_table(rows: list[dict[str, str]]) -> str:
    measured = {row["arch"] for row in rows}  # a ConvNet-only calibration has no empty AlexNet ... columns
    columns = [c for c in [*ARCHS, "unseen_mean"] if c in measured] + sorted(measured - {*ARCHS, "unseen_mean"})
    groups: dict[tuple[str, str, str], dict[str, dict[str, str]]] = {}
    meta: dict[tuple[str, str, str], tuple[set[str], set[str], set[str]]] = {}
    for row in rows:
        key = (row["set"], row["ipc"], row["protocol"])
        groups.setdefault(key, {})[row["arch"]] = row
        n, epochs, its = meta.setdefault(key, (set(), set(), set()))
        n.add(row["n"])
        epochs.add(row["epochs"])
        if row["iterations"]:
            its.add(row["iterations"])
    lines = ["| set | IPC | protocol | epochs | seeds | iterations | "
             + " | ".join(ARCH_LABELS.get(c, c) for c in columns) + " |",
             "|" + "---|" * (6 + len(columns))]
    for key, cells in groups.items():
        name, ipc, protocol = key
        n, epochs, its = meta[key]
        lines.append(f"| {name} | {ipc or 'all'} | {protocol} | {'/'.join(sorted(epochs))} | {'/'.join(sorted(n))} | "
                     f"{'/'.join(sorted(its)) or '–'} | " + " | ".join(_cell(cells.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def ddranking_table(rows: list[dict[str, str]]) -> str:
    """One line per (set, IPC): HLR, IOR, LRS (and ARS, when any set has it) on ConvNet and on the unseen mean."""
    columns = ["convnet", "unseen_mean"]
    scores = ("hlr", "ior", "lrs", "ars") if any(row["ars"] != "" for row in rows) else ("hlr", "ior", "lrs")
    groups: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["ipc"]), {})[row["arch"]] = row
    lines = ["| set | IPC | hard / own protocol | " + " | ".join(
        f"{ARCH_LABELS[c]} {k.upper()}" for c in columns for k in scores) + " |",
             "|" + "---|" * (3 + len(scores) * len(columns))]
    for (name, ipc), cells in groups.items():
        first = next(iter(cells.values()))
        values = []
        for column in columns:
            row = cells.get(column)
            values += ["–"] * len(scores) if row is None else [
                f"{float(row[k]):.1f}" if row[k] != "" else "–" for k in scores]
        lines.append(f"| {name} | {ipc} | {first['hard_protocol']} / {first['any_protocol']} | "
                     + " | ".join(values) + " |")
    return "\n".join(lines)


def write_ddranking(results: Path, evaluate_conf: Path) -> Path:
    """`results/<dataset>_ddranking.csv` from `results/<dataset>.csv`: the hard-label protocol is the common one
    (`evaluate.protocol`), each set's own is its first `evaluate.paper_protocols` entry."""
    import yaml

    conf = yaml.safe_load(evaluate_conf.read_text())["evaluate"]
    scores = ddranking.score_rows(read_csv(results), hard_protocol=conf["protocol"],
                                  own_protocols=conf.get("paper_protocols") or {})
    out = results.with_name(f"{results.stem}_ddranking.csv")
    _write_rows(scores, ddranking.HEADER, out)
    return out


def read_ddranking_csv(path: Path) -> list[dict[str, str]]:
    return _read_rows(path, ddranking.HEADER)


COST_HEADER = ["set", "wall_s", "cpu_s", "peak_rss_mb", "cuda_peak_mb", "set_bytes", "upstream_bytes", "nodes",
               "nodes_without_cost"]


def cost_rows(project: Path) -> list[dict[str, Any]]:
    """What each distilled set of a project cost to make (`diffdistill.lineage.distilled_set_costs`): every node of
    its lineage once, so shared upstream phases (teacher, prior, latents) count in full for every set."""
    from diffdistill.lineage import distilled_set_costs, load_records

    return [{"set": name, "wall_s": cost["wall_s"], "cpu_s": cost["cpu_s"], "peak_rss_mb": cost["peak_rss_mb"],
             "cuda_peak_mb": cost["cuda_peak_mb"] or "", "set_bytes": cost["bytes"] if cost["bytes"] is not None else "",
             "upstream_bytes": cost["upstream_bytes"], "nodes": cost["nodes"],
             "nodes_without_cost": cost["nodes_without_cost"]}
            for name, cost in distilled_set_costs(load_records(project)).items()]


def cost_table(rows: list[dict[str, str]]) -> str:
    lines = ["| set | wall s | CPU s | peak RSS MB | CUDA peak MB | set KB | made from MB | nodes (without cost) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        kb = f"{int(row['set_bytes']) / 1024:.1f}" if row["set_bytes"] != "" else "–"
        lines.append(f"| {row['set']} | {float(row['wall_s']):.1f} | {float(row['cpu_s']):.1f} | "
                     f"{row['peak_rss_mb'] or '–'} | {row['cuda_peak_mb'] or '–'} | {kb} | "
                     f"{int(row['upstream_bytes']) / 2**20:.1f} | {row['nodes']} ({row['nodes_without_cost']}) |")
    return "\n".join(lines)


def _read_rows(path: Path, header: list[str]) -> list[dict[str, str]]:
    with path.open() as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != header:
            raise ValueError(f"{path} has header {reader.fieldnames}; expected {header}")
        return list(reader)


def render_readme(readme: Path, results_dir: Path) -> bool:
    """Rewrite every `<!-- results:<name> -->` block of the README from `results/<name>.csv`; True if changed."""
    text = readme.read_text()
    new = text
    for path in sorted(results_dir.glob("*.csv")):
        start, end = f"<!-- results:{path.stem} -->", f"<!-- /results:{path.stem} -->"
        if start not in new or end not in new:
            continue
        head, rest = new.split(start, 1)
        _, tail = rest.split(end, 1)
        if path.stem.endswith("_ddranking"):
            table = ddranking_table(read_ddranking_csv(path))
        elif path.stem.endswith("_cost"):
            table = cost_table(_read_rows(path, COST_HEADER))
        else:
            table = markdown_table(read_csv(path))
        block = (f"{start}\n<!-- generated by `python -m diffdistill.results readme` from results/{path.name}; "
                 f"do not edit -->\n{table}\n{end}")
        new = head + block + tail
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffdistill.results", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="evaluation artifacts of a project -> results/<dataset>.csv")
    c.add_argument("--dataset", required=True)
    c.add_argument("--project", default=".")
    c.add_argument("--out", default=None)
    c.add_argument("--data-root", default=None,
                   help="the artifacts' folder in the project (default: the dataset's, data or data/<dataset>)")
    c.add_argument("--replace", action="store_true", help="drop the existing table's rows of sets not measured here")
    d = sub.add_parser("ddranking", help="results/<dataset>.csv -> DD-Ranking's scores, results/<dataset>_ddranking.csv")
    d.add_argument("--dataset", required=True)
    d.add_argument("--results", default="results")
    d.add_argument("--conf", default="conf/base/parameters_evaluate.yml",
                   help="the evaluate parameters of the run: common protocol and paper_protocols")
    k = sub.add_parser("cost", help="a project's lineage records -> what each distilled set cost (CSV)")
    k.add_argument("--project", default=".")
    k.add_argument("--out", required=True)
    r = sub.add_parser("readme", help="results/*.csv -> the README's generated tables")
    r.add_argument("--readme", default="README.md")
    r.add_argument("--results", default="results")
    args = parser.parse_args(argv)
    if args.command == "collect":
        project = Path(args.project)
        rows = collect(project, data_root=args.data_root or data_root_of(args.dataset),
                       published=published_means(args.dataset))
        out = Path(args.out or project / "results" / f"{args.dataset}.csv")
        kept = keep_unmeasured(read_csv(out), rows) if out.is_file() and not args.replace else []
        write_csv(sort_rows(rows + kept), out)
        print(f"{len(rows)} rows measured here, {len(kept)} kept from {out} -> {out}")
    elif args.command == "ddranking":
        out = write_ddranking(Path(args.results) / f"{args.dataset}.csv", Path(args.conf))
        print(f"{len(read_ddranking_csv(out))} rows -> {out}")
    elif args.command == "cost":
        rows = cost_rows(Path(args.project))
        _write_rows(rows, COST_HEADER, Path(args.out))
        print(f"{len(rows)} sets -> {args.out}")
    else:
        changed = render_readme(Path(args.readme), Path(args.results))
        print(f"{args.readme}: {'updated' if changed else 'already up to date'}")


if __name__ == "__main__":
    main()
