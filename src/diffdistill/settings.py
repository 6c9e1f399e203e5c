"""Kedro project settings."""

import logging

from kedro.config import OmegaConfigLoader

from diffdistill.hooks import LineageHook, RuntimeHook
from diffdistill.run_summary import RunSummaryHook

HOOKS = (RuntimeHook(), LineageHook(), RunSummaryHook())


class _WithoutPluginPredictHintWarning(logging.Filter):
    """Drops MLflow's "Add type hints to the `predict` method" warning about kedro-mlflow's `KedroPipelineModel`.

    MLflow warns (in ANSI colour) when a `PythonModel` subclass defines `predict` without type hints; kedro-mlflow's
    CLI defines one at every `kedro` start. The cause lies in the plugin, the project logs no pyfunc model, and MLflow
    raises it under its own `simplefilter("once")`, past any `warnings.filterwarnings`: so exactly that warning of
    that MLflow module is dropped where Kedro's console receives warnings (the `py.warnings` logger).
    """

    SOURCE = "mlflow/pyfunc/utils/data_validation.py"
    MESSAGE = "Add type hints to the `predict` method"

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (self.SOURCE in text.replace("\\", "/") and self.MESSAGE in text)


logging.getLogger("py.warnings").addFilter(_WithoutPluginPredictHintWarning())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "tour",  # plain `kedro run`: the quick tour (conf/tour); `--env grid`: conf/base alone
    # Environments override single keys of a phase's parameters (deep merge), not whole phases.
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],
    },
}
