from tzrec.protos import module_pb2 as _module_pb2
from tzrec.protos import loss_pb2 as _loss_pb2
from tzrec.protos import metric_pb2 as _metric_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tower(_message.Message):
    __slots__ = ("input", "mlp")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    MLP_FIELD_NUMBER: _ClassVar[int]
    input: str
    mlp: _module_pb2.MLP
    def __init__(self, input: _Optional[str] = ..., mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ...) -> None: ...

class HSTUUserTower(_message.Message):
    __slots__ = ("input", "hstu", "max_seq_len")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    HSTU_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    input: str
    hstu: _module_pb2.HSTU
    max_seq_len: int
    def __init__(self, input: _Optional[str] = ..., hstu: _Optional[_Union[_module_pb2.HSTU, _Mapping]] = ..., max_seq_len: _Optional[int] = ...) -> None: ...

class DINTower(_message.Message):
    __slots__ = ("input", "attn_mlp")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    ATTN_MLP_FIELD_NUMBER: _ClassVar[int]
    input: str
    attn_mlp: _module_pb2.MLP
    def __init__(self, input: _Optional[str] = ..., attn_mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ...) -> None: ...

class TaskTower(_message.Message):
    __slots__ = ("tower_name", "label_name", "metrics", "train_metrics", "losses", "num_class", "mlp", "weight", "sample_weight_name", "task_space_indicator_label", "in_task_space_weight", "out_task_space_weight", "pareto_min_loss_weight")
    TOWER_NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_METRICS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASS_FIELD_NUMBER: _ClassVar[int]
    MLP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_WEIGHT_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_SPACE_INDICATOR_LABEL_FIELD_NUMBER: _ClassVar[int]
    IN_TASK_SPACE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    OUT_TASK_SPACE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PARETO_MIN_LOSS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    tower_name: str
    label_name: str
    metrics: _containers.RepeatedCompositeFieldContainer[_metric_pb2.MetricConfig]
    train_metrics: _containers.RepeatedCompositeFieldContainer[_metric_pb2.TrainMetricConfig]
    losses: _containers.RepeatedCompositeFieldContainer[_loss_pb2.LossConfig]
    num_class: int
    mlp: _module_pb2.MLP
    weight: float
    sample_weight_name: str
    task_space_indicator_label: str
    in_task_space_weight: float
    out_task_space_weight: float
    pareto_min_loss_weight: float
    def __init__(self, tower_name: _Optional[str] = ..., label_name: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[_metric_pb2.MetricConfig, _Mapping]]] = ..., train_metrics: _Optional[_Iterable[_Union[_metric_pb2.TrainMetricConfig, _Mapping]]] = ..., losses: _Optional[_Iterable[_Union[_loss_pb2.LossConfig, _Mapping]]] = ..., num_class: _Optional[int] = ..., mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ..., weight: _Optional[float] = ..., sample_weight_name: _Optional[str] = ..., task_space_indicator_label: _Optional[str] = ..., in_task_space_weight: _Optional[float] = ..., out_task_space_weight: _Optional[float] = ..., pareto_min_loss_weight: _Optional[float] = ...) -> None: ...

class BayesTaskTower(_message.Message):
    __slots__ = ("tower_name", "label_name", "metrics", "train_metrics", "losses", "num_class", "mlp", "weight", "relation_tower_names", "relation_mlp", "sample_weight_name", "task_space_indicator_label", "in_task_space_weight", "out_task_space_weight", "pareto_min_loss_weight")
    TOWER_NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_METRICS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASS_FIELD_NUMBER: _ClassVar[int]
    MLP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RELATION_TOWER_NAMES_FIELD_NUMBER: _ClassVar[int]
    RELATION_MLP_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_WEIGHT_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_SPACE_INDICATOR_LABEL_FIELD_NUMBER: _ClassVar[int]
    IN_TASK_SPACE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    OUT_TASK_SPACE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PARETO_MIN_LOSS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    tower_name: str
    label_name: str
    metrics: _containers.RepeatedCompositeFieldContainer[_metric_pb2.MetricConfig]
    train_metrics: _containers.RepeatedCompositeFieldContainer[_metric_pb2.TrainMetricConfig]
    losses: _containers.RepeatedCompositeFieldContainer[_loss_pb2.LossConfig]
    num_class: int
    mlp: _module_pb2.MLP
    weight: float
    relation_tower_names: _containers.RepeatedScalarFieldContainer[str]
    relation_mlp: _module_pb2.MLP
    sample_weight_name: str
    task_space_indicator_label: str
    in_task_space_weight: float
    out_task_space_weight: float
    pareto_min_loss_weight: float
    def __init__(self, tower_name: _Optional[str] = ..., label_name: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[_metric_pb2.MetricConfig, _Mapping]]] = ..., train_metrics: _Optional[_Iterable[_Union[_metric_pb2.TrainMetricConfig, _Mapping]]] = ..., losses: _Optional[_Iterable[_Union[_loss_pb2.LossConfig, _Mapping]]] = ..., num_class: _Optional[int] = ..., mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ..., weight: _Optional[float] = ..., relation_tower_names: _Optional[_Iterable[str]] = ..., relation_mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ..., sample_weight_name: _Optional[str] = ..., task_space_indicator_label: _Optional[str] = ..., in_task_space_weight: _Optional[float] = ..., out_task_space_weight: _Optional[float] = ..., pareto_min_loss_weight: _Optional[float] = ...) -> None: ...

class InterventionTaskTower(_message.Message):
    __slots__ = ("tower_name", "label_name", "metrics", "train_metrics", "losses", "num_class", "mlp", "weight", "intervention_tower_names", "low_rank_dim", "dropout_ratio", "task_space_indicator_label", "in_task_space_weight", "out_task_space_weight", "pareto_min_loss_weight")
    TOWER_NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_METRICS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASS_FIELD_NUMBER: _ClassVar[int]
    MLP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    INTERVENTION_TOWER_NAMES_FIELD_NUMBER: _ClassVar[int]
    LOW_RANK_DIM_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_RATIO_FIELD_NUMBER: _ClassVar[int]
    TASK_SPACE_INDICATOR_LABEL_FIELD_NUMBER: _ClassVar[int]
    IN_TASK_SPACE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    OUT_TASK_SPACE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PARETO_MIN_LOSS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    tower_name: str
    label_name: str
    metrics: _containers.RepeatedCompositeFieldContainer[_metric_pb2.MetricConfig]
    train_metrics: _containers.RepeatedCompositeFieldContainer[_metric_pb2.TrainMetricConfig]
    losses: _containers.RepeatedCompositeFieldContainer[_loss_pb2.LossConfig]
    num_class: int
    mlp: _module_pb2.MLP
    weight: float
    intervention_tower_names: _containers.RepeatedScalarFieldContainer[str]
    low_rank_dim: int
    dropout_ratio: float
    task_space_indicator_label: str
    in_task_space_weight: float
    out_task_space_weight: float
    pareto_min_loss_weight: float
    def __init__(self, tower_name: _Optional[str] = ..., label_name: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[_metric_pb2.MetricConfig, _Mapping]]] = ..., train_metrics: _Optional[_Iterable[_Union[_metric_pb2.TrainMetricConfig, _Mapping]]] = ..., losses: _Optional[_Iterable[_Union[_loss_pb2.LossConfig, _Mapping]]] = ..., num_class: _Optional[int] = ..., mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ..., weight: _Optional[float] = ..., intervention_tower_names: _Optional[_Iterable[str]] = ..., low_rank_dim: _Optional[int] = ..., dropout_ratio: _Optional[float] = ..., task_space_indicator_label: _Optional[str] = ..., in_task_space_weight: _Optional[float] = ..., out_task_space_weight: _Optional[float] = ..., pareto_min_loss_weight: _Optional[float] = ...) -> None: ...

class FusionSubTaskConfig(_message.Message):
    __slots__ = ("task_name", "label_name", "task_bitmask", "losses", "num_class", "metrics", "weight", "train_metrics")
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_BITMASK_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_METRICS_FIELD_NUMBER: _ClassVar[int]
    task_name: str
    label_name: str
    task_bitmask: int
    losses: _containers.RepeatedCompositeFieldContainer[_loss_pb2.LossConfig]
    num_class: int
    metrics: _containers.RepeatedCompositeFieldContainer[_metric_pb2.MetricConfig]
    weight: float
    train_metrics: _containers.RepeatedCompositeFieldContainer[_metric_pb2.TrainMetricConfig]
    def __init__(self, task_name: _Optional[str] = ..., label_name: _Optional[str] = ..., task_bitmask: _Optional[int] = ..., losses: _Optional[_Iterable[_Union[_loss_pb2.LossConfig, _Mapping]]] = ..., num_class: _Optional[int] = ..., metrics: _Optional[_Iterable[_Union[_metric_pb2.MetricConfig, _Mapping]]] = ..., weight: _Optional[float] = ..., train_metrics: _Optional[_Iterable[_Union[_metric_pb2.TrainMetricConfig, _Mapping]]] = ...) -> None: ...

class FusionMTLTower(_message.Message):
    __slots__ = ("mlp", "task_configs")
    MLP_FIELD_NUMBER: _ClassVar[int]
    TASK_CONFIGS_FIELD_NUMBER: _ClassVar[int]
    mlp: _module_pb2.MLP
    task_configs: _containers.RepeatedCompositeFieldContainer[FusionSubTaskConfig]
    def __init__(self, mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ..., task_configs: _Optional[_Iterable[_Union[FusionSubTaskConfig, _Mapping]]] = ...) -> None: ...

class MultiWindowDINTower(_message.Message):
    __slots__ = ("windows_len", "attn_mlp")
    WINDOWS_LEN_FIELD_NUMBER: _ClassVar[int]
    ATTN_MLP_FIELD_NUMBER: _ClassVar[int]
    windows_len: _containers.RepeatedScalarFieldContainer[int]
    attn_mlp: _module_pb2.MLP
    def __init__(self, windows_len: _Optional[_Iterable[int]] = ..., attn_mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ...) -> None: ...

class DATTower(_message.Message):
    __slots__ = ("input", "augment_input", "mlp")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    AUGMENT_INPUT_FIELD_NUMBER: _ClassVar[int]
    MLP_FIELD_NUMBER: _ClassVar[int]
    input: str
    augment_input: str
    mlp: _module_pb2.MLP
    def __init__(self, input: _Optional[str] = ..., augment_input: _Optional[str] = ..., mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ...) -> None: ...

class MINDUserTower(_message.Message):
    __slots__ = ("input", "history_input", "user_mlp", "hist_seq_mlp", "user_seq_combine", "capsule_config", "concat_mlp")
    class UserSeqCombineMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CONCAT: _ClassVar[MINDUserTower.UserSeqCombineMethod]
        SUM: _ClassVar[MINDUserTower.UserSeqCombineMethod]
    CONCAT: MINDUserTower.UserSeqCombineMethod
    SUM: MINDUserTower.UserSeqCombineMethod
    INPUT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_INPUT_FIELD_NUMBER: _ClassVar[int]
    USER_MLP_FIELD_NUMBER: _ClassVar[int]
    HIST_SEQ_MLP_FIELD_NUMBER: _ClassVar[int]
    USER_SEQ_COMBINE_FIELD_NUMBER: _ClassVar[int]
    CAPSULE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONCAT_MLP_FIELD_NUMBER: _ClassVar[int]
    input: str
    history_input: str
    user_mlp: _module_pb2.MLP
    hist_seq_mlp: _module_pb2.MLP
    user_seq_combine: MINDUserTower.UserSeqCombineMethod
    capsule_config: _module_pb2.B2ICapsule
    concat_mlp: _module_pb2.MLP
    def __init__(self, input: _Optional[str] = ..., history_input: _Optional[str] = ..., user_mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ..., hist_seq_mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ..., user_seq_combine: _Optional[_Union[MINDUserTower.UserSeqCombineMethod, str]] = ..., capsule_config: _Optional[_Union[_module_pb2.B2ICapsule, _Mapping]] = ..., concat_mlp: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ...) -> None: ...
