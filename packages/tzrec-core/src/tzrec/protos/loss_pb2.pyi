from google.protobuf.internal import containers as _containers
from google.protobuf.internal import python_message as _python_message
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LossConfig(_message.Message):
    __slots__ = ("binary_cross_entropy", "softmax_cross_entropy", "l2_loss", "jrc_loss", "binary_focal_loss", "recon_loss", "commitment_loss", "contrastive_loss")
    Extensions: _python_message._ExtensionDict
    BINARY_CROSS_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    SOFTMAX_CROSS_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    L2_LOSS_FIELD_NUMBER: _ClassVar[int]
    JRC_LOSS_FIELD_NUMBER: _ClassVar[int]
    BINARY_FOCAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    RECON_LOSS_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_LOSS_FIELD_NUMBER: _ClassVar[int]
    CONTRASTIVE_LOSS_FIELD_NUMBER: _ClassVar[int]
    binary_cross_entropy: BinaryCrossEntropy
    softmax_cross_entropy: SoftmaxCrossEntropy
    l2_loss: L2Loss
    jrc_loss: JRCLoss
    binary_focal_loss: BinaryFocalLoss
    recon_loss: SidReconLoss
    commitment_loss: SidCommitmentLoss
    contrastive_loss: SidContrastiveLoss
    def __init__(self, binary_cross_entropy: _Optional[_Union[BinaryCrossEntropy, _Mapping]] = ..., softmax_cross_entropy: _Optional[_Union[SoftmaxCrossEntropy, _Mapping]] = ..., l2_loss: _Optional[_Union[L2Loss, _Mapping]] = ..., jrc_loss: _Optional[_Union[JRCLoss, _Mapping]] = ..., binary_focal_loss: _Optional[_Union[BinaryFocalLoss, _Mapping]] = ..., recon_loss: _Optional[_Union[SidReconLoss, _Mapping]] = ..., commitment_loss: _Optional[_Union[SidCommitmentLoss, _Mapping]] = ..., contrastive_loss: _Optional[_Union[SidContrastiveLoss, _Mapping]] = ...) -> None: ...

class SidReconLoss(_message.Message):
    __slots__ = ("recon_type",)
    RECON_TYPE_FIELD_NUMBER: _ClassVar[int]
    recon_type: str
    def __init__(self, recon_type: _Optional[str] = ...) -> None: ...

class SidCommitmentLoss(_message.Message):
    __slots__ = ("latent_weight", "commitment_type")
    LATENT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    latent_weight: _containers.RepeatedScalarFieldContainer[float]
    commitment_type: str
    def __init__(self, latent_weight: _Optional[_Iterable[float]] = ..., commitment_type: _Optional[str] = ...) -> None: ...

class SidContrastiveLoss(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BinaryCrossEntropy(_message.Message):
    __slots__ = ("label_smoothing",)
    LABEL_SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    label_smoothing: float
    def __init__(self, label_smoothing: _Optional[float] = ...) -> None: ...

class SoftmaxCrossEntropy(_message.Message):
    __slots__ = ("label_smoothing",)
    LABEL_SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    label_smoothing: float
    def __init__(self, label_smoothing: _Optional[float] = ...) -> None: ...

class L2Loss(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JRCLoss(_message.Message):
    __slots__ = ("session_name", "alpha")
    SESSION_NAME_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    session_name: str
    alpha: float
    def __init__(self, session_name: _Optional[str] = ..., alpha: _Optional[float] = ...) -> None: ...

class BinaryFocalLoss(_message.Message):
    __slots__ = ("gamma", "alpha")
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    gamma: float
    alpha: float
    def __init__(self, gamma: _Optional[float] = ..., alpha: _Optional[float] = ...) -> None: ...
