"""Nodes of the `teacher` pipeline (the training loop is imported inside the node: building the graph stays
light)."""

from __future__ import annotations

from typing import Any

from diffdistill.config import build
from diffdistill.data.bundle import TensorBundle
from diffdistill.pipelines.metrics import as_mlflow_history, as_mlflow_metrics


def train_teacher(train_set: TensorBundle, test_set: TensorBundle, params: dict[str, Any],
                  device: str) -> tuple[TensorBundle, dict[str, Any]]:
    """Train `params.arch` on the real train split; score it once on the test split after the last epoch."""
    from diffdistill.evaluation import evaluate_accuracy, get_protocol, train_classifier
    from diffdistill.evaluation.config import TeacherConfig
    from diffdistill.evaluation.saved import classifier_to_bundle

    config = build(TeacherConfig, params, "teacher")
    protocol = get_protocol(config.protocol, path="teacher.protocol_overrides", **config.protocol_overrides)
    model = train_classifier(train_set, arch=config.arch, protocol=protocol, seed=config.seed,
                             device=device, allow_unbalanced=True)
    accuracy, _ = evaluate_accuracy(model, test_set["images"], test_set["labels"], device=device)
    images = train_set["images"]
    bundle = classifier_to_bundle(model, {
        "arch": config.arch, "in_channels": int(images.shape[1]), "num_classes": train_set.num_classes,
        "image_size": int(images.shape[-1]), "class_names": train_set.class_names, "protocol": protocol.to_dict(),
        "seed": config.seed, "test_accuracy": accuracy,
    })
    history = model.training_history
    metrics = {**as_mlflow_metrics({"test_accuracy": accuracy}),
               **as_mlflow_history({"train_loss": history.get("train_loss", [])})}
    return bundle, metrics
