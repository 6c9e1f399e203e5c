"""`gaussians`: per-class diagonal Gaussians of the inverted noise (D3HR's whole "dataset" in a few KB)."""

from diffdistill.pipelines.gaussians.pipeline import create_pipeline

__all__ = ["create_pipeline"]
