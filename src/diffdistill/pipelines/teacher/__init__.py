"""`teacher`: a classifier trained on the real train split (soft labels, herding features, fidelity judge)."""

from diffdistill.pipelines.teacher.pipeline import create_pipeline

__all__ = ["create_pipeline"]
