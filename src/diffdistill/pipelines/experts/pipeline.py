"""`experts` pipeline: one versioned bundle of E expert trajectories for MTT (LD3M and pixel space)."""

from kedro.pipeline import Node, Pipeline

from diffdistill.pipelines.experts.nodes import train_expert_trajectories


def create_pipeline(**kwargs) -> Pipeline:
    from diffdistill.pipelines.ld3m.pipeline import ld3m_runs

    if not any(objective == "mtt" for objective, _, _ in ld3m_runs()):
        return Pipeline([])  # no MTT set in this environment's graph: no trajectories to train
    return Pipeline([
        Node(train_expert_trajectories, inputs=["train_set", "params:experts", "params:device"],
             outputs=["expert_trajectories", "experts_metrics"], name="train_expert_trajectories"),
    ])
