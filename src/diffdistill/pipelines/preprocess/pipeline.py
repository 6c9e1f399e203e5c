"""`preprocess` pipeline."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.preprocess.nodes import load_raw_source, summarise_report


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(load_raw_source, inputs="params:preprocess", outputs=["train_set", "test_set", "data_report"],
             name="load_raw_source"),
        Node(summarise_report, inputs="data_report", outputs="data_metrics", name="summarise_data_report"),
    ])
