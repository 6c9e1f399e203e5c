"""`latents` pipeline; with `shards: K` > 1, one `shard<i>of<K>` copy per class range and `latents.merge_shards`."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.graph import bind
from diffdistill.pipelines.latents.nodes import encode_and_invert, encode_and_invert_classes, merge_latent_parts
from diffdistill.pipelines.sharding import shard_copies, shard_count

INPUTS = ["train_set", "prior_model", "params:latents", "params:device"]
OUTPUTS = ["latents", "noise", "latents_report", "latents_metrics"]
PARAMETERS = {"params:latents", "params:device"}


def create_pipeline(**kwargs) -> Pipeline:
    count = shard_count()
    if count == 1:
        return Pipeline([Node(encode_and_invert, inputs=INPUTS, outputs=OUTPUTS, name="encode_and_invert")])
    shards, parts = shard_copies(
        lambda shard: Node(bind(encode_and_invert_classes, shard=shard), inputs=INPUTS, outputs="latents_part",
                           name="encode_and_invert_classes"),
        count, part="latents_part", inputs={"train_set", "prior_model"}, parameters=PARAMETERS)
    merge = Node(merge_latent_parts, inputs=INPUTS + list(parts), outputs=OUTPUTS, name="merge_shards")
    # Namespace `latents` keeps the merge out of the shard groups; parts and outputs keep their catalog names.
    return shards + Pipeline(
        [merge], namespace="latents", inputs={"train_set": "train_set", "prior_model": "prior_model", **parts},
        outputs=set(OUTPUTS), parameters=PARAMETERS)
