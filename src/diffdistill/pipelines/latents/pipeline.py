"""`latents` pipeline; with `shards: K` > 1, one `shard<i>of<K>` copy per class range and `latents.merge_shards`."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.common import bind
from diffdistill.pipelines.latents.nodes import encode_and_invert, encode_and_invert_classes, merge_latent_parts
from diffdistill.pipelines.sharding import shard_count, shard_namespace

INPUTS = ["train_set", "prior_model", "params:latents", "params:device"]
OUTPUTS = ["latents", "noise", "latents_report", "latents_metrics"]
PARAMETERS = {"params:latents", "params:device"}


def create_pipeline(**kwargs) -> Pipeline:
    count = shard_count()
    if count == 1:
        return Pipeline([Node(encode_and_invert, inputs=INPUTS, outputs=OUTPUTS, name="encode_and_invert")])
    shards = [Pipeline([Node(bind(encode_and_invert_classes, shard=(i, count)), inputs=INPUTS, outputs="latents_part",
                             name="encode_and_invert_classes")],
                       namespace=shard_namespace(i, count), inputs={"train_set", "prior_model"}, parameters=PARAMETERS)
              for i in range(count)]
    parts = {f"part{i}": f"{shard_namespace(i, count)}.latents_part" for i in range(count)}
    merge = Node(merge_latent_parts, inputs=INPUTS + list(parts), outputs=OUTPUTS, name="merge_shards")
    # Namespace `latents` keeps the merge out of the shard groups; parts and outputs keep their catalog names.
    return sum(shards, Pipeline([])) + Pipeline(
        [merge], namespace="latents", inputs={"train_set": "train_set", "prior_model": "prior_model", **parts},
        outputs=set(OUTPUTS), parameters=PARAMETERS)
