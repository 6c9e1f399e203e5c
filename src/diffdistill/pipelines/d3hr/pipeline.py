"""`d3hr` pipeline: one namespace per (sampler, IPC): `d3hr_ipc<N>` and, side by side, `d3hr_factorised_ipc<N>`.

With `shards: K` > 1 each set runs as K class shards (`shard<i>of<K>.<set>.d3hr_classes`: selection + images of
its classes) and `<set>.merge_shards` writes the set's usual artifacts.
"""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.d3hr.nodes import d3hr_classes, generate_images, merge_d3hr_parts, select_groups
from diffdistill.pipelines.graph import bind, graph_parameter
from diffdistill.pipelines.sharding import shard_copies, shard_count

SHARED = {"class_gaussians", "train_set", "prior_model", "teacher_model"}
PARAMETERS = {"params:d3hr", "params:device"}


def d3hr_methods() -> list[str]:
    return ["d3hr"] + (["d3hr_factorised"] if graph_parameter("d3hr.factorised_side_by_side") else [])


def _unsharded(name: str, ipc: int, factorised: bool) -> list[Node]:
    return [
        Node(bind(select_groups, ipc=ipc, factorised=factorised), inputs=["class_gaussians", "train_set", "params:d3hr"],
             outputs=["d3hr_selection", "d3hr_metrics"], name="select_groups"),
        Node(bind(generate_images, ipc=ipc, name=name),
             inputs=["d3hr_selection", "prior_model", "train_set", "teacher_model", "params:d3hr", "params:device"],
             outputs=["distilled_set", "distilled_grid"], name="generate_images"),
    ]


def _sharded(name: str, ipc: int, factorised: bool, count: int) -> Pipeline:
    shards, parts = shard_copies(
        lambda shard: Node(bind(d3hr_classes, ipc=ipc, factorised=factorised, shard=shard),
                           inputs=["class_gaussians", "prior_model", "params:d3hr", "params:device"],
                           outputs="d3hr_part", name="d3hr_classes"),
        count, part="d3hr_part", inputs={"class_gaussians", "prior_model"}, parameters=PARAMETERS, within=name)
    merge = Node(bind(merge_d3hr_parts, ipc=ipc, factorised=factorised, name=name),
                 inputs=["class_gaussians", "train_set", "teacher_model", "params:d3hr", "params:device", *parts],
                 outputs=["d3hr_selection", "d3hr_metrics", "distilled_set", "distilled_grid"], name="merge_shards")
    merge_inputs = {"class_gaussians": "class_gaussians", "train_set": "train_set", "teacher_model": "teacher_model",
                    **parts}  # parts keep their shard names; the rest of the merge's datasets are the set's
    return shards + Pipeline([merge], namespace=name, inputs=merge_inputs,
                                                parameters=PARAMETERS)


def create_pipeline(**kwargs) -> Pipeline:
    count = shard_count()
    pipelines = []
    for method in d3hr_methods():
        for ipc in [int(i) for i in graph_parameter("ipcs")]:
            name, factorised = f"{method}_ipc{ipc}", method == "d3hr_factorised"
            if count == 1:
                pipelines.append(Pipeline(_unsharded(name, ipc, factorised), namespace=name, inputs=SHARED,
                                          parameters=PARAMETERS))
            else:
                pipelines.append(_sharded(name, ipc, factorised, count))
    return sum(pipelines, Pipeline([]))
