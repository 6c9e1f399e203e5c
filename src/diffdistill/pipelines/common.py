"""Small adapters shared by the nodes of several pipelines."""

from __future__ import annotations

from functools import partial, update_wrapper
from pathlib import Path
from typing import Any


def as_mlflow_metrics(values: dict[str, float], step: int = 0) -> dict[str, dict[str, Any]]:
    """{name: value} -> the {name: {"value", "step"}} form kedro-mlflow's metric datasets take."""
    return {name: {"value": float(value), "step": int(step)} for name, value in values.items()}


def as_mlflow_history(history: dict[str, list[float]]) -> dict[str, list[dict[str, Any]]]:
    """{name: [v0, v1, ...]} -> one MLflow metric per name with one step per entry."""
    return {name: [{"value": float(v), "step": i} for i, v in enumerate(values)]
            for name, values in history.items() if values}


def set_names(methods: list[str], ipcs: list[int]) -> list[str]:
    """Namespaces of distilled sets: `<method>_ipc<N>`."""
    return [f"{method}_ipc{ipc}" for method in methods for ipc in ipcs]


def base_parameters(key: str) -> Any:
    """A value from conf/base parameters, read when pipelines are built (which sets exist is part of the graph).

    Environments change sizes and settings at run time; the set of namespaces is fixed by conf/base so
    that `kedro viz`, `kedro airflow` and every environment see the same graph.
    """
    from kedro.config import OmegaConfigLoader
    from kedro.framework.project import settings
    from kedro.utils import find_kedro_project

    project = find_kedro_project(Path.cwd()) or Path.cwd()
    loader = OmegaConfigLoader(conf_source=str(project / settings.CONF_SOURCE), base_env="base",
                               default_run_env="base")
    value: Any = loader["parameters"]
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"conf/base parameters have no {key!r} (missing {part!r}); add it to conf/base/parameters_*.yml")
        value = value[part]
    return value


def classifier_to_bundle(model: Any, meta: dict[str, Any]) -> Any:
    """A trained `NormalizedClassifier` as a TensorBundle (state dict + what rebuilds the net)."""
    from diffdistill.data.bundle import TensorBundle

    required = {"arch", "in_channels", "num_classes", "image_size"}
    missing = required - set(meta)
    if missing:
        raise ValueError(f"classifier metadata lacks {sorted(missing)}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return TensorBundle(state, {"kind": "classifier", "net_overrides": {}, **meta})


def classifier_from_bundle(bundle: Any, device: str = "cpu") -> Any:
    """Rebuild the `NormalizedClassifier` saved by `classifier_to_bundle`, in eval mode."""
    import torch

    from diffdistill.evaluation import NormalizedClassifier
    from diffdistill.nets import build_net

    meta = bundle.meta
    if meta.get("kind") != "classifier":
        raise ValueError(f"expected a classifier artifact, got one of kind {meta.get('kind')!r}")
    missing = sorted({"arch", "in_channels", "num_classes", "image_size"} - set(meta))
    if missing:
        raise ValueError(f"classifier artifact metadata lacks {missing}; re-run the pipeline that trained it")
    net = build_net(meta["arch"], meta["in_channels"], meta["num_classes"], meta["image_size"],
                    **meta.get("net_overrides", {}))
    channels = int(meta["in_channels"])
    model = NormalizedClassifier(net, torch.zeros(channels), torch.ones(channels))
    try:
        model.load_state_dict(bundle.tensors)
    except RuntimeError as exc:  # missing / unexpected / reshaped weights
        raise ValueError(
            f"classifier artifact weights do not fit the net arch={meta['arch']!r}, in_channels={meta['in_channels']}, "
            f"num_classes={meta['num_classes']}, image_size={meta['image_size']} (its metadata or tensors were edited, "
            f"or come from different versions); re-run the pipeline that trained it. Details: {exc}") from exc
    return model.to(device).eval()


def check_classifier_fits(classifier: Any, split: Any, name: str, split_name: str) -> None:
    """Refuse a saved classifier (teacher / judge) made for other data than `split` (another run's version)."""
    meta = classifier.meta
    made = (meta.get("in_channels"), meta.get("image_size"), meta.get("num_classes"))
    here = (int(split["images"].shape[1]), int(split["images"].shape[-1]), split.num_classes)
    if made != here:
        raise ValueError(
            f"{name} was trained on {made[0]}-channel {made[1]}-px images with {made[2]} classes but {split_name} "
            f"has {here[0]}-channel {here[1]}-px images with {here[2]} classes; re-run the teacher pipeline on this "
            "data, or pin matching versions with --load-versions")


def bind(func: Any, **kwargs: Any) -> Any:
    """functools.partial that keeps the function's name and docs (Kedro and kedro-viz show them)."""
    return update_wrapper(partial(func, **kwargs), func)


def require_same_prior(bundle: Any, prior_fingerprint: str, name: str) -> None:
    """Refuse an artifact made with another prior than the one loaded now (lineage check)."""
    made_with = bundle.meta.get("prior_fingerprint")
    if made_with != prior_fingerprint:
        raise ValueError(
            f"{name} was made with prior {made_with} but the loaded prior_model is {prior_fingerprint}; "
            f"re-run the pipeline that produces {name} with this prior, or pin the matching versions with "
            "--load-versions (see `kedro lineage show " + name + "`)")


def real_split_meta(train_set: Any) -> dict[str, Any]:
    """What every distilled set carries from the real split: classes, source, normalisation statistics."""
    from diffdistill.evaluation import channel_stats

    mean, std = channel_stats(train_set["images"])
    return {"class_names": train_set.class_names, "num_classes": train_set.num_classes,
            "source": train_set.meta.get("source"), "mean": mean.tolist(), "std": std.tolist()}
