"""`report` pipeline."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.evaluate.pipeline import evaluated_sets
from diffdistill.pipelines.report.nodes import build_report


def create_pipeline(**kwargs) -> Pipeline:
    results = ["full.eval_results"] + [f"{name}.eval_results" for name in evaluated_sets()]
    return Pipeline([
        Node(build_report, inputs=["params:evaluate", *results],
             outputs=["report_table_markdown", "report_table_html", "report_table_csv", "report_plot",
                      "report_summary"], name="build_report"),
    ])
