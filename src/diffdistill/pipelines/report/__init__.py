"""`report`: one comparison table (markdown, HTML, CSV) and a bar plot over every evaluated set."""

from diffdistill.pipelines.report.pipeline import create_pipeline

__all__ = ["create_pipeline"]
