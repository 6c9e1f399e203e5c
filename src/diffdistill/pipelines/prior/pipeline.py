"""`prior` pipeline. The class-fidelity judge is `teacher_model`, a free input saved by the `teacher` pipeline."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.prior.nodes import build_prior, score_prior


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(build_prior, inputs=["train_set", "params:prior", "params:device"],
             outputs=["prior_model", "prior_training_metrics"], name="build_prior"),
        Node(score_prior, inputs=["prior_model", "test_set", "teacher_model", "params:prior", "params:device"],
             outputs=["prior_quality", "prior_metrics"], name="score_prior"),
    ])
