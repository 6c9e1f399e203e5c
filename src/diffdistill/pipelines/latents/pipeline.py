"""`latents` pipeline."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.latents.nodes import encode_and_invert


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(encode_and_invert, inputs=["train_set", "prior_model", "params:latents", "params:device"],
             outputs=["latents", "noise", "latents_report", "latents_metrics"], name="encode_and_invert"),
    ])
