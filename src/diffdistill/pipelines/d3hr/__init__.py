"""`d3hr`: group sampling from the class Gaussians, DDIM sampling, decoding (D3HR)."""

from diffdistill.pipelines.d3hr.pipeline import create_pipeline

__all__ = ["create_pipeline"]
