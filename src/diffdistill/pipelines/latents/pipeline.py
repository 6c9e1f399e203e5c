"""`latents` pipeline; with `shards: K` > 1, one `shard<i>of<K>` copy per class range and `latents.merge_shards`."""

from kedro.pipeline import Pipeline

from diffdistill.pipelines.latents.nodes import encode_and_invert, encode_and_invert_classes, merge_latent_parts
from diffdistill.pipelines.sharding import per_class_phase

INPUTS = ["train_set", "prior_model", "params:latents", "params:device"]


def create_pipeline(**kwargs) -> Pipeline:
    return per_class_phase("latents", whole=encode_and_invert, per_class=encode_and_invert_classes,
                           merge=merge_latent_parts, inputs=INPUTS,
                           outputs=["latents", "noise", "latents_report", "latents_metrics"], merge_inputs=INPUTS,
                           shared={"train_set", "prior_model"}, parameters={"params:latents", "params:device"})
