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
    net = build_net(meta["arch"], int(meta["in_channels"]), int(meta["num_classes"]), int(meta["image_size"]),
                    **meta.get("net_overrides", {}))
    channels = int(meta["in_channels"])
    model = NormalizedClassifier(net, torch.zeros(channels), torch.ones(channels))
    model.load_state_dict(bundle.tensors)
    return model.to(device).eval()


def bind(func: Any, **kwargs: Any) -> Any:
    """functools.partial that keeps the function's name and docs (Kedro and kedro-viz show them)."""
    return update_wrapper(partial(func, **kwargs), func)


def module_fingerprint(module: Any) -> str:
    """sha256 (16 hex) over a module's state: identifies the exact prior an artifact was made with."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def data_fingerprint(bundle: Any) -> str:
    """sha256 (16 hex) over a split's images and labels: identifies the exact data an artifact was made from."""
    import hashlib

    digest = hashlib.sha256(bundle["images"].contiguous().numpy().tobytes())
    digest.update(bundle["labels"].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def bundle_fingerprint(bundle: Any) -> str:
    """sha256 (16 hex) over every tensor of a bundle (names included)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(bundle.tensors):
        digest.update(name.encode())
        digest.update(bundle[name].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def require_same_prior(bundle: Any, prior_fingerprint: str, name: str) -> None:
    """Refuse an artifact made with another prior than the one loaded now (lineage check)."""
    made_with = bundle.meta.get("prior_fingerprint")
    if made_with != prior_fingerprint:
        raise ValueError(
            f"{name} was made with prior {made_with} but the loaded prior_model is {prior_fingerprint}; "
            f"re-run the pipeline that produces {name} with this prior, or pin the matching versions with "
            "--load-versions (see `kedro lineage show " + name + "`)")


def scratch_dir(kind: str, *keys: Any) -> Path:
    """Resumable work state (training checkpoints) keyed by what determines the result.

    Not a catalog artifact: it only lets a killed run resume; finished runs delete it.
    """
    import hashlib
    import json

    key = hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path("data") / "checkpoints" / kind / key


def real_split_meta(train_set: Any) -> dict[str, Any]:
    """What every distilled set carries from the real split: classes, source, normalisation statistics."""
    from diffdistill.evaluation import channel_stats

    mean, std = channel_stats(train_set["images"])
    return {"class_names": train_set.class_names, "num_classes": train_set.num_classes,
            "source": train_set.meta.get("source"), "mean": mean.tolist(), "std": std.tolist()}


class ResumableResults:
    """Finished units of a long node (one JSON file each, written atomically) so a killed run resumes.

    `directory` comes from `scratch_dir(...)` keyed by everything that determines the results; the
    node calls `clear()` once its outputs are returned to the catalog.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
        return self.directory / f"{safe}.json"

    def get(self, key: str) -> Any:
        import json

        path = self._path(key)
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, key: str, value: Any) -> None:
        import json
        import os

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(json.dumps(value, sort_keys=True))
        os.replace(tmp, path)

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)
