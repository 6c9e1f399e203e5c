"""`baselines`: the random real subset and the herding coreset per class, in the distilled-set format."""

from diffdistill.pipelines.baselines.pipeline import create_pipeline

__all__ = ["create_pipeline"]
