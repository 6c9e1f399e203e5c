"""`teacher` pipeline."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.teacher.nodes import train_teacher


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(train_teacher, inputs=["train_set", "test_set", "params:teacher", "params:device"],
             outputs=["teacher_model", "teacher_metrics"], name="train_teacher"),
    ])
