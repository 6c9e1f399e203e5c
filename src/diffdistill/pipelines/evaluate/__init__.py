"""`evaluate`: train unseen architectures from scratch on each distilled set; mean ± std over seeds."""

from diffdistill.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
