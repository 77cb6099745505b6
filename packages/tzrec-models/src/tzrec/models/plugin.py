"""tzrec-models' plugin: models, sequence encoders, losses and metrics by config name."""

from tzrec.core.hookspecs import Register, hookimpl

_SEQUENCE_ENCODERS = {
    "din_encoder": "tzrec.models.modules.sequence:DINEncoder",
    "simple_attention": "tzrec.models.modules.sequence:SimpleAttention",
    "pooling_encoder": "tzrec.models.modules.sequence:PoolingEncoder",
    "multi_window_din_encoder": "tzrec.models.modules.sequence:MultiWindowDINEncoder",
    "self_attention_encoder": "tzrec.models.modules.sequence:SelfAttentionEncoder",
}

_LOSSES = {
    "binary_cross_entropy": "tzrec.models.losses.losses:BinaryCrossEntropy",
    "softmax_cross_entropy": "tzrec.models.losses.losses:SoftmaxCrossEntropy",
    "l2_loss": "tzrec.models.losses.losses:L2Loss",
    "jrc_loss": "tzrec.models.losses.losses:JRCLoss",
    "binary_focal_loss": "tzrec.models.losses.losses:BinaryFocalLoss",
}

_METRICS = {
    "auc": "tzrec.models.metrics.classification:AUC",
    "multiclass_auc": "tzrec.models.metrics.classification:MulticlassAUC",
    "recall_at_k": "tzrec.models.metrics.recall_at_k:RecallAtK",
    "mean_absolute_error": "tzrec.models.metrics.classification:MeanAbsoluteError",
    "mean_squared_error": "tzrec.models.metrics.classification:MeanSquaredError",
    "accuracy": "tzrec.models.metrics.classification:Accuracy",
    "grouped_auc": "tzrec.models.metrics.grouped_auc:GroupedAUC",
}


_MODELS = {
    "dssm": "tzrec.models.models.match:DSSM",
    "multi_tower": "tzrec.models.models.rank:MultiTower",
    "multi_tower_din": "tzrec.models.models.rank:MultiTowerDIN",
}


@hookimpl
def register_models(register: Register) -> None:
    """Models by ``ModelConfig`` oneof name."""
    for name, target in _MODELS.items():
        register(name, target)


@hookimpl
def register_sequence_encoders(register: Register) -> None:
    """Sequence encoders by ``SeqEncoderConfig`` oneof name."""
    for name, target in _SEQUENCE_ENCODERS.items():
        register(name, target)


@hookimpl
def register_losses(register: Register) -> None:
    """Losses by ``LossConfig`` oneof name."""
    for name, target in _LOSSES.items():
        register(name, target)


@hookimpl
def register_metrics(register: Register) -> None:
    """Metrics by ``MetricConfig`` oneof name (training metrics use the same names)."""
    for name, target in _METRICS.items():
        register(name, target)
