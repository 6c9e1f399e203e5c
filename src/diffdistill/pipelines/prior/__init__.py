"""`prior`: load a local diffusers prior or train one here; score its reconstruction and class fidelity."""

from diffdistill.pipelines.prior.pipeline import create_pipeline

__all__ = ["create_pipeline"]
