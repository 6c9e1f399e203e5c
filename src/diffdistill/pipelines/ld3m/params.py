"""`params:ld3m` -> one run's `LD3MConfig`: the run names, the per-run tables (iterations per objective and IPC,
learning rates per space, DC's schedule per kind of space, `auto` DSA) and the refusals that name the parameter.

`RunTable` holds the keys the pipeline resolves per run; every other key of `params:ld3m` is `LD3MConfig`'s and
goes to `diffdistill.config.build` as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from diffdistill.augment import resolve_dsa_strategy
from diffdistill.config import ConfigError, build, option, per_ipc
from diffdistill.data.bundle import TensorBundle
from diffdistill.diffusion.residual import check_variant
from diffdistill.distill.ld3m import OBJECTIVES, SPACE_SPECS, SPACES, LD3MConfig

CONF = "conf/base/parameters_ld3m.yml"


@dataclass
class RunTable:
    """The keys of `params:ld3m` the pipeline resolves per run (the rest is `LD3MConfig`)."""

    runs: list[dict[str, Any]] = option(default_factory=list, help="(objective, space[, variant]) per set; "
                                                                  "read when the graph is built")
    iterations: dict[str, int | dict[int, int]] = option(default_factory=dict, help="per objective: a number or "
                                                                                   "{ipc: number}")
    lr: dict[str, dict[str, float | dict[int, float] | None] | None] | None = option(
        None, help="{space[_variant]: {objective: lr or {ipc: lr}}}; `latent` applies to every prior space")
    net_overrides: dict[str, Any] | None = option(None, help="build_net overrides of the matching net")
    snr_window: int = option(10, help="the report's rolling window of the gradient-norm SNR")


NODE_KEYS = frozenset(f.name for f in dataclasses.fields(RunTable))


def method_name(objective: str, space: str, variant: str | None = None) -> str:
    """`ld3m_<objective>_<space>`; a run that pins a sampler variant gets it as a suffix (`ld3m_dm_latent_eq12`)."""
    return f"ld3m_{objective}_{space}" + (f"_{variant}" if variant else "")


def set_name(objective: str, space: str, ipc: int, variant: str | None = None) -> str:
    return f"{method_name(objective, space, variant)}_ipc{ipc}"


def check_run(objective: Any, space: Any, variant: Any = None) -> None:
    """Refuse unknown names up front, naming the parameter that holds them."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"ld3m.runs has objective={objective!r}; choose one of {', '.join(OBJECTIVES)} ({CONF})")
    if space not in SPACES:
        raise ConfigError(f"ld3m.runs has space={space!r} (objective {objective}); choose one of "
                          f"{', '.join(SPACES)} ({CONF})")
    if variant is not None:
        check_variant(variant, f"ld3m.runs variant (objective {objective}, space {space})")
        spec = SPACE_SPECS[space]
        if not spec.takes_variant:
            fixed = spec.variant(LD3MConfig(space=space)) or "no sampler"
            raise ConfigError(f"ld3m.runs gives variant={variant!r} to space {space!r}, which always uses {fixed}; "
                              f"a variant applies to space 'latent' only ({CONF})")


def check_ipc(train_set: TensorBundle, ipc: int) -> None:
    counts = torch.bincount(train_set["labels"].long(), minlength=train_set.num_classes)
    names = train_set.class_names or [str(k) for k in range(train_set.num_classes)]
    short = {names[k]: int(n) for k, n in enumerate(counts.tolist()) if n < ipc}
    if ipc < 1 or short:
        raise ValueError(f"ipcs contains {ipc}, but the train split has fewer images in classes {short} "
                         "(class: count); lower `ipcs` in conf/base/parameters.yml or use more data")


def run_table(params: Any) -> RunTable:
    if not isinstance(params, Mapping):
        raise ConfigError(f"ld3m must be a mapping of its settings, got {params!r}; fix {CONF}")
    return build(RunTable, {k: v for k, v in params.items() if k in NODE_KEYS}, "ld3m")


def learning_rate(params: Any, objective: str, space: str, variant: str | None = None,
                  ipc: int | None = None) -> float | None:
    """`lr.<space>_<variant>.<objective>` for a run that pins a variant (`latent_eq12`), else `lr.<space>.<objective>`,
    else `lr.latent.<objective>` for every prior space; None = the core's default. A value given as {ipc: lr}
    is read at `ipc` (a set's gradient per image shrinks with its size, so a rate chosen at one IPC need not carry)."""
    table = run_table(params).lr or {}
    keys = ([f"{space}_{variant}"] if variant else []) + [space] + (["latent"] if SPACE_SPECS[space].uses_prior else [])
    for key in keys:
        value = (table.get(key) or {}).get(objective)
        if isinstance(value, Mapping):
            if ipc is None:
                raise ConfigError(f"ld3m.lr.{key}.{objective} is given per IPC; pass the run's ipc")
            return per_ipc(value, ipc, f"ld3m.lr.{key}.{objective}")
        if value is not None:
            return value
    return None


def dc_schedule(params: Any, space: str) -> str | None:
    """`dc.schedule` given per kind of space, {prior: glad, pixel: dc_table}, or as one name; None = the core's."""
    dc = params.get("dc") if isinstance(params, Mapping) else None
    value = dc.get("schedule") if isinstance(dc, Mapping) else None
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"prior", "pixel"})
        if unknown:
            raise ConfigError(f"ld3m.dc.schedule has keys {unknown}; use {{prior: glad, pixel: dc_table}}")
        return value.get("prior" if SPACE_SPECS[space].uses_prior else "pixel")
    return value


def ld3m_config(params: Any, train_set: TensorBundle, device: str, *, objective: str, space: str, ipc: int,
                variant: str | None = None) -> LD3MConfig:
    """`params:ld3m` -> the core's config for one run (objective, space, IPC, iterations, lr, DC loop schedule,
    DSA strategy and a run's own sampler variant resolved)."""
    check_run(objective, space, variant)
    table = run_table(params)
    if objective not in table.iterations:
        raise ConfigError(f"ld3m.iterations needs an entry for objective {objective!r}, e.g. iterations: "
                          f"{{{objective}: 100}}")
    values = {k: v for k, v in params.items() if k not in NODE_KEYS}
    values.update(objective=objective, space=space, ipc=ipc, device=device,
                  iterations=per_ipc(table.iterations[objective], ipc, f"ld3m.iterations.{objective}"),
                  lr=learning_rate(params, objective, space, variant, ipc),
                  dsa_strategy=resolve_dsa_strategy(values.get("dsa_strategy", "auto"), train_set.meta.get("source")))
    if isinstance(values.get("dc"), Mapping):
        values["dc"] = {**values["dc"], "schedule": dc_schedule(params, space)}
    if variant is not None and isinstance(values.get("sampler") or {}, Mapping):
        values["sampler"] = {**(values.get("sampler") or {}), "variant": variant}
    return build(LD3MConfig, values, "ld3m")
