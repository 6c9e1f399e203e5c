"""Mistakes in a `kedro run` command, refused before the session starts: one line saying what to change.

`check_run` runs in the project's `run` command (cli.py) before Kedro's own: before any hook, so no MLflow run is
opened and nothing is written under data/. It checks, in this order:

- the environment (`--env` / `KEDRO_ENV`) is a folder of the configuration;
- every `--pipelines` name is a registered phase (with the close matches, as Kedro's own lookup suggests them);
- no `--params` key sets a graph-building key (`diffdistill.pipelines.graph.GRAPH_KEYS`): those are read when the
  graph is built, so they are set in conf/<env>/parameters*.yml;
- every `--params` key names an existing parameter section, and every section the selected pipelines read (or
  `--params` touches) builds with the dataclass its nodes build it with (`diffdistill.config.build`);
- every `--load-versions` pin names a saved version (else the saved ones are listed);
- every free input of the selected pipeline has a saved version (optional ones aside, as the catalog marks them),
  else the message names the pipelines that write them, upstream ones included.

Known user errors (`UserError`, `diffdistill.config.ConfigError`) become `click.ClickException` one-liners in
`one_line_errors`; every other exception keeps its traceback, since it is a bug to see.
"""

from __future__ import annotations

import difflib
import importlib.resources
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from diffdistill.config import ConfigError, build


class UserError(Exception):
    """A mistake in how a command was called (or in its configuration); the message says what to change."""


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Known user errors as click's one-line `Error: ...` and exit status 1; anything else propagates as is."""
    try:
        yield
    except (UserError, ConfigError) as error:
        raise click.ClickException(str(error)) from None


def phase_names() -> list[str]:
    """The phase packages under `diffdistill.pipelines`, the ones `find_pipelines` registers (names only: nothing
    is imported, so a mistyped name is answered without building every phase's graph)."""
    root = importlib.resources.files("diffdistill.pipelines")
    return sorted(entry.name for entry in root.iterdir()
                  if entry.is_dir() and not entry.name.startswith((".", "_")) and (entry / "__init__.py").is_file())


def _suggest(name: str, known: list[str]) -> str:
    """Kedro's "did you mean": the close matches of `name` (difflib, as `KedroSession.run` computes them)."""
    matches = difflib.get_close_matches(name, known)
    return f"did you mean {' or '.join(repr(m) for m in matches)}? " if matches else ""


def check_pipeline_names(names: list[str]) -> None:
    """Every requested pipeline is registered (`__default__` or a phase)."""
    known = phase_names()
    for name in names:
        if name != "__default__" and name not in known:
            raise UserError(f"no pipeline named {name!r}; {_suggest(name, known)}pipelines: {', '.join(known)}")


def environments(conf: Path) -> list[str]:
    """The environments of a configuration folder (its subfolders but `base`, which every run reads)."""
    return sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != "base") if conf.is_dir() else []


def check_environment(conf: Path, env: str | None) -> None:
    """`env` (None: the default run environment) is a folder of `conf` (an archive `conf` is left to Kedro)."""
    if env is None or not conf.is_dir() or (conf / env).is_dir():
        return
    known = environments(conf)
    raise UserError(f"environment {env!r} does not exist (no folder {_shown(conf / env)}); "
                    f"{_suggest(env, known)}pass --env with one of: {', '.join(known)}")


def leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf of a nested mapping, as `--params a.b=1` writes them."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaf_paths(value, path + ".")
        else:
            yield path, value


def _has_path(tree: Any, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return False
        tree = tree[part]
    return True


def where_to_set(conf: Path, env: str | None, key: str) -> str:
    """The parameters file to edit for `key` in environment `env`: the env's file that sets it, else the env's
    namesake of base's file that sets it (an override of base's default); base's own when `env` has no folder."""
    import yaml

    def setting(folder: Path) -> Path | None:
        return next((path for path in sorted(folder.glob("parameters*.yml"))
                     if _has_path(yaml.safe_load(path.read_text()) or {}, key)), None)

    own = conf / env if env and (conf / env).is_dir() and env != "base" else None
    default = setting(conf / "base")
    if own is None:
        return _shown(default or conf / "base" / "parameters.yml")
    found = setting(own)
    if found is not None:
        return _shown(found)
    if default is None:
        return _shown(own / "parameters.yml")
    return f"{_shown(own / default.name)} (the default is in {_shown(default)})"


def refuse_graph_keys(runtime_params: Mapping[str, Any], conf: Path, env: str | None) -> None:
    """A `--params` key that sets a graph-building key (or a part of one, or a section holding one) is refused."""
    from diffdistill.pipelines.graph import GRAPH_KEYS

    for path, value in leaf_paths(runtime_params):
        for key in GRAPH_KEYS:
            if path == key or path.startswith(key + ".") or key.startswith(path + "."):
                raise UserError(
                    f"--params {path}={value!r}: {key!r} is read when the pipeline graph is built (it decides which "
                    f"nodes exist), before --params apply; set it in {where_to_set(conf, env, key)} "
                    "(or run another --env)")


def refuse_unknown_sections(runtime_params: Mapping[str, Any], configured: Mapping[str, Any]) -> None:
    """A `--params` key whose top-level section no parameters file has is a typo (sub-keys: see the sections)."""
    known = sorted(configured)
    for key in runtime_params:
        if key not in configured:
            raise UserError(f"--params {key}: no parameter {key!r} in this environment; "
                            f"{_suggest(key, known)}top-level parameters: {', '.join(known)}")


def _check_preprocess(section: Any, params: Mapping[str, Any]) -> None:
    from diffdistill.data.sources import SourceConfig, check_root

    check_root(SourceConfig.from_dict(section))


def _check_teacher(section: Any, params: Mapping[str, Any]) -> None:
    from diffdistill.evaluation.config import TeacherConfig

    build(TeacherConfig, section, "teacher")


def _check_baselines(section: Any, params: Mapping[str, Any]) -> None:
    from diffdistill.distill.baselines import BaselinesConfig

    build(BaselinesConfig, section, "baselines")


def _check_prior(section: Any, params: Mapping[str, Any]) -> None:
    from diffdistill.prior.config import PriorConfig

    build(PriorConfig, section, "prior")  # `quality` is one of its sections


def _check_latents(section: Any, params: Mapping[str, Any]) -> None:
    from diffdistill.distill.d3hr import LatentsConfig

    build(LatentsConfig, section, "latents")


def _check_gaussians(section: Any, params: Mapping[str, Any]) -> None:
    from diffdistill.distill.d3hr import GaussiansConfig

    build(GaussiansConfig, section, "gaussians")


def _check_d3hr(section: Any, params: Mapping[str, Any]) -> None:
    from diffdistill.distill.d3hr.config import GenerationConfig, GroupSamplingConfig
    from diffdistill.distill.d3hr.config import section as subsection

    build(GroupSamplingConfig, subsection(section, "d3hr", "group_sampling"), "d3hr.group_sampling")
    build(GenerationConfig, subsection(section, "d3hr", "generation"), "d3hr.generation")


def _check_experts(section: Any, params: Mapping[str, Any]) -> None:
    from diffdistill.pipelines.experts.nodes import ExpertsParams

    build(ExpertsParams, section, "experts")


def _check_evaluate(section: Any, params: Mapping[str, Any]) -> None:
    from diffdistill.evaluation.config import EvaluateConfig

    build(EvaluateConfig, section, "evaluate")  # the report reads a part of it (ReportConfig)


def _check_ld3m(section: Any, params: Mapping[str, Any]) -> None:
    """Every LD3M set of the graph resolves to its `LD3MConfig` (per-run tables, schedules, variants)."""
    from diffdistill.data.bundle import TensorBundle
    from diffdistill.pipelines.graph import graph_parameter
    from diffdistill.pipelines.ld3m.params import ld3m_config, run_table
    from diffdistill.pipelines.ld3m.pipeline import ld3m_runs

    run_table(section)
    # The node reads of the train split only its `source` (the `auto` DSA strategy): preprocess writes it.
    split = TensorBundle({}, {"source": (params.get("preprocess") or {}).get("source")})
    ipcs = [int(ipc) for ipc in graph_parameter("ipcs")]
    for objective, space, variant in ld3m_runs():
        for ipc in ipcs:
            ld3m_config(section, split, str(params.get("device", "cpu")), objective=objective, space=space,
                        ipc=ipc, variant=variant)


# Parameter section -> the check its nodes apply (the same dataclasses, built the same way).
SECTION_CHECKS: dict[str, Callable[[Any, Mapping[str, Any]], None]] = {
    "preprocess": _check_preprocess, "teacher": _check_teacher, "baselines": _check_baselines,
    "prior": _check_prior, "latents": _check_latents, "gaussians": _check_gaussians, "d3hr": _check_d3hr,
    "experts": _check_experts, "evaluate": _check_evaluate, "ld3m": _check_ld3m,
}


def sections_read(pipeline: Any) -> set[str]:
    """Top-level parameter sections the nodes of `pipeline` take (`params:<section>[.<key>]` inputs)."""
    return {name[len("params:"):].split(".")[0] for node in pipeline.nodes for name in node.inputs
            if name.startswith("params:")}


def check_sections(sections: set[str], params: Mapping[str, Any], runtime_params: Mapping[str, Any],
                   conf: Path, env: str | None) -> None:
    """Build every section in `sections` that has a check; a refusal says where the value came from."""
    given = [path for path, _ in leaf_paths(runtime_params)]
    for name in sorted(sections & set(SECTION_CHECKS)):
        try:
            SECTION_CHECKS[name](params.get(name), params)
        except ValueError as error:  # ConfigError, or a config dataclass's own refusal (SourceConfig)
            message = str(error)
            from_cli = [path for path in given if path in message or path == name]
            folders = [conf / env] if env and env != "base" else []
            where = (f"given by --params {from_cli[0]}" if from_cli else "set in " + " or ".join(
                f"{_shown(folder)}/parameters*.yml" for folder in [*folders, conf / "base"]))
            raise UserError(f"{message} ({where})") from None


def _shown(path: Path) -> str:
    """A path as the user typed it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def saved_versions(catalog: Any, name: str) -> list[str]:
    """Saved versions of a versioned file dataset, oldest first (`<filepath>/<version>/<file name>`)."""
    filepath = catalog.config_resolver.resolve_pattern(name).get("filepath")
    if not filepath:
        return []
    folder = Path(str(filepath))
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / folder.name).exists())


def _versions_text(versions: list[str], limit: int = 5) -> str:
    shown = versions[-limit:]
    more = f" (and {len(versions) - limit} older)" if len(versions) > limit else ""
    return ", ".join(shown) + more


def check_pinned_versions(catalog: Any, load_versions: Mapping[str, str]) -> None:
    """Every `--load-versions name:version` names a versioned dataset and one of its saved versions."""
    from kedro.io.core import AbstractVersionedDataset, Version

    for name, version in load_versions.items():
        pin = f"--load-versions {name}:{version}"
        if name not in catalog:
            raise UserError(f"{pin}: the catalog has no dataset {name!r}")
        dataset = catalog.get(name)
        if not isinstance(dataset, AbstractVersionedDataset):
            raise UserError(f"{pin}: {name!r} is not versioned, so it has no versions to pin; drop the pin")
        if not catalog.get(name, version=Version(version, None)).exists():
            versions = saved_versions(catalog, name)
            raise UserError(f"{pin}: {name} has no saved version {version}; "
                            + (f"saved versions (newest last): {_versions_text(versions)}" if versions
                               else "it has none yet: run the pipeline that writes it first"))


def is_missing(catalog: Any, name: str) -> bool:
    """No saved version of `name` to load: held in memory only (no catalog entry) or never saved. A dataset the
    catalog marks `optional: true` is never missing (evaluate and report skip sets that were not made yet)."""
    if name.startswith("params:") or name == "parameters":
        return False
    if name not in catalog:
        return True
    if catalog.config_resolver.resolve_pattern(name).get("optional"):
        return False
    return not catalog.exists(name)


def plan_upstream(missing: list[str], phases: Mapping[str, Any], lacks: Callable[[str], bool]) -> tuple[
        dict[str, str | None], list[str]]:
    """For each missing dataset the phase that writes it, and every phase to run for them, upstream ones first.

    A dataset several phases write (a phase may embed another phase's node) is credited to the smallest of them;
    a producer's own inputs for which `lacks` holds bring in their producers in turn."""
    def writer(name: str) -> str | None:
        candidates = [phase for phase, pipeline in phases.items() if name in pipeline.all_outputs()]
        return min(candidates, key=lambda phase: (len(phases[phase].nodes), phase)) if candidates else None

    order: list[str] = []
    visiting: set[str] = set()

    def visit(phase: str) -> None:
        if phase in order or phase in visiting:
            return
        visiting.add(phase)
        for name in sorted(phases[phase].inputs()):
            if not name.startswith("params:") and name != "parameters" and lacks(name):
                upstream = writer(name)
                if upstream is not None and upstream != phase:
                    visit(upstream)
        visiting.discard(phase)
        order.append(phase)

    written_by = {name: writer(name) for name in missing}
    for phase in written_by.values():
        if phase is not None:
            visit(phase)
    return written_by, order


def upstream_message(request: str, missing: list[str], phases: Mapping[str, Any], catalog: Any,
                     requested: list[str], env_flag: str) -> str:
    """What `request` lacks, who writes it, and the one command that makes it (upstream phases included)."""
    written_by, order = plan_upstream(missing, phases, lambda name: is_missing(catalog, name))
    listed = ", ".join(f"{name} (written by {phase})" if phase else f"{name} (no pipeline writes it)"
                       for name, phase in written_by.items())
    in_memory = [name for name in missing if name not in catalog]
    if not order:
        return f"{request} reads datasets nothing has saved: {listed}; add them to the catalog or fix the filters"
    if in_memory:  # not saved anywhere: the producer must run in the same command
        command = f"kedro run --pipelines {','.join(dict.fromkeys(order + requested))}{env_flag}"
        return f"{request} reads datasets held in memory only or not saved yet: {listed}; run `{command}`"
    command = f"kedro run --pipelines {','.join(order)}{env_flag}"
    return f"{request} reads artifacts with no saved version yet: {listed}; run `{command}` first"


def check_run(project_path: Path, package_name: str, options: Mapping[str, Any]) -> None:
    """Refuse a `kedro run` (the options of Kedro's `run` command) that would fail on a user error, before the
    session starts; leaves `kedro.framework.project.pipelines` loaded with the graph the run will use."""
    from kedro.config import MissingConfigException
    from kedro.framework.hooks import _create_hook_manager
    from kedro.framework.project import pipelines as registered
    from kedro.framework.project import settings
    from kedro.pipeline import Pipeline
    from kedro.validation.exceptions import ParameterValidationError

    from diffdistill.pipelines.graph import set_run_environment

    explicit_env = options.get("env") or os.environ.get("KEDRO_ENV")  # as KedroSession.create reads it
    env = explicit_env or settings.CONFIG_LOADER_ARGS.get("default_run_env")
    conf = Path(options.get("conf_source") or Path(project_path) / settings.CONF_SOURCE)
    check_environment(conf, env)
    names = [options["pipeline"]] if options.get("pipeline") else list(dict.fromkeys(options.get("pipelines") or []))
    check_pipeline_names(names)
    runtime = dict(options.get("params") or {})
    refuse_graph_keys(runtime, conf, env)
    load_versions = dict(options.get("load_versions") or {})

    def loader(runtime_params: dict[str, Any] | None) -> Any:  # as KedroSession builds it
        return settings.CONFIG_LOADER_CLASS(conf_source=str(conf), env=explicit_env, runtime_params=runtime_params,
                                            **settings.CONFIG_LOADER_ARGS)

    if runtime:
        try:
            configured = loader(None)["parameters"]
        except MissingConfigException as error:
            raise UserError(f"the configuration cannot be read: {error}") from None
        refuse_unknown_sections(runtime, configured)
    config_loader = loader(runtime or None)
    # A context of its own, without the project's and plugins' hooks: nothing is logged to MLflow or written.
    context = settings.CONTEXT_CLASS(package_name=package_name, project_path=Path(project_path),
                                     config_loader=config_loader, hook_manager=_create_hook_manager(),
                                     env=explicit_env, runtime_params=runtime or None)
    set_run_environment(context.env)
    registered.set_requested(names or None)  # as KedroSession.run: the graph built here is the one it then runs
    pipeline = sum((registered[name] for name in names or ["__default__"]), Pipeline([]))
    try:
        pipeline = pipeline.filter(tags=options.get("tags"), from_nodes=options.get("from_nodes"),
                                   to_nodes=options.get("to_nodes"), node_names=options.get("node_names"),
                                   from_inputs=options.get("from_inputs"), to_outputs=options.get("to_outputs"),
                                   node_namespaces=options.get("namespaces"))
    except ValueError as error:  # Kedro's refusal of filters that match nothing
        raise UserError(" ".join(str(error).split())) from None
    validation_log = logging.getLogger("kedro.validation.parameter_validator")
    level = validation_log.level
    validation_log.setLevel(logging.WARNING)  # its INFO line is the session's to print, once
    try:
        params = context.params  # Kedro's own typed validation of node parameters runs here
        catalog = context.catalog
    except ParameterValidationError as error:
        raise UserError("; ".join(line.strip("- ") for line in str(error).splitlines())) from None
    finally:
        validation_log.setLevel(level)
    check_sections(sections_read(pipeline) | set(runtime), params, runtime, conf, env)
    check_pinned_versions(catalog, load_versions)
    missing = [name for name in sorted(pipeline.inputs()) if name not in load_versions and is_missing(catalog, name)]
    if missing:
        request = f"--pipelines {','.join(names)}" if names else "the default pipeline"
        registered.set_requested(None)  # every phase, to find who writes what (only on this error path)
        phases = {name: p for name, p in registered.items() if name != "__default__"}
        raise UserError(upstream_message(request, missing, phases, catalog, names,
                                         f" --env {explicit_env}" if explicit_env else ""))
