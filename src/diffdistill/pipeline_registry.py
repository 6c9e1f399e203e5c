"""Project pipelines: one per phase, `__default__` chains them all."""

import warnings

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    try:
        pipelines = find_pipelines(raise_errors=True)
    except ImportError as error:
        if error.__cause__ is not None:  # a phase that fails to import is a bug: keep its traceback
            raise
        # A requested name that is no phase (`--pipelines preprocss`): register the phases that exist, so that
        # Kedro's own lookup answers with "did you mean" instead of this ImportError. Every existing phase imported
        # cleanly in the call above, so the only warning silenced here is the one about the missing name.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipelines = find_pipelines(raise_errors=False)
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
