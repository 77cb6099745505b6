from tzrec.protos.models import rank_model_pb2 as _rank_model_pb2
from tzrec.protos.models import multi_task_rank_pb2 as _multi_task_rank_pb2
from tzrec.protos.models import match_model_pb2 as _match_model_pb2
from tzrec.protos.models import general_rank_model_pb2 as _general_rank_model_pb2
from tzrec.protos.models import sid_model_pb2 as _sid_model_pb2
from tzrec.protos import loss_pb2 as _loss_pb2
from tzrec.protos import metric_pb2 as _metric_pb2
from tzrec.protos import seq_encoder_pb2 as _seq_encoder_pb2
from tzrec.protos import module_pb2 as _module_pb2
from tzrec.protos import plugin_pb2 as _plugin_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf.internal import python_message as _python_message
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureGroupType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEEP: _ClassVar[FeatureGroupType]
    WIDE: _ClassVar[FeatureGroupType]
    SEQUENCE: _ClassVar[FeatureGroupType]
    JAGGED_SEQUENCE: _ClassVar[FeatureGroupType]

class Kernel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRITON: _ClassVar[Kernel]
    PYTORCH: _ClassVar[Kernel]
    CUTLASS: _ClassVar[Kernel]
DEEP: FeatureGroupType
WIDE: FeatureGroupType
SEQUENCE: FeatureGroupType
JAGGED_SEQUENCE: FeatureGroupType
TRITON: Kernel
PYTORCH: Kernel
CUTLASS: Kernel

class SeqGroupConfig(_message.Message):
    __slots__ = ("group_name", "feature_names", "embedding_name_suffix")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_NAME_SUFFIX_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    embedding_name_suffix: str
    def __init__(self, group_name: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., embedding_name_suffix: _Optional[str] = ...) -> None: ...

class FeatureGroupConfig(_message.Message):
    __slots__ = ("group_name", "feature_names", "group_type", "sequence_groups", "sequence_encoders", "embedding_name_suffix")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    GROUP_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ENCODERS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_NAME_SUFFIX_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    group_type: FeatureGroupType
    sequence_groups: _containers.RepeatedCompositeFieldContainer[SeqGroupConfig]
    sequence_encoders: _containers.RepeatedCompositeFieldContainer[_seq_encoder_pb2.SeqEncoderConfig]
    embedding_name_suffix: str
    def __init__(self, group_name: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., group_type: _Optional[_Union[FeatureGroupType, str]] = ..., sequence_groups: _Optional[_Iterable[_Union[SeqGroupConfig, _Mapping]]] = ..., sequence_encoders: _Optional[_Iterable[_Union[_seq_encoder_pb2.SeqEncoderConfig, _Mapping]]] = ..., embedding_name_suffix: _Optional[str] = ...) -> None: ...

class ModelConfig(_message.Message):
    __slots__ = ("feature_groups", "dlrm", "deepfm", "multi_tower", "multi_tower_din", "mask_net", "wide_and_deep", "dcn_v1", "dcn_v2", "xdeepfm", "wukong", "simple_multi_task", "mmoe", "dbmtl", "ple", "dc2vr", "dlrm_hstu", "pepnet", "ultra_hstu", "dssm", "dssm_v2", "dat", "hstu_match", "mind", "tdm", "rocket_launching", "sid_rqvae", "sid_rqkmeans", "num_class", "losses", "metrics", "train_metrics", "variational_dropout", "kernel", "use_pareto_loss_weight")
    Extensions: _python_message._ExtensionDict
    FEATURE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    DLRM_FIELD_NUMBER: _ClassVar[int]
    DEEPFM_FIELD_NUMBER: _ClassVar[int]
    MULTI_TOWER_FIELD_NUMBER: _ClassVar[int]
    MULTI_TOWER_DIN_FIELD_NUMBER: _ClassVar[int]
    MASK_NET_FIELD_NUMBER: _ClassVar[int]
    WIDE_AND_DEEP_FIELD_NUMBER: _ClassVar[int]
    DCN_V1_FIELD_NUMBER: _ClassVar[int]
    DCN_V2_FIELD_NUMBER: _ClassVar[int]
    XDEEPFM_FIELD_NUMBER: _ClassVar[int]
    WUKONG_FIELD_NUMBER: _ClassVar[int]
    SIMPLE_MULTI_TASK_FIELD_NUMBER: _ClassVar[int]
    MMOE_FIELD_NUMBER: _ClassVar[int]
    DBMTL_FIELD_NUMBER: _ClassVar[int]
    PLE_FIELD_NUMBER: _ClassVar[int]
    DC2VR_FIELD_NUMBER: _ClassVar[int]
    DLRM_HSTU_FIELD_NUMBER: _ClassVar[int]
    PEPNET_FIELD_NUMBER: _ClassVar[int]
    ULTRA_HSTU_FIELD_NUMBER: _ClassVar[int]
    DSSM_FIELD_NUMBER: _ClassVar[int]
    DSSM_V2_FIELD_NUMBER: _ClassVar[int]
    DAT_FIELD_NUMBER: _ClassVar[int]
    HSTU_MATCH_FIELD_NUMBER: _ClassVar[int]
    MIND_FIELD_NUMBER: _ClassVar[int]
    TDM_FIELD_NUMBER: _ClassVar[int]
    ROCKET_LAUNCHING_FIELD_NUMBER: _ClassVar[int]
    SID_RQVAE_FIELD_NUMBER: _ClassVar[int]
    SID_RQKMEANS_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_METRICS_FIELD_NUMBER: _ClassVar[int]
    VARIATIONAL_DROPOUT_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    USE_PARETO_LOSS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    feature_groups: _containers.RepeatedCompositeFieldContainer[FeatureGroupConfig]
    dlrm: _rank_model_pb2.DLRM
    deepfm: _rank_model_pb2.DeepFM
    multi_tower: _rank_model_pb2.MultiTower
    multi_tower_din: _rank_model_pb2.MultiTowerDIN
    mask_net: _rank_model_pb2.MaskNet
    wide_and_deep: _rank_model_pb2.WideAndDeep
    dcn_v1: _rank_model_pb2.DCNV1
    dcn_v2: _rank_model_pb2.DCNV2
    xdeepfm: _rank_model_pb2.xDeepFM
    wukong: _rank_model_pb2.WuKong
    simple_multi_task: _multi_task_rank_pb2.SimpleMultiTask
    mmoe: _multi_task_rank_pb2.MMoE
    dbmtl: _multi_task_rank_pb2.DBMTL
    ple: _multi_task_rank_pb2.PLE
    dc2vr: _multi_task_rank_pb2.DC2VR
    dlrm_hstu: _multi_task_rank_pb2.DlrmHSTU
    pepnet: _multi_task_rank_pb2.PEPNet
    ultra_hstu: _multi_task_rank_pb2.UltraHSTU
    dssm: _match_model_pb2.DSSM
    dssm_v2: _match_model_pb2.DSSMV2
    dat: _match_model_pb2.DAT
    hstu_match: _match_model_pb2.HSTUMatch
    mind: _match_model_pb2.MIND
    tdm: _match_model_pb2.TDM
    rocket_launching: _general_rank_model_pb2.RocketLaunching
    sid_rqvae: _sid_model_pb2.SidRqvae
    sid_rqkmeans: _sid_model_pb2.SidRqkmeans
    num_class: int
    losses: _containers.RepeatedCompositeFieldContainer[_loss_pb2.LossConfig]
    metrics: _containers.RepeatedCompositeFieldContainer[_metric_pb2.MetricConfig]
    train_metrics: _containers.RepeatedCompositeFieldContainer[_metric_pb2.TrainMetricConfig]
    variational_dropout: _module_pb2.VariationalDropout
    kernel: Kernel
    use_pareto_loss_weight: bool
    def __init__(self, feature_groups: _Optional[_Iterable[_Union[FeatureGroupConfig, _Mapping]]] = ..., dlrm: _Optional[_Union[_rank_model_pb2.DLRM, _Mapping]] = ..., deepfm: _Optional[_Union[_rank_model_pb2.DeepFM, _Mapping]] = ..., multi_tower: _Optional[_Union[_rank_model_pb2.MultiTower, _Mapping]] = ..., multi_tower_din: _Optional[_Union[_rank_model_pb2.MultiTowerDIN, _Mapping]] = ..., mask_net: _Optional[_Union[_rank_model_pb2.MaskNet, _Mapping]] = ..., wide_and_deep: _Optional[_Union[_rank_model_pb2.WideAndDeep, _Mapping]] = ..., dcn_v1: _Optional[_Union[_rank_model_pb2.DCNV1, _Mapping]] = ..., dcn_v2: _Optional[_Union[_rank_model_pb2.DCNV2, _Mapping]] = ..., xdeepfm: _Optional[_Union[_rank_model_pb2.xDeepFM, _Mapping]] = ..., wukong: _Optional[_Union[_rank_model_pb2.WuKong, _Mapping]] = ..., simple_multi_task: _Optional[_Union[_multi_task_rank_pb2.SimpleMultiTask, _Mapping]] = ..., mmoe: _Optional[_Union[_multi_task_rank_pb2.MMoE, _Mapping]] = ..., dbmtl: _Optional[_Union[_multi_task_rank_pb2.DBMTL, _Mapping]] = ..., ple: _Optional[_Union[_multi_task_rank_pb2.PLE, _Mapping]] = ..., dc2vr: _Optional[_Union[_multi_task_rank_pb2.DC2VR, _Mapping]] = ..., dlrm_hstu: _Optional[_Union[_multi_task_rank_pb2.DlrmHSTU, _Mapping]] = ..., pepnet: _Optional[_Union[_multi_task_rank_pb2.PEPNet, _Mapping]] = ..., ultra_hstu: _Optional[_Union[_multi_task_rank_pb2.UltraHSTU, _Mapping]] = ..., dssm: _Optional[_Union[_match_model_pb2.DSSM, _Mapping]] = ..., dssm_v2: _Optional[_Union[_match_model_pb2.DSSMV2, _Mapping]] = ..., dat: _Optional[_Union[_match_model_pb2.DAT, _Mapping]] = ..., hstu_match: _Optional[_Union[_match_model_pb2.HSTUMatch, _Mapping]] = ..., mind: _Optional[_Union[_match_model_pb2.MIND, _Mapping]] = ..., tdm: _Optional[_Union[_match_model_pb2.TDM, _Mapping]] = ..., rocket_launching: _Optional[_Union[_general_rank_model_pb2.RocketLaunching, _Mapping]] = ..., sid_rqvae: _Optional[_Union[_sid_model_pb2.SidRqvae, _Mapping]] = ..., sid_rqkmeans: _Optional[_Union[_sid_model_pb2.SidRqkmeans, _Mapping]] = ..., num_class: _Optional[int] = ..., losses: _Optional[_Iterable[_Union[_loss_pb2.LossConfig, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[_metric_pb2.MetricConfig, _Mapping]]] = ..., train_metrics: _Optional[_Iterable[_Union[_metric_pb2.TrainMetricConfig, _Mapping]]] = ..., variational_dropout: _Optional[_Union[_module_pb2.VariationalDropout, _Mapping]] = ..., kernel: _Optional[_Union[Kernel, str]] = ..., use_pareto_loss_weight: _Optional[bool] = ...) -> None: ...
