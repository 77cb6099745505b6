from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WeightDecayMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[WeightDecayMode]
    L2: _ClassVar[WeightDecayMode]
    DECOUPLE: _ClassVar[WeightDecayMode]
NONE: WeightDecayMode
L2: WeightDecayMode
DECOUPLE: WeightDecayMode

class SparseOptimizer(_message.Message):
    __slots__ = ("sgd_optimizer", "adagrad_optimizer", "adam_optimizer", "lars_sgd_optimizer", "lamb_optimizer", "partial_rowwise_lamb_optimizer", "partial_rowwise_adam_optimizer", "rowwise_adagrad_optimizer", "adadelta_optimizer", "rmsprop_optimizer", "constant_learning_rate", "exponential_decay_learning_rate", "manual_step_learning_rate", "cosine_annealing_learning_rate", "cosine_annealing_warm_restarts_learning_rate")
    SGD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAGRAD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAM_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LARS_SGD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LAMB_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_ROWWISE_LAMB_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_ROWWISE_ADAM_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ROWWISE_ADAGRAD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADADELTA_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    RMSPROP_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EXPONENTIAL_DECAY_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MANUAL_STEP_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    COSINE_ANNEALING_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    COSINE_ANNEALING_WARM_RESTARTS_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    sgd_optimizer: FusedSGDOptimizer
    adagrad_optimizer: FusedAdagradOptimizer
    adam_optimizer: FusedAdamOptimizer
    lars_sgd_optimizer: FusedLarsSGDOptimizer
    lamb_optimizer: FusedLAMBOptimizer
    partial_rowwise_lamb_optimizer: FusedPartialRowWiseLAMBOptimizer
    partial_rowwise_adam_optimizer: FusedPartialRowWiseAdamOptimizer
    rowwise_adagrad_optimizer: FusedRowWiseAdagradOptimizer
    adadelta_optimizer: FusedAdadeltaOptimizer
    rmsprop_optimizer: FusedRMSpropOptimizer
    constant_learning_rate: ConstantLR
    exponential_decay_learning_rate: ExponentialDecayLR
    manual_step_learning_rate: ManualStepLR
    cosine_annealing_learning_rate: CosineAnnealingLR
    cosine_annealing_warm_restarts_learning_rate: CosineAnnealingWarmRestartsLR
    def __init__(self, sgd_optimizer: _Optional[_Union[FusedSGDOptimizer, _Mapping]] = ..., adagrad_optimizer: _Optional[_Union[FusedAdagradOptimizer, _Mapping]] = ..., adam_optimizer: _Optional[_Union[FusedAdamOptimizer, _Mapping]] = ..., lars_sgd_optimizer: _Optional[_Union[FusedLarsSGDOptimizer, _Mapping]] = ..., lamb_optimizer: _Optional[_Union[FusedLAMBOptimizer, _Mapping]] = ..., partial_rowwise_lamb_optimizer: _Optional[_Union[FusedPartialRowWiseLAMBOptimizer, _Mapping]] = ..., partial_rowwise_adam_optimizer: _Optional[_Union[FusedPartialRowWiseAdamOptimizer, _Mapping]] = ..., rowwise_adagrad_optimizer: _Optional[_Union[FusedRowWiseAdagradOptimizer, _Mapping]] = ..., adadelta_optimizer: _Optional[_Union[FusedAdadeltaOptimizer, _Mapping]] = ..., rmsprop_optimizer: _Optional[_Union[FusedRMSpropOptimizer, _Mapping]] = ..., constant_learning_rate: _Optional[_Union[ConstantLR, _Mapping]] = ..., exponential_decay_learning_rate: _Optional[_Union[ExponentialDecayLR, _Mapping]] = ..., manual_step_learning_rate: _Optional[_Union[ManualStepLR, _Mapping]] = ..., cosine_annealing_learning_rate: _Optional[_Union[CosineAnnealingLR, _Mapping]] = ..., cosine_annealing_warm_restarts_learning_rate: _Optional[_Union[CosineAnnealingWarmRestartsLR, _Mapping]] = ...) -> None: ...

class EMAConfig(_message.Message):
    __slots__ = ("decay",)
    DECAY_FIELD_NUMBER: _ClassVar[int]
    decay: float
    def __init__(self, decay: _Optional[float] = ...) -> None: ...

class DenseOptimizer(_message.Message):
    __slots__ = ("sgd_optimizer", "adagrad_optimizer", "adam_optimizer", "adamw_optimizer", "adadelta_optimizer", "rmsprop_optimizer", "constant_learning_rate", "exponential_decay_learning_rate", "manual_step_learning_rate", "cosine_annealing_learning_rate", "cosine_annealing_warm_restarts_learning_rate", "part_optimizers", "ema")
    SGD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAGRAD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAM_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAMW_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADADELTA_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    RMSPROP_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EXPONENTIAL_DECAY_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MANUAL_STEP_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    COSINE_ANNEALING_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    COSINE_ANNEALING_WARM_RESTARTS_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    PART_OPTIMIZERS_FIELD_NUMBER: _ClassVar[int]
    EMA_FIELD_NUMBER: _ClassVar[int]
    sgd_optimizer: SGDOptimizer
    adagrad_optimizer: AdagradOptimizer
    adam_optimizer: AdamOptimizer
    adamw_optimizer: AdamWOptimizer
    adadelta_optimizer: AdadeltaOptimizer
    rmsprop_optimizer: RMSpropOptimizer
    constant_learning_rate: ConstantLR
    exponential_decay_learning_rate: ExponentialDecayLR
    manual_step_learning_rate: ManualStepLR
    cosine_annealing_learning_rate: CosineAnnealingLR
    cosine_annealing_warm_restarts_learning_rate: CosineAnnealingWarmRestartsLR
    part_optimizers: _containers.RepeatedCompositeFieldContainer[PartOptimizer]
    ema: EMAConfig
    def __init__(self, sgd_optimizer: _Optional[_Union[SGDOptimizer, _Mapping]] = ..., adagrad_optimizer: _Optional[_Union[AdagradOptimizer, _Mapping]] = ..., adam_optimizer: _Optional[_Union[AdamOptimizer, _Mapping]] = ..., adamw_optimizer: _Optional[_Union[AdamWOptimizer, _Mapping]] = ..., adadelta_optimizer: _Optional[_Union[AdadeltaOptimizer, _Mapping]] = ..., rmsprop_optimizer: _Optional[_Union[RMSpropOptimizer, _Mapping]] = ..., constant_learning_rate: _Optional[_Union[ConstantLR, _Mapping]] = ..., exponential_decay_learning_rate: _Optional[_Union[ExponentialDecayLR, _Mapping]] = ..., manual_step_learning_rate: _Optional[_Union[ManualStepLR, _Mapping]] = ..., cosine_annealing_learning_rate: _Optional[_Union[CosineAnnealingLR, _Mapping]] = ..., cosine_annealing_warm_restarts_learning_rate: _Optional[_Union[CosineAnnealingWarmRestartsLR, _Mapping]] = ..., part_optimizers: _Optional[_Iterable[_Union[PartOptimizer, _Mapping]]] = ..., ema: _Optional[_Union[EMAConfig, _Mapping]] = ...) -> None: ...

class PartOptimizer(_message.Message):
    __slots__ = ("sgd_optimizer", "adagrad_optimizer", "adam_optimizer", "adamw_optimizer", "adadelta_optimizer", "rmsprop_optimizer", "regex_pattern", "constant_learning_rate", "exponential_decay_learning_rate", "manual_step_learning_rate", "cosine_annealing_learning_rate", "cosine_annealing_warm_restarts_learning_rate")
    SGD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAGRAD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAM_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAMW_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADADELTA_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    RMSPROP_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    REGEX_PATTERN_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EXPONENTIAL_DECAY_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MANUAL_STEP_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    COSINE_ANNEALING_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    COSINE_ANNEALING_WARM_RESTARTS_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    sgd_optimizer: SGDOptimizer
    adagrad_optimizer: AdagradOptimizer
    adam_optimizer: AdamOptimizer
    adamw_optimizer: AdamWOptimizer
    adadelta_optimizer: AdadeltaOptimizer
    rmsprop_optimizer: RMSpropOptimizer
    regex_pattern: str
    constant_learning_rate: ConstantLR
    exponential_decay_learning_rate: ExponentialDecayLR
    manual_step_learning_rate: ManualStepLR
    cosine_annealing_learning_rate: CosineAnnealingLR
    cosine_annealing_warm_restarts_learning_rate: CosineAnnealingWarmRestartsLR
    def __init__(self, sgd_optimizer: _Optional[_Union[SGDOptimizer, _Mapping]] = ..., adagrad_optimizer: _Optional[_Union[AdagradOptimizer, _Mapping]] = ..., adam_optimizer: _Optional[_Union[AdamOptimizer, _Mapping]] = ..., adamw_optimizer: _Optional[_Union[AdamWOptimizer, _Mapping]] = ..., adadelta_optimizer: _Optional[_Union[AdadeltaOptimizer, _Mapping]] = ..., rmsprop_optimizer: _Optional[_Union[RMSpropOptimizer, _Mapping]] = ..., regex_pattern: _Optional[str] = ..., constant_learning_rate: _Optional[_Union[ConstantLR, _Mapping]] = ..., exponential_decay_learning_rate: _Optional[_Union[ExponentialDecayLR, _Mapping]] = ..., manual_step_learning_rate: _Optional[_Union[ManualStepLR, _Mapping]] = ..., cosine_annealing_learning_rate: _Optional[_Union[CosineAnnealingLR, _Mapping]] = ..., cosine_annealing_warm_restarts_learning_rate: _Optional[_Union[CosineAnnealingWarmRestartsLR, _Mapping]] = ...) -> None: ...

class FusedSGDOptimizer(_message.Message):
    __slots__ = ("lr", "gradient_clipping", "max_gradient")
    LR_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    lr: float
    gradient_clipping: bool
    max_gradient: float
    def __init__(self, lr: _Optional[float] = ..., gradient_clipping: _Optional[bool] = ..., max_gradient: _Optional[float] = ...) -> None: ...

class FusedAdagradOptimizer(_message.Message):
    __slots__ = ("lr", "gradient_clipping", "max_gradient", "initial_accumulator_value")
    LR_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    INITIAL_ACCUMULATOR_VALUE_FIELD_NUMBER: _ClassVar[int]
    lr: float
    gradient_clipping: bool
    max_gradient: float
    initial_accumulator_value: float
    def __init__(self, lr: _Optional[float] = ..., gradient_clipping: _Optional[bool] = ..., max_gradient: _Optional[float] = ..., initial_accumulator_value: _Optional[float] = ...) -> None: ...

class FusedAdamOptimizer(_message.Message):
    __slots__ = ("lr", "beta1", "beta2", "weight_decay", "gradient_clipping", "max_gradient")
    LR_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    gradient_clipping: bool
    max_gradient: float
    def __init__(self, lr: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., weight_decay: _Optional[float] = ..., gradient_clipping: _Optional[bool] = ..., max_gradient: _Optional[float] = ...) -> None: ...

class FusedLarsSGDOptimizer(_message.Message):
    __slots__ = ("lr", "momentum", "weight_decay", "gradient_clipping", "max_gradient")
    LR_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    lr: float
    momentum: float
    weight_decay: float
    gradient_clipping: bool
    max_gradient: float
    def __init__(self, lr: _Optional[float] = ..., momentum: _Optional[float] = ..., weight_decay: _Optional[float] = ..., gradient_clipping: _Optional[bool] = ..., max_gradient: _Optional[float] = ...) -> None: ...

class FusedLAMBOptimizer(_message.Message):
    __slots__ = ("lr", "beta1", "beta2", "weight_decay", "gradient_clipping", "max_gradient")
    LR_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    gradient_clipping: bool
    max_gradient: float
    def __init__(self, lr: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., weight_decay: _Optional[float] = ..., gradient_clipping: _Optional[bool] = ..., max_gradient: _Optional[float] = ...) -> None: ...

class FusedPartialRowWiseLAMBOptimizer(_message.Message):
    __slots__ = ("lr", "beta1", "beta2", "weight_decay", "gradient_clipping", "max_gradient")
    LR_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    gradient_clipping: bool
    max_gradient: float
    def __init__(self, lr: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., weight_decay: _Optional[float] = ..., gradient_clipping: _Optional[bool] = ..., max_gradient: _Optional[float] = ...) -> None: ...

class FusedPartialRowWiseAdamOptimizer(_message.Message):
    __slots__ = ("lr", "beta1", "beta2", "weight_decay", "gradient_clipping", "max_gradient")
    LR_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    gradient_clipping: bool
    max_gradient: float
    def __init__(self, lr: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., weight_decay: _Optional[float] = ..., gradient_clipping: _Optional[bool] = ..., max_gradient: _Optional[float] = ...) -> None: ...

class FusedRowWiseAdagradOptimizer(_message.Message):
    __slots__ = ("lr", "weight_decay", "weight_decay_mode", "gradient_clipping", "max_gradient")
    LR_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_MODE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    lr: float
    weight_decay: float
    weight_decay_mode: WeightDecayMode
    gradient_clipping: bool
    max_gradient: float
    def __init__(self, lr: _Optional[float] = ..., weight_decay: _Optional[float] = ..., weight_decay_mode: _Optional[_Union[WeightDecayMode, str]] = ..., gradient_clipping: _Optional[bool] = ..., max_gradient: _Optional[float] = ...) -> None: ...

class FusedAdadeltaOptimizer(_message.Message):
    __slots__ = ("lr", "rho", "eps", "weight_decay", "gradient_clipping", "max_gradient")
    LR_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    lr: float
    rho: float
    eps: float
    weight_decay: float
    gradient_clipping: bool
    max_gradient: float
    def __init__(self, lr: _Optional[float] = ..., rho: _Optional[float] = ..., eps: _Optional[float] = ..., weight_decay: _Optional[float] = ..., gradient_clipping: _Optional[bool] = ..., max_gradient: _Optional[float] = ...) -> None: ...

class FusedRMSpropOptimizer(_message.Message):
    __slots__ = ("lr", "alpha", "eps", "weight_decay", "gradient_clipping", "max_gradient")
    LR_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    lr: float
    alpha: float
    eps: float
    weight_decay: float
    gradient_clipping: bool
    max_gradient: float
    def __init__(self, lr: _Optional[float] = ..., alpha: _Optional[float] = ..., eps: _Optional[float] = ..., weight_decay: _Optional[float] = ..., gradient_clipping: _Optional[bool] = ..., max_gradient: _Optional[float] = ...) -> None: ...

class SGDOptimizer(_message.Message):
    __slots__ = ("lr", "momentum", "weight_decay", "dampening", "nesterov", "fused")
    LR_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    DAMPENING_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    FUSED_FIELD_NUMBER: _ClassVar[int]
    lr: float
    momentum: float
    weight_decay: float
    dampening: float
    nesterov: bool
    fused: bool
    def __init__(self, lr: _Optional[float] = ..., momentum: _Optional[float] = ..., weight_decay: _Optional[float] = ..., dampening: _Optional[float] = ..., nesterov: _Optional[bool] = ..., fused: _Optional[bool] = ...) -> None: ...

class AdagradOptimizer(_message.Message):
    __slots__ = ("lr", "weight_decay", "initial_accumulator_value", "eps", "fused")
    LR_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    INITIAL_ACCUMULATOR_VALUE_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    FUSED_FIELD_NUMBER: _ClassVar[int]
    lr: float
    weight_decay: float
    initial_accumulator_value: float
    eps: float
    fused: bool
    def __init__(self, lr: _Optional[float] = ..., weight_decay: _Optional[float] = ..., initial_accumulator_value: _Optional[float] = ..., eps: _Optional[float] = ..., fused: _Optional[bool] = ...) -> None: ...

class AdamOptimizer(_message.Message):
    __slots__ = ("lr", "beta1", "beta2", "weight_decay", "eps", "amsgrad", "fused")
    LR_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    AMSGRAD_FIELD_NUMBER: _ClassVar[int]
    FUSED_FIELD_NUMBER: _ClassVar[int]
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    eps: float
    amsgrad: bool
    fused: bool
    def __init__(self, lr: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., weight_decay: _Optional[float] = ..., eps: _Optional[float] = ..., amsgrad: _Optional[bool] = ..., fused: _Optional[bool] = ...) -> None: ...

class AdamWOptimizer(_message.Message):
    __slots__ = ("lr", "beta1", "beta2", "weight_decay", "eps", "amsgrad", "fused")
    LR_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    AMSGRAD_FIELD_NUMBER: _ClassVar[int]
    FUSED_FIELD_NUMBER: _ClassVar[int]
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    eps: float
    amsgrad: bool
    fused: bool
    def __init__(self, lr: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., weight_decay: _Optional[float] = ..., eps: _Optional[float] = ..., amsgrad: _Optional[bool] = ..., fused: _Optional[bool] = ...) -> None: ...

class AdadeltaOptimizer(_message.Message):
    __slots__ = ("lr", "rho", "eps", "weight_decay")
    LR_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    lr: float
    rho: float
    eps: float
    weight_decay: float
    def __init__(self, lr: _Optional[float] = ..., rho: _Optional[float] = ..., eps: _Optional[float] = ..., weight_decay: _Optional[float] = ...) -> None: ...

class RMSpropOptimizer(_message.Message):
    __slots__ = ("lr", "alpha", "eps", "weight_decay")
    LR_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    lr: float
    alpha: float
    eps: float
    weight_decay: float
    def __init__(self, lr: _Optional[float] = ..., alpha: _Optional[float] = ..., eps: _Optional[float] = ..., weight_decay: _Optional[float] = ...) -> None: ...

class ConstantLR(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExponentialDecayLR(_message.Message):
    __slots__ = ("decay_size", "decay_factor", "staircase", "warmup_learning_rate", "warmup_size", "min_learning_rate", "by_epoch")
    DECAY_SIZE_FIELD_NUMBER: _ClassVar[int]
    DECAY_FACTOR_FIELD_NUMBER: _ClassVar[int]
    STAIRCASE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    decay_size: int
    decay_factor: float
    staircase: bool
    warmup_learning_rate: float
    warmup_size: int
    min_learning_rate: float
    by_epoch: bool
    def __init__(self, decay_size: _Optional[int] = ..., decay_factor: _Optional[float] = ..., staircase: _Optional[bool] = ..., warmup_learning_rate: _Optional[float] = ..., warmup_size: _Optional[int] = ..., min_learning_rate: _Optional[float] = ..., by_epoch: _Optional[bool] = ...) -> None: ...

class ManualStepLR(_message.Message):
    __slots__ = ("schedule_sizes", "learning_rates", "warmup", "by_epoch")
    SCHEDULE_SIZES_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATES_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    BY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    schedule_sizes: _containers.RepeatedScalarFieldContainer[int]
    learning_rates: _containers.RepeatedScalarFieldContainer[float]
    warmup: bool
    by_epoch: bool
    def __init__(self, schedule_sizes: _Optional[_Iterable[int]] = ..., learning_rates: _Optional[_Iterable[float]] = ..., warmup: _Optional[bool] = ..., by_epoch: _Optional[bool] = ...) -> None: ...

class CosineAnnealingLR(_message.Message):
    __slots__ = ("T_max", "min_learning_rate", "warmup_learning_rate", "warmup_size", "by_epoch")
    T_MAX_FIELD_NUMBER: _ClassVar[int]
    MIN_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    BY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    T_max: int
    min_learning_rate: float
    warmup_learning_rate: float
    warmup_size: int
    by_epoch: bool
    def __init__(self, T_max: _Optional[int] = ..., min_learning_rate: _Optional[float] = ..., warmup_learning_rate: _Optional[float] = ..., warmup_size: _Optional[int] = ..., by_epoch: _Optional[bool] = ...) -> None: ...

class CosineAnnealingWarmRestartsLR(_message.Message):
    __slots__ = ("T_0", "T_mult", "min_learning_rate", "warmup_learning_rate", "warmup_size", "by_epoch")
    T_0_FIELD_NUMBER: _ClassVar[int]
    T_MULT_FIELD_NUMBER: _ClassVar[int]
    MIN_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    BY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    T_0: int
    T_mult: int
    min_learning_rate: float
    warmup_learning_rate: float
    warmup_size: int
    by_epoch: bool
    def __init__(self, T_0: _Optional[int] = ..., T_mult: _Optional[int] = ..., min_learning_rate: _Optional[float] = ..., warmup_learning_rate: _Optional[float] = ..., warmup_size: _Optional[int] = ..., by_epoch: _Optional[bool] = ...) -> None: ...
