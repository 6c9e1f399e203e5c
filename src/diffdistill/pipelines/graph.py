"""Building the pipeline graph: conf/base values read at build time, bound node functions, set namespaces."""

from __future__ import annotations

from functools import partial, update_wrapper
from pathlib import Path
from typing import Any


def set_names(methods: list[str], ipcs: list[int]) -> list[str]:
    """Namespaces of distilled sets: `<method>_ipc<N>`."""
    return [f"{method}_ipc{ipc}" for method in methods for ipc in ipcs]


def base_parameters(key: str) -> Any:
    """A value from conf/base parameters, read when pipelines are built (which sets exist is part of the graph).

    Environments change sizes and settings at run time; the set of namespaces is fixed by conf/base so
    that `kedro viz`, `kedro airflow` and every environment see the same graph.
    """
    from kedro.config import OmegaConfigLoader
    from kedro.framework.project import settings
    from kedro.utils import find_kedro_project

    project = find_kedro_project(Path.cwd()) or Path.cwd()
    loader = OmegaConfigLoader(conf_source=str(project / settings.CONF_SOURCE), base_env="base",
                               default_run_env="base")
    value: Any = loader["parameters"]
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"conf/base parameters have no {key!r} (missing {part!r}); add it to conf/base/parameters_*.yml")
        value = value[part]
    return value


def bind(func: Any, **kwargs: Any) -> Any:
    """functools.partial that keeps the function's name and docs (Kedro and kedro-viz show them)."""
    return update_wrapper(partial(func, **kwargs), func)
