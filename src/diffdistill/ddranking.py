"""DD-Ranking's scores (Li et al. 2025, "DD-Ranking: Rethinking the Evaluation of Dataset Distillation") from our
result rows: how much of the full data a set recovers with hard labels, and how much it beats a random real subset
of the same size under its own evaluation, each folded into one score in [0, 1].

With accuracies as fractions (DD-Ranking's `ddranking/metrics/{hard_label,soft_label,aug_robust}.py`):

    HLR = Acc(full, hard) - Acc(syn, hard)          hard label recovery: the gap to the full data (lower is better)
    IOR = Acc(syn, any)  - Acc(random, any)         improvement over random under the set's own protocol
    LRS = (e^a - e^-1) / (e - e^-1),  a = w·IOR - (1 - w)·HLR            label-robust score, w = 0.5
    ARS = (e^b - e^-1) / (e - e^-1),  b = w·(Acc(syn, aug) - Acc(random, aug))
                                          + (1 - w)·(Acc(syn, no aug) - Acc(random, no aug))   augmentation-robust

`hard` is a hard-label protocol (ours: the common protocol, `dc`), `any` the set's own paper protocol (soft labels
included; the common one when it has none); the random subset is scored under that same protocol. a and b lie in
[-1, 1], so both scores lie in [0, 1]; a = 0 (IOR = HLR) gives (1 - e^-1) / (e - e^-1) = 0.269. We print them
× 100, like accuracies; HLR and IOR in percentage points.

Two differences from DD-Ranking's own runs, both stated wherever a score is shown: it scores each evaluation seed
and averages the scores, we score the means over seeds (the scores are smooth in the accuracies, and our seeds of
the set, of the random subset and of the full data are not paired); and it tunes the random subset's learning
rate over {0.001, ..., 0.1}, we train it with the protocol's own rate, exactly as the set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

WEIGHT = 0.5  # DD-Ranking's default lrs_lambda / ars_lambda: both terms count equally
NO_AUGMENT = "_no_augment"  # protocol suffix of the same protocol without training augmentation (ARS)
HEADER = ["set", "ipc", "arch", "hard_protocol", "any_protocol", "syn_hard", "full_hard", "syn_any", "random_any",
          "hlr", "ior", "lrs", "ars"]


def robust_score(exponent: float) -> float:
    """(e^x - e^-1) / (e - e^-1): maps x in [-1, 1] onto [0, 1], monotonically."""
    if not -1.0 - 1e-9 <= exponent <= 1.0 + 1e-9:
        raise ValueError(f"the exponent of a DD-Ranking score lies in [-1, 1] (accuracies as fractions), "
                         f"got {exponent}")
    return (math.exp(exponent) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def label_robust_score(full_hard: float, syn_hard: float, syn_any: float, random_any: float, *,
                       weight: float = WEIGHT) -> dict[str, float]:
    """HLR, IOR and LRS from accuracies in [0, 1]."""
    _check_fractions(full_hard=full_hard, syn_hard=syn_hard, syn_any=syn_any, random_any=random_any)
    hlr, ior = full_hard - syn_hard, syn_any - random_any
    return {"hlr": hlr, "ior": ior, "lrs": robust_score(weight * ior - (1.0 - weight) * hlr)}


def augmentation_robust_score(syn_aug: float, random_aug: float, syn_plain: float, random_plain: float, *,
                              weight: float = WEIGHT) -> float:
    """ARS from accuracies in [0, 1] with and without the protocol's training augmentation."""
    _check_fractions(syn_aug=syn_aug, random_aug=random_aug, syn_plain=syn_plain, random_plain=random_plain)
    return robust_score(weight * (syn_aug - random_aug) + (1.0 - weight) * (syn_plain - random_plain))


def _check_fractions(**accuracies: float) -> None:
    for name, value in accuracies.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value}: DD-Ranking scores take accuracies as fractions in [0, 1]")


def score_rows(rows: Iterable[Mapping[str, Any]], *, hard_protocol: str,
               own_protocols: Mapping[str, str | list[str]] | None = None) -> list[dict[str, Any]]:
    """DD-Ranking scores of every distilled set in result rows (`diffdistill.results` CSV rows, accuracies in %).

    Per set, IPC and architecture (and the unseen mean): HLR against the `full` rows and IOR against the `random`
    rows of the same IPC, both in percentage points, LRS (× 100), and ARS (× 100) where the set and the random
    subset were also scored under `<any protocol>_no_augment`. `own_protocols` maps a method (set name) to its
    paper protocol(s) (`evaluate.paper_protocols`; the first one is the set's own); a set without one, or without
    rows under it, is scored under `hard_protocol` for both terms. A set whose comparison rows are missing (no
    full-data row for that architecture, no random subset at that IPC) gets no row.
    """
    table: dict[tuple[str, str, str, str], float] = {}
    for row in rows:
        table[(str(row["set"]), str(row["ipc"]), str(row["arch"]), str(row["protocol"]))] = float(row["mean"]) / 100
    own_protocols = own_protocols or {}
    out = []
    sets = sorted({(s, ipc, arch) for s, ipc, arch, _ in table if s not in ("full", "random") and ipc != ""},
                  key=lambda k: (int(k[1]), k[0], k[2]))
    for name, ipc, arch in sets:
        syn_hard, full_hard = table.get((name, ipc, arch, hard_protocol)), table.get(("full", "", arch, hard_protocol))
        own = own_protocols.get(name) or hard_protocol
        any_protocol = own[0] if isinstance(own, list) else own
        if (name, ipc, arch, any_protocol) not in table or ("random", ipc, arch, any_protocol) not in table:
            any_protocol = hard_protocol
        syn_any, random_any = table.get((name, ipc, arch, any_protocol)), table.get(("random", ipc, arch, any_protocol))
        if None in (syn_hard, full_hard, syn_any, random_any):
            continue
        scores = label_robust_score(full_hard, syn_hard, syn_any, random_any)
        plain = any_protocol + NO_AUGMENT
        pair = [table.get((s, ipc, arch, p)) for s, p in ((name, plain), ("random", plain))]
        ars = None if None in pair else augmentation_robust_score(syn_any, random_any, *pair)
        out.append({"set": name, "ipc": int(ipc), "arch": arch, "hard_protocol": hard_protocol,
                    "any_protocol": any_protocol, "syn_hard": _pct(syn_hard), "full_hard": _pct(full_hard),
                    "syn_any": _pct(syn_any), "random_any": _pct(random_any), "hlr": _pct(scores["hlr"]),
                    "ior": _pct(scores["ior"]), "lrs": _pct(scores["lrs"]), "ars": "" if ars is None else _pct(ars)})
    return out


def _pct(fraction: float) -> float:
    return round(100.0 * fraction, 2)
