"""What a distilled set carries from the real split, and the lineage check that an artifact fits the loaded prior."""

from __future__ import annotations

from typing import Any

# The `prior_model` artifact, a `diffdistill.prior.LatentPrior`. Node signatures name it by this alias, so Kedro can
# resolve their type hints while the prior (diffusers) is imported only by the nodes that run.
PriorModel = Any


def real_split_meta(train_set: Any) -> dict[str, Any]:
    """What every distilled set carries from the real split: classes, source, normalisation statistics."""
    from diffdistill.evaluation import channel_stats

    mean, std = channel_stats(train_set["images"])
    return {"class_names": train_set.class_names, "num_classes": train_set.num_classes,
            "source": train_set.meta.get("source"), "mean": mean.tolist(), "std": std.tolist()}


def require_same_prior(bundle: Any, prior_fingerprint: str, name: str) -> None:
    """Refuse an artifact made with another prior than the one loaded now (lineage check)."""
    made_with = bundle.meta.get("prior_fingerprint")
    if made_with != prior_fingerprint:
        raise ValueError(
            f"{name} was made with prior {made_with} but the loaded prior_model is {prior_fingerprint}; "
            f"re-run the pipeline that produces {name} with this prior, or pin the matching versions with "
            "--load-versions (see `kedro lineage show " + name + "`)")
