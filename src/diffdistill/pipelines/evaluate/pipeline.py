"""`evaluate` pipeline: one namespace per distilled set (`<method>_ipc<N>`), plus the full-data bound."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.evaluate.nodes import evaluate_full_data, evaluate_set
from diffdistill.pipelines.graph import graph_parameter, bind, set_names

SHARED_INPUTS = {"train_set", "test_set", "teacher_model"}
SHARED_PARAMS = {"params:evaluate", "params:device"}


def evaluated_sets() -> list[str]:
    """`evaluate.methods` plus one method per LD3M run (`ld3m_<objective>_<space>`, from `ld3m.runs`)."""
    from diffdistill.pipelines.ld3m.pipeline import ld3m_methods

    methods = list(graph_parameter("evaluate.methods"))
    methods += [m for m in ld3m_methods() if m not in methods]
    return set_names(methods, graph_parameter("ipcs"))


def create_pipeline(**kwargs) -> Pipeline:
    per_set = [
        Pipeline([Node(bind(evaluate_set, set_name=name),
                       inputs=["distilled_set", "train_set", "test_set", "teacher_model", "params:evaluate",
                               "params:device"],
                       outputs=["eval_results", "eval_metrics"], name="evaluate_set")],
                 namespace=name, inputs=SHARED_INPUTS, parameters=SHARED_PARAMS)
        for name in evaluated_sets()
    ]
    full = Pipeline([Node(evaluate_full_data, inputs=["train_set", "test_set", "params:evaluate", "params:device"],
                          outputs=["eval_results", "eval_metrics"], name="evaluate_full_data")],
                    namespace="full", inputs={"train_set", "test_set"}, parameters=SHARED_PARAMS)
    return sum(per_set, full)
