"""Metrics by ``MetricConfig`` oneof name, each built as ``cls(config, num_class=1)``."""

from tzrec.models.metrics.classification import (
    AUC,
    Accuracy,
    DecayAUC,
    MeanAbsoluteError,
    MeanSquaredError,
    MulticlassAUC,
)
from tzrec.models.metrics.factory import (
    TrainMetricWrapper,
    create_metric,
    create_train_metric,
    metric_name,
)
from tzrec.models.metrics.grouped_auc import GroupedAUC
from tzrec.models.metrics.recall_at_k import RecallAtK

__all__ = [
    "AUC",
    "Accuracy",
    "DecayAUC",
    "GroupedAUC",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "MulticlassAUC",
    "RecallAtK",
    "TrainMetricWrapper",
    "create_metric",
    "create_train_metric",
    "metric_name",
]
