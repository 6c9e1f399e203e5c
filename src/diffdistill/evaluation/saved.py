"""A trained classifier (teacher, judge) as a TensorBundle artifact and back, and the check that it fits a split."""

from __future__ import annotations

from typing import Any

import torch

from diffdistill.data.bundle import TensorBundle
from diffdistill.evaluation.train import NormalizedClassifier
from diffdistill.nets import build_net


def classifier_to_bundle(model: Any, meta: dict[str, Any]) -> Any:
    """A trained `NormalizedClassifier` as a TensorBundle (state dict + what rebuilds the net)."""
    required = {"arch", "in_channels", "num_classes", "image_size"}
    missing = required - set(meta)
    if missing:
        raise ValueError(f"classifier metadata lacks {sorted(missing)}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return TensorBundle(state, {"kind": "classifier", "net_overrides": {}, **meta})


def classifier_from_bundle(bundle: Any, device: str = "cpu") -> Any:
    """Rebuild the `NormalizedClassifier` saved by `classifier_to_bundle`, in eval mode."""
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
