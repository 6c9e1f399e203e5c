"""`preprocess`: a raw source -> versioned uint8 train/test tensors and a data report."""

from diffdistill.pipelines.preprocess.pipeline import create_pipeline

__all__ = ["create_pipeline"]
