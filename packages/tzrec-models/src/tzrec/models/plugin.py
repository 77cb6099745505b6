"""tzrec-models' plugin: models, sequence encoders, losses and metrics by config name."""

from tzrec.core.hookspecs import Declare, Register, hookimpl

_SEQUENCE_ENCODERS = {
    "din_encoder": "tzrec.models.modules.sequence:DINEncoder",
    "simple_attention": "tzrec.models.modules.sequence:SimpleAttention",
    "pooling_encoder": "tzrec.models.modules.sequence:PoolingEncoder",
    "multi_window_din_encoder": "tzrec.models.modules.sequence:MultiWindowDINEncoder",
    "self_attention_encoder": "tzrec.models.modules.sequence:SelfAttentionEncoder",
}

_LOSSES = {
    "binary_cross_entropy": "tzrec.models.losses:BinaryCrossEntropy",
    "softmax_cross_entropy": "tzrec.models.losses:SoftmaxCrossEntropy",
    "l2_loss": "tzrec.models.losses:L2Loss",
    "jrc_loss": "tzrec.models.losses:JRCLoss",
    "binary_focal_loss": "tzrec.models.losses:BinaryFocalLoss",
}

_METRICS = {
    "auc": "tzrec.models.metrics.classification:AUC",
    "multiclass_auc": "tzrec.models.metrics.classification:MulticlassAUC",
    "recall_at_k": "tzrec.models.metrics.recall_at_k:RecallAtK",
    "mean_absolute_error": "tzrec.models.metrics.classification:MeanAbsoluteError",
    "mean_squared_error": "tzrec.models.metrics.classification:MeanSquaredError",
    "accuracy": "tzrec.models.metrics.classification:Accuracy",
    "grouped_auc": "tzrec.models.metrics.grouped_auc:GroupedAUC",
    "xauc": "tzrec.models.metrics.xauc:XAUC",
    "grouped_xauc": "tzrec.models.metrics.xauc:GroupedXAUC",
    "normalized_entropy": "tzrec.models.metrics.normalized_entropy:NormalizedEntropy",
}


_MODELS = {
    "dssm": "tzrec.models.match:DSSM",
    "multi_tower": "tzrec.models.rank:MultiTower",
    "multi_tower_din": "tzrec.models.rank:MultiTowerDIN",
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


#: Config fields tzrec-models reads and honours (groups, models, modules, losses, metrics).
#: Add a field here in the commit that implements it; a set field that no package declares
#: is refused at validation.
SUPPORTED_FIELDS = (
    "ModelConfig.feature_groups",
    "ModelConfig.dssm",
    "ModelConfig.multi_tower",
    "ModelConfig.multi_tower_din",
    "ModelConfig.num_class>0",
    "ModelConfig.losses",
    "ModelConfig.metrics",
    # feature selection by learned dropout (tzrec.models.modules.variational_dropout)
    "ModelConfig.variational_dropout",
    "VariationalDropout.regularization_lambda",
    "VariationalDropout.embedding_wise_variational_dropout",
    "FeatureGroupConfig.group_name",
    "FeatureGroupConfig.feature_names",
    "FeatureGroupConfig.group_type",
    "FeatureGroupConfig.sequence_groups",
    "FeatureGroupConfig.sequence_encoders",
    "FeatureGroupConfig.embedding_name_suffix",
    "SeqGroupConfig.group_name",
    "SeqGroupConfig.feature_names",
    "SeqGroupConfig.embedding_name_suffix",
    # embedding tables (tzrec.models.layout): storage precision FP32/FP16, others refused
    "IdFeature.data_type",
    "RawFeature.data_type",
    # frozen tables (trainable: false): the engine gives them SGD with lr 0, as upstream
    "IdFeature.trainable",
    "RawFeature.trainable",
    # zero-collision hashing (torchrec MCH modules; threshold_filtering_func is refused)
    "IdFeature.zch",
    "ZeroCollisionHash.zch_size>0",
    "ZeroCollisionHash.eviction_interval>0",
    "ZeroCollisionHash.lfu",
    "ZeroCollisionHash.lru",
    "ZeroCollisionHash.distance_lfu",
    "LRU_EvictionPolicy.decay_exponent",
    "DistanceLFU_EvictionPolicy.decay_exponent",
    # modules
    "MLP.hidden_units>0",
    "MLP.dropout_ratio",
    "MLP.activation",
    "MLP.use_bn",
    "MLP.bias",
    "MLP.use_ln",
    "Tower.input",
    "Tower.mlp",
    "DINTower.input",
    "DINTower.attn_mlp",
    # models
    "DSSM.user_tower",
    "DSSM.item_tower",
    "DSSM.output_dim>0",
    "DSSM.similarity",
    "DSSM.temperature",
    "DSSM.in_batch_negative",
    "MultiTower.towers",
    "MultiTower.final",
    "MultiTowerDIN.towers",
    "MultiTowerDIN.din_towers",
    "MultiTowerDIN.final",
    # sequence encoders (DEEP groups' sequence_encoders, see tzrec.models.layout)
    "SeqEncoderConfig.din_encoder",
    "SeqEncoderConfig.simple_attention",
    "SeqEncoderConfig.pooling_encoder",
    "SeqEncoderConfig.multi_window_din_encoder",
    "SeqEncoderConfig.self_attention_encoder",
    "DINEncoder.input",
    "DINEncoder.attn_mlp",
    "DINEncoder.max_seq_length",
    "SimpleAttention.input",
    "SimpleAttention.max_seq_length",
    "PoolingEncoder.input",
    "PoolingEncoder.pooling_type",
    "PoolingEncoder.max_seq_length",
    "MultiWindowDINEncoder.input",
    "MultiWindowDINEncoder.attn_mlp",
    "MultiWindowDINEncoder.windows_len>0",
    "SelfAttentionEncoder.input",
    "SelfAttentionEncoder.multihead_attn_dim>0",
    "SelfAttentionEncoder.num_heads>0",
    "SelfAttentionEncoder.dropout",
    "SelfAttentionEncoder.max_seq_length",
    # losses
    "LossConfig.binary_cross_entropy",
    "LossConfig.softmax_cross_entropy",
    "LossConfig.l2_loss",
    "LossConfig.jrc_loss",
    "LossConfig.binary_focal_loss",
    "BinaryCrossEntropy.label_smoothing",
    "SoftmaxCrossEntropy.label_smoothing",
    "JRCLoss.session_name",
    "JRCLoss.alpha",
    "BinaryFocalLoss.gamma",
    "BinaryFocalLoss.alpha",
    # metrics
    "MetricConfig.auc",
    "MetricConfig.multiclass_auc",
    "MetricConfig.recall_at_k",
    "MetricConfig.mean_absolute_error",
    "MetricConfig.mean_squared_error",
    "MetricConfig.accuracy",
    "MetricConfig.grouped_auc",
    "AUC.thresholds",
    "MulticlassAUC.thresholds",
    "MulticlassAUC.average",
    "RecallAtK.top_k>0",
    "Accuracy.threshold",
    "Accuracy.top_k>0",
    "GroupedAUC.grouping_key",
    # exact pair counts: upstream's pair-sampling sizes are validated, no sampling needed
    "MetricConfig.xauc",
    "MetricConfig.grouped_xauc",
    "MetricConfig.normalized_entropy",
    "XAUC.sample_ratio",
    "XAUC.max_pairs",
    "XAUC.in_batch",
    "GroupedXAUC.grouping_key",
    "GroupedXAUC.max_pairs_per_group",
    "NormalizedEntropy.eta",
    # training metrics (BaseModel.update_train_metric / compute_train_metric)
    "ModelConfig.train_metrics",
    "TrainMetricConfig.auc",
    "TrainMetricConfig.recall_at_k",
    "TrainMetricConfig.mean_absolute_error",
    "TrainMetricConfig.mean_squared_error",
    "TrainMetricConfig.accuracy",
    "TrainMetricConfig.xauc",
    "TrainMetricConfig.decay_rate",
    "TrainMetricConfig.decay_step>0",
)


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """Group, model, module, loss and metric fields (:data:`SUPPORTED_FIELDS`)."""
    declare(*SUPPORTED_FIELDS)
