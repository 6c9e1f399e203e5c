"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from diffdistill.hooks import LineageHook, RuntimeHook
from diffdistill.run_summary import RunSummaryHook

HOOKS = (RuntimeHook(), LineageHook(), RunSummaryHook())

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
