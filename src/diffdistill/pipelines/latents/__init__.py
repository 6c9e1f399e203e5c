"""`latents`: encode the train split per class, DDIM-invert to noise, report the round-trip error."""

from diffdistill.pipelines.latents.pipeline import create_pipeline

__all__ = ["create_pipeline"]
