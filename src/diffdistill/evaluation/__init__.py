"""Train-from-scratch evaluation of (distilled) train sets under named protocols, and the shared training loop."""

from diffdistill.evaluation.protocols import (
    PROTOCOL_NAMES,
    PROTOCOLS,
    ProtocolConfig,
    get_protocol,
    lr_at,
)
from diffdistill.evaluation.train import (
    NormalizedClassifier,
    WeightEMA,
    channel_stats,
    evaluate_accuracy,
    fit,
    normalization_for,
    soft_label_loss,
    train_and_evaluate,
    train_classifier,
)

__all__ = [
    "PROTOCOLS",
    "PROTOCOL_NAMES",
    "NormalizedClassifier",
    "ProtocolConfig",
    "WeightEMA",
    "channel_stats",
    "evaluate_accuracy",
    "fit",
    "get_protocol",
    "lr_at",
    "normalization_for",
    "soft_label_loss",
    "train_and_evaluate",
    "train_classifier",
]
