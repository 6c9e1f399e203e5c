"""`gaussians` pipeline; with `shards: K` > 1, one `shard<i>of<K>` copy per class range and `gaussians.merge_shards`."""

from kedro.pipeline import Pipeline

from diffdistill.pipelines.gaussians.nodes import fit_gaussians_classes, fit_noise_gaussians, merge_gaussian_parts
from diffdistill.pipelines.sharding import per_class_phase


def create_pipeline(**kwargs) -> Pipeline:
    return per_class_phase("gaussians", whole=fit_noise_gaussians, per_class=fit_gaussians_classes,
                           merge=merge_gaussian_parts, inputs=["noise", "latents", "params:gaussians"],
                           outputs=["class_gaussians", "normality_report", "gaussians_metrics"],
                           merge_inputs=["noise", "params:gaussians"], shared={"noise", "latents"},
                           parameters={"params:gaussians"})
