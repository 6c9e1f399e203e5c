"""`baselines` pipeline: one namespace per (baseline, IPC), e.g. `random_ipc1`, `herding_ipc10`.

Herding works in the teacher's feature space: `teacher_model` is a free input, saved by the `teacher` pipeline
(one teacher per project, not one per phase).
"""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.baselines.nodes import make_herding_subset, make_random_subset
from diffdistill.pipelines.graph import bind, graph_parameter, set_names


def create_pipeline(**kwargs) -> Pipeline:
    ipcs = [int(i) for i in graph_parameter("ipcs")]
    pipelines = []
    for ipc in ipcs:
        random_set, herding_set = set_names(["random", "herding"], [ipc])
        pipelines.append(Pipeline(
            [Node(bind(make_random_subset, ipc=ipc, name=random_set), inputs=["train_set", "params:baselines"],
                  outputs=["distilled_set", "distilled_grid"], name="make_random_subset")],
            namespace=random_set, inputs={"train_set"}, parameters={"params:baselines"}))
        pipelines.append(Pipeline(
            [Node(bind(make_herding_subset, ipc=ipc, name=herding_set),
                  inputs=["train_set", "teacher_model", "params:baselines", "params:device"],
                  outputs=["distilled_set", "distilled_grid"], name="make_herding_subset")],
            namespace=herding_set, inputs={"train_set", "teacher_model"},
            parameters={"params:baselines", "params:device"}))
    return sum(pipelines, Pipeline([]))
