"""Class shards of the per-class phases (latents, gaussians, d3hr, ld3m with DM).

`shards: K` (conf/base/parameters.yml, read when the graph is built) splits those phases into K namespaced
copies `shard<i>of<K>` over contiguous class ranges plus one merge node per phase (per distilled set) that writes
the very artifact the unsharded pipeline writes. K = 1 builds today's graph. A shard's class range is resolved
at run time from the train split (`class_range`), so the graph depends on K only, never on the data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.graph import bind, graph_parameter

SHARDS_PARAMETER = "shards"


def check_shard_count(value: Any) -> int:
    """`shards` as a positive int, or a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"parameter {SHARDS_PARAMETER}={value!r} must be an int >= 1 (1 = no sharding); "
                         "change it in conf/base/parameters.yml")
    return value


def shard_count() -> int:
    """K from conf/base (the graph is the same in every environment, like `ipcs`)."""
    return check_shard_count(graph_parameter(SHARDS_PARAMETER))


def shard_namespace(index: int, count: int) -> str:
    return f"shard{index}of{count}"


def class_ranges(num_classes: int, count: int) -> list[tuple[int, int]]:
    """K contiguous [start, stop) ranges covering 0..num_classes; sizes differ by at most one (larger first)."""
    check_shard_count(count)
    if count > num_classes:
        raise ValueError(f"parameter {SHARDS_PARAMETER}={count} exceeds the {num_classes} classes of the train split: "
                         f"every shard needs at least one class; set {SHARDS_PARAMETER} <= {num_classes} in "
                         "conf/base/parameters.yml")
    size, extra = divmod(num_classes, count)
    ranges, start = [], 0
    for index in range(count):
        stop = start + size + (1 if index < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def class_range(num_classes: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    """Classes of shard (index, count); None = all classes (the unsharded run)."""
    if shard is None:
        return 0, num_classes
    index, count = shard
    ranges = class_ranges(num_classes, count)
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside 0..{count - 1} ({SHARDS_PARAMETER}={count})")
    return ranges[index]


def check_parts_cover(parts: list[Any], num_classes: int, what: str) -> None:
    """Shard parts (bundles with meta `classes` = [start, stop)) must tile 0..num_classes in order."""
    expected = 0
    for part in parts:
        start, stop = part.meta.get("classes", (None, None))
        if start != expected:
            raise ValueError(f"{what}: shard parts cover classes {[p.meta.get('classes') for p in parts]}, which do "
                             f"not tile 0..{num_classes}; re-run every shard of this phase with the same "
                             f"`{SHARDS_PARAMETER}` (or pin matching versions with --load-versions)")
        expected = stop
    if expected != num_classes:
        raise ValueError(f"{what}: shard parts end at class {expected} but the data has {num_classes} classes; "
                         "re-run every shard on this train split")


def require_same(parts: list[Any], keys: tuple[str, ...], what: str) -> None:
    """Shard parts must agree on the settings and lineage that determine the merged artifact."""
    for key in keys:
        values = {repr(part.meta.get(key)) for part in parts}
        if len(values) > 1:
            raise ValueError(f"{what}: shard parts disagree on {key} ({sorted(values)}); they come from different "
                             "runs or settings: re-run every shard with the same parameters and inputs")


def shard_copies(node_for_shard: Callable[[tuple[int, int]], Node], count: int, *, part: str, inputs: set[str],
                 parameters: set[str], within: str | None = None) -> tuple[Pipeline, dict[str, str]]:
    """K namespaced copies (`shard<i>of<K>[.<within>]`) of one per-class node that writes `part`.

    `node_for_shard((index, count))` builds the node; returns the copies and, for the merge node,
    {"part<i>": the catalog name of shard i's part}.
    """
    def namespace(index: int) -> str:
        return shard_namespace(index, count) + (f".{within}" if within else "")

    copies = [Pipeline([node_for_shard((i, count))], namespace=namespace(i), inputs=inputs, parameters=parameters)
              for i in range(count)]
    return sum(copies, Pipeline([])), {f"part{i}": f"{namespace(i)}.{part}" for i in range(count)}


def per_class_phase(phase: str, *, whole: Callable, per_class: Callable, merge: Callable, inputs: list[str],
                    outputs: list[str], merge_inputs: list[str], shared: set[str], parameters: set[str]) -> Pipeline:
    """A per-class phase as one node (`shards: 1`), or K class-shard copies of `per_class` writing `<phase>_part`
    plus `<phase>.merge_shards`, which writes the very `outputs` of the one node. `merge_inputs` are the merge's
    inputs before the parts; `shared` the inputs every shard reads unnamespaced."""
    count = shard_count()
    if count == 1:
        return Pipeline([Node(whole, inputs=inputs, outputs=outputs, name=whole.__name__)])
    part = f"{phase}_part"
    shards, parts = shard_copies(
        lambda shard: Node(bind(per_class, shard=shard), inputs=inputs, outputs=part, name=per_class.__name__),
        count, part=part, inputs=shared, parameters=parameters)
    node = Node(merge, inputs=[*merge_inputs, *parts], outputs=outputs, name="merge_shards")
    # Namespace `<phase>` keeps the merge out of the shard groups; parts and outputs keep their catalog names.
    unnamespaced = {name: name for name in merge_inputs if not name.startswith("params:")}
    return shards + Pipeline([node], namespace=phase, inputs={**unnamespaced, **parts}, outputs=set(outputs),
                             parameters={name for name in merge_inputs if name.startswith("params:")})
