"""Losses by ``LossConfig`` oneof name, each built as ``cls(config, num_class, reduction)``."""

from tzrec.models.losses.losses import (
    BinaryCrossEntropy,
    BinaryFocalLoss,
    JRCLoss,
    L2Loss,
    Loss,
    SoftmaxCrossEntropy,
    create_loss,
    weighted_mean,
)

__all__ = [
    "BinaryCrossEntropy",
    "BinaryFocalLoss",
    "JRCLoss",
    "L2Loss",
    "Loss",
    "SoftmaxCrossEntropy",
    "create_loss",
    "weighted_mean",
]
