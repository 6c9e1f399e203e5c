"""`experts`: MTT expert trajectories (one flat parameter snapshot per epoch) trained on the real train split."""

from diffdistill.pipelines.experts.pipeline import create_pipeline

__all__ = ["create_pipeline"]
