"""`d3hr` pipeline: one namespace per (sampler, IPC): `d3hr_ipc<N>` and, side by side, `d3hr_factorised_ipc<N>`."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.common import base_parameters, bind
from diffdistill.pipelines.d3hr.nodes import generate_images, select_groups


def d3hr_methods() -> list[str]:
    return ["d3hr"] + (["d3hr_factorised"] if base_parameters("d3hr.factorised_side_by_side") else [])


def create_pipeline(**kwargs) -> Pipeline:
    pipelines = []
    for method in d3hr_methods():
        for ipc in [int(i) for i in base_parameters("ipcs")]:
            pipelines.append(Pipeline([
                Node(bind(select_groups, ipc=ipc, factorised=method == "d3hr_factorised"),
                     inputs=["class_gaussians", "train_set", "params:d3hr"],
                     outputs=["d3hr_selection", "d3hr_metrics"], name="select_groups"),
                Node(bind(generate_images, ipc=ipc),
                     inputs=["d3hr_selection", "prior_model", "train_set", "teacher_model", "params:d3hr",
                             "params:device"],
                     outputs=["distilled_set", "distilled_grid"], name="generate_images"),
            ], namespace=f"{method}_ipc{ipc}", inputs={"class_gaussians", "train_set", "prior_model", "teacher_model"},
                parameters={"params:d3hr", "params:device"}))
    return sum(pipelines, Pipeline([]))
