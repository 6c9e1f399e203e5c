"""`report` pipeline."""

import warnings

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.evaluate.pipeline import evaluated_sets
from diffdistill.pipelines.graph import graph_parameter
from diffdistill.pipelines.ld3m.params import set_name
from diffdistill.pipelines.ld3m.pipeline import ld3m_runs
from diffdistill.pipelines.report.nodes import build_report, gradient_snr_plot


def residual_pairs() -> list[str]:
    """`<set>.ld3m_gradients` of every (objective, IPC) that runs both with (`latent`) and without the residual."""
    runs = set(ld3m_runs())
    objectives = [o for o, space, variant in runs if space == "latent" and not variant
                  and (o, "no_residual", None) in runs]
    return [f"{set_name(o, space, int(ipc))}.ld3m_gradients" for o in sorted(objectives)
            for ipc in graph_parameter("ipcs") for space in ("latent", "no_residual")]


def create_pipeline(**kwargs) -> Pipeline:
    results = ["full.eval_results"] + [f"{name}.eval_results" for name in evaluated_sets()]
    pairs = residual_pairs()
    # The report reads one output of every set's namespace (`<set>.eval_results`): a cross-namespace read by design,
    # which Kedro's "'.' in dataset names" warning (meant for hand-written dotted names) would flag on every run.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"One or more dataset names contain '\.' characters")
        snr = [Node(gradient_snr_plot, inputs=["params:ld3m", *pairs], outputs="report_gradient_snr",
                    name="gradient_snr_plot")] if pairs else []  # Fig. 7 needs latent and no_residual runs
        report = Node(build_report, inputs=["params:evaluate", "lineage_costs", *results],
                      outputs=["report_table_markdown", "report_table_html", "report_table_csv", "report_plot",
                               "report_summary"], name="build_report")
    return Pipeline([report, *snr])
