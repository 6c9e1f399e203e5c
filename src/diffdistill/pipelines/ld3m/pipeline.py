"""`ld3m` pipeline: one namespace per (objective, space, IPC), e.g. `ld3m_dm_latent_ipc1`.

Which (objective, space) pairs exist is `ld3m.runs` in conf/base (read when the graph is built, like `ipcs`).
"""

from kedro.pipeline import Node, Pipeline

from diffdistill.distill.ld3m import SPACE_SPECS
from diffdistill.pipelines.graph import bind, graph_parameter, set_names
from diffdistill.pipelines.ld3m.nodes import distill_ld3m_classes, distill_ld3m_set, merge_ld3m_parts
from diffdistill.pipelines.ld3m.params import check_run, method_name, set_name
from diffdistill.pipelines.sharding import shard_copies, shard_count

OUTPUTS = ["distilled_set", "distilled_grid", "ld3m_state", "ld3m_history", "ld3m_gradients"]
PARAMETERS = {"params:ld3m", "params:device"}


def ld3m_runs() -> list[tuple[str, str, str | None]]:
    """(objective, space, variant or None) of conf/base `ld3m.runs`, checked. A run without `variant` uses
    `ld3m.sampler.variant` (the reproduction default); one with it is an extra set suffixed with its name."""
    runs = []
    for entry in graph_parameter("ld3m.runs"):
        if not isinstance(entry, dict) or not {"objective", "space"} <= set(entry) <= {"objective", "space",
                                                                                     "variant"}:
            raise ValueError("ld3m.runs entries look like {objective: dm, space: latent} or "
                             f"{{objective: dm, space: latent, variant: eq12}}, got {entry!r}")
        check_run(entry["objective"], entry["space"], entry.get("variant"))
        runs.append((entry["objective"], entry["space"], entry.get("variant")))
    if len(set(runs)) != len(runs):
        raise ValueError(f"ld3m.runs lists a run twice: {runs}")
    return runs


def ld3m_methods() -> list[str]:
    """Method names (`ld3m_<objective>_<space>[_<variant>]`); the evaluate pipeline adds `_ipc<N>`."""
    return [method_name(objective, space, variant) for objective, space, variant in ld3m_runs()]


def ld3m_sets() -> list[str]:
    return set_names(ld3m_methods(), [int(i) for i in graph_parameter("ipcs")])


def _sharded(objective: str, space: str, variant: str | None, ipc: int, inputs: dict[str, str],
             count: int) -> Pipeline:
    """K class shards of one DM set (`shard<i>of<K>.<set>.distill_ld3m_classes`) and `<set>.merge_shards`."""
    name = set_name(objective, space, ipc, variant)
    run = {"objective": objective, "space": space, "ipc": ipc, **({"variant": variant} if variant else {})}
    shared = {value for value in inputs.values() if not value.startswith("params:")}
    shards, parts = shard_copies(
        lambda shard: Node(bind(distill_ld3m_classes, **run, shard=shard),
                           inputs=inputs, outputs="ld3m_part", name="distill_ld3m_classes"),
        count, part="ld3m_part", inputs=shared, parameters=PARAMETERS, within=name)
    merge = Node(bind(merge_ld3m_parts, **run),
                 inputs=["train_set", "params:ld3m", "params:device", *parts], outputs=OUTPUTS, name="merge_shards")
    return shards + Pipeline([merge], namespace=name, inputs={"train_set": "train_set", **parts},
                                                parameters=PARAMETERS)


def create_pipeline(**kwargs) -> Pipeline:
    """One namespace per set; with `shards: K` > 1 the DM sets (classes independent) run as K class shards."""
    ipcs = [int(i) for i in graph_parameter("ipcs")]
    count = shard_count()
    pipelines = []
    for objective, space, variant in ld3m_runs():
        inputs = {"train_set": "train_set", "params": "params:ld3m", "device": "params:device"}
        if SPACE_SPECS[space].uses_prior:
            inputs["prior_model"] = "prior_model"
        if objective == "mtt":
            inputs["expert_trajectories"] = "expert_trajectories"
        shared = {name for key, name in inputs.items() if not name.startswith("params:")}
        for ipc in ipcs:
            if count > 1 and objective == "dm":
                pipelines.append(_sharded(objective, space, variant, ipc, inputs, count))
                continue
            run = {"objective": objective, "space": space, "ipc": ipc, **({"variant": variant} if variant else {})}
            node = Node(bind(distill_ld3m_set, **run), inputs=inputs, outputs=OUTPUTS, name="distill_ld3m_set")
            pipelines.append(Pipeline([node], namespace=set_name(objective, space, ipc, variant), inputs=shared,
                                      parameters=PARAMETERS))
    return sum(pipelines, Pipeline([]))
