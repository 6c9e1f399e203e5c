"""`gaussians` pipeline."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.gaussians.nodes import fit_noise_gaussians


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(fit_noise_gaussians, inputs=["noise", "latents", "params:gaussians"],
             outputs=["class_gaussians", "normality_report", "gaussians_metrics"], name="fit_noise_gaussians"),
    ])
