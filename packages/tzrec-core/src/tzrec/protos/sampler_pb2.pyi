from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class NegativeSampler(_message.Message):
    __slots__ = ("input_path", "num_sample", "attr_fields", "item_id_field", "attr_delimiter", "num_eval_sample", "field_delimiter", "item_id_delim")
    INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_FIELD_NUMBER: _ClassVar[int]
    ATTR_DELIMITER_FIELD_NUMBER: _ClassVar[int]
    NUM_EVAL_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FIELD_DELIMITER_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_DELIM_FIELD_NUMBER: _ClassVar[int]
    input_path: str
    num_sample: int
    attr_fields: _containers.RepeatedScalarFieldContainer[str]
    item_id_field: str
    attr_delimiter: str
    num_eval_sample: int
    field_delimiter: str
    item_id_delim: str
    def __init__(self, input_path: _Optional[str] = ..., num_sample: _Optional[int] = ..., attr_fields: _Optional[_Iterable[str]] = ..., item_id_field: _Optional[str] = ..., attr_delimiter: _Optional[str] = ..., num_eval_sample: _Optional[int] = ..., field_delimiter: _Optional[str] = ..., item_id_delim: _Optional[str] = ...) -> None: ...

class NegativeSamplerV2(_message.Message):
    __slots__ = ("user_input_path", "item_input_path", "pos_edge_input_path", "num_sample", "attr_fields", "item_id_field", "user_id_field", "attr_delimiter", "num_eval_sample", "field_delimiter")
    USER_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    ITEM_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    POS_EDGE_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_FIELD_NUMBER: _ClassVar[int]
    ATTR_DELIMITER_FIELD_NUMBER: _ClassVar[int]
    NUM_EVAL_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FIELD_DELIMITER_FIELD_NUMBER: _ClassVar[int]
    user_input_path: str
    item_input_path: str
    pos_edge_input_path: str
    num_sample: int
    attr_fields: _containers.RepeatedScalarFieldContainer[str]
    item_id_field: str
    user_id_field: str
    attr_delimiter: str
    num_eval_sample: int
    field_delimiter: str
    def __init__(self, user_input_path: _Optional[str] = ..., item_input_path: _Optional[str] = ..., pos_edge_input_path: _Optional[str] = ..., num_sample: _Optional[int] = ..., attr_fields: _Optional[_Iterable[str]] = ..., item_id_field: _Optional[str] = ..., user_id_field: _Optional[str] = ..., attr_delimiter: _Optional[str] = ..., num_eval_sample: _Optional[int] = ..., field_delimiter: _Optional[str] = ...) -> None: ...

class HardNegativeSampler(_message.Message):
    __slots__ = ("user_input_path", "item_input_path", "hard_neg_edge_input_path", "num_sample", "num_hard_sample", "attr_fields", "item_id_field", "user_id_field", "attr_delimiter", "num_eval_sample", "field_delimiter")
    USER_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    ITEM_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    HARD_NEG_EDGE_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    NUM_HARD_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_FIELD_NUMBER: _ClassVar[int]
    ATTR_DELIMITER_FIELD_NUMBER: _ClassVar[int]
    NUM_EVAL_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FIELD_DELIMITER_FIELD_NUMBER: _ClassVar[int]
    user_input_path: str
    item_input_path: str
    hard_neg_edge_input_path: str
    num_sample: int
    num_hard_sample: int
    attr_fields: _containers.RepeatedScalarFieldContainer[str]
    item_id_field: str
    user_id_field: str
    attr_delimiter: str
    num_eval_sample: int
    field_delimiter: str
    def __init__(self, user_input_path: _Optional[str] = ..., item_input_path: _Optional[str] = ..., hard_neg_edge_input_path: _Optional[str] = ..., num_sample: _Optional[int] = ..., num_hard_sample: _Optional[int] = ..., attr_fields: _Optional[_Iterable[str]] = ..., item_id_field: _Optional[str] = ..., user_id_field: _Optional[str] = ..., attr_delimiter: _Optional[str] = ..., num_eval_sample: _Optional[int] = ..., field_delimiter: _Optional[str] = ...) -> None: ...

class HardNegativeSamplerV2(_message.Message):
    __slots__ = ("user_input_path", "item_input_path", "pos_edge_input_path", "hard_neg_edge_input_path", "num_sample", "num_hard_sample", "attr_fields", "item_id_field", "user_id_field", "attr_delimiter", "num_eval_sample", "field_delimiter")
    USER_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    ITEM_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    POS_EDGE_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    HARD_NEG_EDGE_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    NUM_HARD_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_FIELD_NUMBER: _ClassVar[int]
    ATTR_DELIMITER_FIELD_NUMBER: _ClassVar[int]
    NUM_EVAL_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FIELD_DELIMITER_FIELD_NUMBER: _ClassVar[int]
    user_input_path: str
    item_input_path: str
    pos_edge_input_path: str
    hard_neg_edge_input_path: str
    num_sample: int
    num_hard_sample: int
    attr_fields: _containers.RepeatedScalarFieldContainer[str]
    item_id_field: str
    user_id_field: str
    attr_delimiter: str
    num_eval_sample: int
    field_delimiter: str
    def __init__(self, user_input_path: _Optional[str] = ..., item_input_path: _Optional[str] = ..., pos_edge_input_path: _Optional[str] = ..., hard_neg_edge_input_path: _Optional[str] = ..., num_sample: _Optional[int] = ..., num_hard_sample: _Optional[int] = ..., attr_fields: _Optional[_Iterable[str]] = ..., item_id_field: _Optional[str] = ..., user_id_field: _Optional[str] = ..., attr_delimiter: _Optional[str] = ..., num_eval_sample: _Optional[int] = ..., field_delimiter: _Optional[str] = ...) -> None: ...

class TDMSampler(_message.Message):
    __slots__ = ("item_input_path", "edge_input_path", "predict_edge_input_path", "attr_fields", "item_id_field", "layer_num_sample", "attr_delimiter", "num_eval_sample", "field_delimiter", "remain_ratio", "probability_type")
    ITEM_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    EDGE_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    PREDICT_EDGE_INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_FIELD_NUMBER: _ClassVar[int]
    LAYER_NUM_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ATTR_DELIMITER_FIELD_NUMBER: _ClassVar[int]
    NUM_EVAL_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FIELD_DELIMITER_FIELD_NUMBER: _ClassVar[int]
    REMAIN_RATIO_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    item_input_path: str
    edge_input_path: str
    predict_edge_input_path: str
    attr_fields: _containers.RepeatedScalarFieldContainer[str]
    item_id_field: str
    layer_num_sample: _containers.RepeatedScalarFieldContainer[int]
    attr_delimiter: str
    num_eval_sample: int
    field_delimiter: str
    remain_ratio: float
    probability_type: str
    def __init__(self, item_input_path: _Optional[str] = ..., edge_input_path: _Optional[str] = ..., predict_edge_input_path: _Optional[str] = ..., attr_fields: _Optional[_Iterable[str]] = ..., item_id_field: _Optional[str] = ..., layer_num_sample: _Optional[_Iterable[int]] = ..., attr_delimiter: _Optional[str] = ..., num_eval_sample: _Optional[int] = ..., field_delimiter: _Optional[str] = ..., remain_ratio: _Optional[float] = ..., probability_type: _Optional[str] = ...) -> None: ...
