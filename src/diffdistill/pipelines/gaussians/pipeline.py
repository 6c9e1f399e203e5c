"""`gaussians` pipeline; with `shards: K` > 1, one `shard<i>of<K>` copy per class range and `gaussians.merge_shards`."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.gaussians.nodes import fit_gaussians_classes, fit_noise_gaussians, merge_gaussian_parts
from diffdistill.pipelines.graph import bind
from diffdistill.pipelines.sharding import shard_copies, shard_count

INPUTS = ["noise", "latents", "params:gaussians"]
OUTPUTS = ["class_gaussians", "normality_report", "gaussians_metrics"]


def create_pipeline(**kwargs) -> Pipeline:
    count = shard_count()
    if count == 1:
        return Pipeline([Node(fit_noise_gaussians, inputs=INPUTS, outputs=OUTPUTS, name="fit_noise_gaussians")])
    shards, parts = shard_copies(
        lambda shard: Node(bind(fit_gaussians_classes, shard=shard), inputs=INPUTS, outputs="gaussians_part",
                           name="fit_gaussians_classes"),
        count, part="gaussians_part", inputs={"noise", "latents"}, parameters={"params:gaussians"})
    merge = Node(merge_gaussian_parts, inputs=["noise", "params:gaussians", *parts], outputs=OUTPUTS,
                 name="merge_shards")
    # Namespace `gaussians` keeps the merge out of the shard groups; parts and outputs keep their catalog names.
    return shards + Pipeline([merge], namespace="gaussians", inputs={"noise": "noise", **parts},
                                                outputs=set(OUTPUTS), parameters={"params:gaussians"})
