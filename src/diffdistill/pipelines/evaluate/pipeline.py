"""`evaluate` pipeline: one namespace per distilled set (`<method>_ipc<N>`), plus the full-data bound.

Sets made elsewhere (`evaluate.external`) get a namespace `external_<name>_ipc<N>` each: a node imports and
checks the file into `<namespace>.distilled_set`, then it is evaluated like our own sets.
"""

import re

from kedro.pipeline import Node, Pipeline

from diffdistill.config import ConfigError, build
from diffdistill.data.external import ExternalSetConfig
from diffdistill.pipelines.evaluate.external import evaluate_external_set, import_external_set
from diffdistill.pipelines.evaluate.nodes import evaluate_full_data, evaluate_set
from diffdistill.pipelines.graph import bind, graph_parameter, set_names

SHARED_INPUTS = {"train_set", "test_set", "teacher_model"}
SHARED_PARAMS = {"params:evaluate", "params:device"}


def evaluated_sets() -> list[str]:
    """`evaluate.methods` plus one method per LD3M run (`ld3m_<objective>_<space>`, from `ld3m.runs`)."""
    from diffdistill.pipelines.ld3m.pipeline import ld3m_methods

    methods = list(graph_parameter("evaluate.methods"))
    methods += [m for m in ld3m_methods() if m not in methods]
    return set_names(methods, graph_parameter("ipcs")) + list(external_sets())


def external_sets() -> dict[str, str]:
    """Namespace (`external_<name>_ipc<N>`) -> name of each `evaluate.external` entry; the IPC is the entry's."""
    namespaces = {}
    for name, entry in (graph_parameter("evaluate.external") or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)):
            raise ConfigError(f"evaluate.external.{name}: a set name may hold only letters, digits and _ "
                              "(it becomes a pipeline namespace); rename it")
        config = build(ExternalSetConfig, entry, f"evaluate.external.{name}")
        namespaces[set_names([f"external_{name}"], [config.ipc])[0]] = str(name)
    return namespaces


def create_pipeline(**kwargs) -> Pipeline:
    external = external_sets()
    imported = [
        Pipeline([Node(bind(import_external_set, name=source, set_name=name),
                       inputs=["test_set", "train_set", "params:evaluate"],
                       outputs=["distilled_set", "distilled_grid"], name="import_external_set"),
                  Node(bind(evaluate_external_set, set_name=name),
                       inputs=["distilled_set", "train_set", "test_set", "teacher_model", "params:evaluate",
                               "params:device"],
                       outputs=["eval_results", "eval_metrics"], name="evaluate_set")],
                 namespace=name, inputs=SHARED_INPUTS, parameters=SHARED_PARAMS)
        for name, source in external.items()
    ]
    per_set = [
        Pipeline([Node(bind(evaluate_set, set_name=name),
                       inputs=["distilled_set", "train_set", "test_set", "teacher_model", "params:evaluate",
                               "params:device"],
                       outputs=["eval_results", "eval_metrics"], name="evaluate_set")],
                 namespace=name, inputs=SHARED_INPUTS, parameters=SHARED_PARAMS)
        for name in evaluated_sets() if name not in external
    ]
    full = Pipeline([Node(evaluate_full_data, inputs=["train_set", "test_set", "params:evaluate", "params:device"],
                          outputs=["eval_results", "eval_metrics"], name="evaluate_full_data")],
                    namespace="full", inputs={"train_set", "test_set"}, parameters=SHARED_PARAMS)
    return sum(per_set + imported, full)
