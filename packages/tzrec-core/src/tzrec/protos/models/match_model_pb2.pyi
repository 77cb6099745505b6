from tzrec.protos import module_pb2 as _module_pb2
from tzrec.protos import tower_pb2 as _tower_pb2
from tzrec.protos import simi_pb2 as _simi_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DSSM(_message.Message):
    __slots__ = ("user_tower", "item_tower", "output_dim", "similarity", "temperature", "in_batch_negative")
    USER_TOWER_FIELD_NUMBER: _ClassVar[int]
    ITEM_TOWER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIM_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    IN_BATCH_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    user_tower: _tower_pb2.Tower
    item_tower: _tower_pb2.Tower
    output_dim: int
    similarity: _simi_pb2.Similarity
    temperature: float
    in_batch_negative: bool
    def __init__(self, user_tower: _Optional[_Union[_tower_pb2.Tower, _Mapping]] = ..., item_tower: _Optional[_Union[_tower_pb2.Tower, _Mapping]] = ..., output_dim: _Optional[int] = ..., similarity: _Optional[_Union[_simi_pb2.Similarity, str]] = ..., temperature: _Optional[float] = ..., in_batch_negative: _Optional[bool] = ...) -> None: ...

class HSTUMatch(_message.Message):
    __slots__ = ("user_tower", "item_tower", "output_dim", "similarity", "temperature", "in_batch_negative", "sequence_timestamp_is_ascending", "all_position_loss")
    USER_TOWER_FIELD_NUMBER: _ClassVar[int]
    ITEM_TOWER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIM_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    IN_BATCH_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_TIMESTAMP_IS_ASCENDING_FIELD_NUMBER: _ClassVar[int]
    ALL_POSITION_LOSS_FIELD_NUMBER: _ClassVar[int]
    user_tower: _tower_pb2.HSTUUserTower
    item_tower: _tower_pb2.Tower
    output_dim: int
    similarity: _simi_pb2.Similarity
    temperature: float
    in_batch_negative: bool
    sequence_timestamp_is_ascending: bool
    all_position_loss: bool
    def __init__(self, user_tower: _Optional[_Union[_tower_pb2.HSTUUserTower, _Mapping]] = ..., item_tower: _Optional[_Union[_tower_pb2.Tower, _Mapping]] = ..., output_dim: _Optional[int] = ..., similarity: _Optional[_Union[_simi_pb2.Similarity, str]] = ..., temperature: _Optional[float] = ..., in_batch_negative: _Optional[bool] = ..., sequence_timestamp_is_ascending: _Optional[bool] = ..., all_position_loss: _Optional[bool] = ...) -> None: ...

class DSSMV2(_message.Message):
    __slots__ = ("user_tower", "item_tower", "output_dim", "similarity", "temperature", "in_batch_negative")
    USER_TOWER_FIELD_NUMBER: _ClassVar[int]
    ITEM_TOWER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIM_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    IN_BATCH_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    user_tower: _tower_pb2.Tower
    item_tower: _tower_pb2.Tower
    output_dim: int
    similarity: _simi_pb2.Similarity
    temperature: float
    in_batch_negative: bool
    def __init__(self, user_tower: _Optional[_Union[_tower_pb2.Tower, _Mapping]] = ..., item_tower: _Optional[_Union[_tower_pb2.Tower, _Mapping]] = ..., output_dim: _Optional[int] = ..., similarity: _Optional[_Union[_simi_pb2.Similarity, str]] = ..., temperature: _Optional[float] = ..., in_batch_negative: _Optional[bool] = ...) -> None: ...

class TDM(_message.Message):
    __slots__ = ("multiwindow_din", "final")
    MULTIWINDOW_DIN_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    multiwindow_din: _tower_pb2.MultiWindowDINTower
    final: _module_pb2.MLP
    def __init__(self, multiwindow_din: _Optional[_Union[_tower_pb2.MultiWindowDINTower, _Mapping]] = ..., final: _Optional[_Union[_module_pb2.MLP, _Mapping]] = ...) -> None: ...

class DAT(_message.Message):
    __slots__ = ("user_tower", "item_tower", "output_dim", "similarity", "temperature", "in_batch_negative", "amm_i_weight", "amm_u_weight")
    USER_TOWER_FIELD_NUMBER: _ClassVar[int]
    ITEM_TOWER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIM_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    IN_BATCH_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    AMM_I_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    AMM_U_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    user_tower: _tower_pb2.DATTower
    item_tower: _tower_pb2.DATTower
    output_dim: int
    similarity: _simi_pb2.Similarity
    temperature: float
    in_batch_negative: bool
    amm_i_weight: float
    amm_u_weight: float
    def __init__(self, user_tower: _Optional[_Union[_tower_pb2.DATTower, _Mapping]] = ..., item_tower: _Optional[_Union[_tower_pb2.DATTower, _Mapping]] = ..., output_dim: _Optional[int] = ..., similarity: _Optional[_Union[_simi_pb2.Similarity, str]] = ..., temperature: _Optional[float] = ..., in_batch_negative: _Optional[bool] = ..., amm_i_weight: _Optional[float] = ..., amm_u_weight: _Optional[float] = ...) -> None: ...

class MIND(_message.Message):
    __slots__ = ("user_tower", "item_tower", "simi_pow", "similarity", "in_batch_negative", "temperature", "output_dim")
    USER_TOWER_FIELD_NUMBER: _ClassVar[int]
    ITEM_TOWER_FIELD_NUMBER: _ClassVar[int]
    SIMI_POW_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    IN_BATCH_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIM_FIELD_NUMBER: _ClassVar[int]
    user_tower: _tower_pb2.MINDUserTower
    item_tower: _tower_pb2.Tower
    simi_pow: float
    similarity: _simi_pb2.Similarity
    in_batch_negative: bool
    temperature: float
    output_dim: int
    def __init__(self, user_tower: _Optional[_Union[_tower_pb2.MINDUserTower, _Mapping]] = ..., item_tower: _Optional[_Union[_tower_pb2.Tower, _Mapping]] = ..., simi_pow: _Optional[float] = ..., similarity: _Optional[_Union[_simi_pb2.Similarity, str]] = ..., in_batch_negative: _Optional[bool] = ..., temperature: _Optional[float] = ..., output_dim: _Optional[int] = ...) -> None: ...
