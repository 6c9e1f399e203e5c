"""Building the pipeline graph: graph-shaping parameters read at build time, bound node functions, set namespaces.

Which distilled sets exist (one namespace per set) is part of the graph, so the keys in `GRAPH_KEYS` are read when
pipelines are built, from the configuration of the run's environment (conf/base overlaid with conf/<env>), never
from `--params`. One environment therefore always shows one graph: `kedro viz run --env X`, `kedro airflow create
--env X` and `kedro run --env X` agree. To change which sets exist, edit conf/<env>/parameters*.yml (or pick
another environment).
"""

from __future__ import annotations

import os
import sys
from functools import partial, update_wrapper
from pathlib import Path
from typing import Any

# Parameters read when the graph is built (dotted paths). `--params` may not set them (see user_errors).
GRAPH_KEYS = ("ipcs", "ld3m.runs", "evaluate.methods", "shards", "d3hr.factorised_side_by_side",
              "evaluate.external")

_run_env: dict[str, str | None] = {"env": None}
_loaded: dict[tuple[str, str], Any] = {}  # (conf folder, env) -> parameters, read once per process


def set_run_environment(env: str | None) -> None:
    """Record the environment of the session being created (called by a hook before pipelines are built)."""
    _run_env["env"] = env


def run_environment() -> str | None:
    """The run's environment: the session's (hook), else KEDRO_ENV, else `--env`/`-e` on the command line."""
    if _run_env["env"]:
        return _run_env["env"]
    if os.environ.get("KEDRO_ENV"):
        return os.environ["KEDRO_ENV"]
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg in ("--env", "-e") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--env="):
            return arg.split("=", 1)[1]
    return None


def set_names(methods: list[str], ipcs: list[int]) -> list[str]:
    """Namespaces of distilled sets: `<method>_ipc<N>`."""
    return [f"{method}_ipc{ipc}" for method in methods for ipc in ipcs]


def graph_parameter(key: str) -> Any:
    """A graph-shaping parameter (`GRAPH_KEYS`) of the run's environment, read when pipelines are built."""
    from kedro.config import OmegaConfigLoader
    from kedro.framework.project import settings
    from kedro.utils import find_kedro_project

    if not any(key == k or key.startswith(k + ".") for k in GRAPH_KEYS):
        raise KeyError(f"{key!r} is not a graph-building key ({', '.join(GRAPH_KEYS)})")
    project = find_kedro_project(Path.cwd()) or Path.cwd()
    conf = project / settings.CONF_SOURCE
    env = run_environment() or settings.CONFIG_LOADER_ARGS.get("default_run_env")
    env = env if env and (conf / env).is_dir() else "base"
    cache_key = (str(conf.resolve()), env)
    if cache_key not in _loaded:  # one config load per (project, environment): building every phase reads it ~50 times
        _loaded[cache_key] = OmegaConfigLoader(conf_source=str(conf), base_env="base", default_run_env=env,
                                               merge_strategy={"parameters": "soft"})["parameters"]
    value: Any = _loaded[cache_key]
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"the parameters of environment {env or 'base'!r} have no {key!r} (missing {part!r}); "
                           "add it to conf/base/parameters_*.yml")
        value = value[part]
    return value


def bind(func: Any, **kwargs: Any) -> Any:
    """functools.partial that keeps the function's name and docs (Kedro and kedro-viz show them)."""
    return update_wrapper(partial(func, **kwargs), func)
