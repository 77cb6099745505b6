"""Training losses with sample-weight support.

Every loss is an ``nn.Module`` built as ``cls(config, num_class=1, reduction="mean")`` from
its ``LossConfig`` oneof message and called as ``loss(preds, labels, sample_weight=None,
**extra)``. ``prediction_key`` names the model output it expects (``"logits"`` or ``"y"``).
With ``sample_weight`` the result is ``mean(loss_i * w_i) / mean(w_i)`` (0 when every
weight is 0); ``reduction="none"`` returns the per-sample losses unweighted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.protos import loss_pb2


def weighted_mean(per_sample: torch.Tensor, sample_weight: torch.Tensor | None) -> torch.Tensor:
    """``mean(per_sample * w) / mean(w)``, or the plain mean without weights."""
    if sample_weight is None:
        return per_sample.mean()
    w = sample_weight.to(per_sample.dtype).reshape(per_sample.shape)
    denom = w.mean()
    num = (per_sample * w).mean()
    return torch.where(denom != 0, num / torch.where(denom != 0, denom, 1.0), 0.0 * num)


class Loss(nn.Module):
    """Base class: per-sample loss in :meth:`per_sample`, reduction and weights here.

    Args:
        reduction: ``"mean"`` (weighted mean) or ``"none"`` (per-sample losses).
    """

    prediction_key = "logits"

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"loss reduction must be 'mean' or 'none', got {reduction!r}")
        self.reduction = reduction

    def per_sample(self, preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Unreduced loss, one value per sample."""
        raise NotImplementedError

    def forward(
        self,
        preds: torch.Tensor,
        labels: torch.Tensor,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of ``preds`` against ``labels``, weighted by ``sample_weight``."""
        losses = self.per_sample(preds, labels)
        if self.reduction == "none":
            return losses
        return weighted_mean(losses, sample_weight)


class BinaryCrossEntropy(Loss):
    """Sigmoid cross entropy on logits ``(B,)``; labels are smoothed toward 0.5.

    Args:
        config: a ``BinaryCrossEntropy`` message (``label_smoothing``).
        num_class: must be 1.
        reduction: ``"mean"`` or ``"none"``.
    """

    def __init__(
        self,
        config: loss_pb2.BinaryCrossEntropy | None = None,
        num_class: int = 1,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        if num_class != 1:
            raise ValueError(f"binary_cross_entropy needs num_class 1, got {num_class}")
        self.label_smoothing = config.label_smoothing if config is not None else 0.0

    def per_sample(self, preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample sigmoid cross entropy."""
        target = labels.to(preds.dtype)
        if self.label_smoothing > 0:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(preds, target, reduction="none")


class BinaryFocalLoss(Loss):
    """Focal loss on binary logits ``(B,)``: cross entropy scaled by ``(1 - p_t)^gamma``.

    Args:
        config: a ``BinaryFocalLoss`` message (``gamma`` >= 0, ``alpha`` in (0, 1)).
        num_class: must be 1.
        reduction: ``"mean"`` or ``"none"``.
    """

    def __init__(
        self,
        config: loss_pb2.BinaryFocalLoss | None = None,
        num_class: int = 1,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        config = config if config is not None else loss_pb2.BinaryFocalLoss()
        if config.gamma < 0 or not 0 < config.alpha < 1:
            raise ValueError("binary_focal_loss needs gamma >= 0 and 0 < alpha < 1")
        if num_class != 1:
            raise ValueError(f"binary_focal_loss needs num_class 1, got {num_class}")
        self.gamma = config.gamma
        self.alpha = config.alpha

    def per_sample(self, preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample focal loss."""
        y = labels.to(preds.dtype)
        p = torch.sigmoid(preds)
        scale = self.alpha * y * (1 - p) ** self.gamma + (1 - self.alpha) * (1 - y) * p**self.gamma
        ce = F.binary_cross_entropy_with_logits(preds, y, reduction="none")
        return scale.detach() * ce


class SoftmaxCrossEntropy(Loss):
    """Softmax cross entropy on logits ``(B, C)`` against class indices ``(B,)``.

    For match models the logits are user-item similarities ``(B, N)``; pass ``labels=None``
    when the positive item is column 0 (sampled negatives follow it).

    Args:
        config: a ``SoftmaxCrossEntropy`` message (``label_smoothing``).
        num_class: number of classes (informational; the logits' width is used).
        reduction: ``"mean"`` or ``"none"``.
    """

    def __init__(
        self,
        config: loss_pb2.SoftmaxCrossEntropy | None = None,
        num_class: int = 1,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.label_smoothing = config.label_smoothing if config is not None else 0.0

    def per_sample(self, preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample softmax cross entropy."""
        return F.cross_entropy(
            preds, labels.long(), reduction="none", label_smoothing=self.label_smoothing
        )

    def forward(
        self,
        preds: torch.Tensor,
        labels: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss; ``labels=None`` means the positive is column 0 of every row."""
        if labels is None:
            labels = torch.zeros(preds.size(0), dtype=torch.long, device=preds.device)
        return super().forward(preds, labels, sample_weight)


class L2Loss(Loss):
    """Squared error of regression outputs ``y`` against float labels.

    Args:
        config: an ``L2Loss`` message (no fields).
        num_class: must be 1.
        reduction: ``"mean"`` or ``"none"``.
    """

    prediction_key = "y"

    def __init__(
        self, config: loss_pb2.L2Loss | None = None, num_class: int = 1, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        if num_class != 1:
            raise ValueError(f"l2_loss needs num_class 1, got {num_class}")

    def per_sample(self, preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample squared error."""
        return (preds - labels.to(preds.dtype)) ** 2


class JRCLoss(Loss):
    """JRC loss (arXiv 2208.06164): ``alpha * CE + (1 - alpha) * in-session competition``.

    Logits are ``(B, 2)``, labels ``(B,)`` in {0, 1}; call with ``session_ids=`` ``(B,)``.
    Within each session, every positive's class-1 logit competes (softmax) with the
    class-1 logits of the session's negatives, and every negative's class-0 logit with those
    of the session's positives.

    Args:
        config: a ``JRCLoss`` message (``session_name`` names the session column, ``alpha``).
        num_class: must be 2.
        reduction: ``"mean"`` or ``"none"``.
    """

    def __init__(
        self, config: loss_pb2.JRCLoss | None = None, num_class: int = 2, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        if num_class != 2:
            raise ValueError(f"jrc_loss needs num_class 2, got {num_class}")
        self.alpha = config.alpha if config is not None else 0.5
        self.session_name = config.session_name if config is not None else ""

    def _generative(
        self, logits: torch.Tensor, labels: torch.Tensor, session_ids: torch.Tensor
    ) -> torch.Tensor:
        same_session = session_ids.unsqueeze(1) == session_ids.unsqueeze(0)
        is_pos = labels == 1
        eye = torch.eye(labels.size(0), dtype=torch.bool, device=labels.device)
        per_sample = torch.zeros_like(logits[:, 0])
        for cls_idx, own in ((1, is_pos), (0, ~is_pos)):
            # Row i competes against same-session samples of the other label, plus itself.
            allowed = same_session & (~own.unsqueeze(0) | eye)
            scores = logits[:, cls_idx].unsqueeze(0).expand(labels.size(0), -1)
            scores = scores.masked_fill(~allowed, -1e9)
            ce = F.cross_entropy(
                scores, torch.arange(labels.size(0), device=labels.device), reduction="none"
            )
            per_sample = torch.where(own, ce, per_sample)
        return per_sample

    def forward(
        self,
        preds: torch.Tensor,
        labels: torch.Tensor,
        sample_weight: torch.Tensor | None = None,
        session_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of ``(B, 2)`` logits; ``session_ids`` is required."""
        if session_ids is None:
            raise ValueError("jrc_loss needs session_ids")
        labels = labels.long()
        ce = F.cross_entropy(preds, labels, reduction="none")
        ge = self._generative(preds, labels, session_ids)
        losses = self.alpha * ce + (1 - self.alpha) * ge
        if self.reduction == "none":
            return losses
        return weighted_mean(losses, sample_weight)


def create_loss(
    config: loss_pb2.LossConfig, num_class: int = 1, reduction: str = "mean"
) -> tuple[str, Loss]:
    """Build the loss a ``LossConfig`` names, through the plugin registry.

    Returns:
        The oneof name (``binary_cross_entropy``) and the loss module.
    """
    from tzrec.core import plugins
    from tzrec.core.config import provided_by, which_oneof
    from tzrec.core.errors import ConfigError

    chosen = which_oneof(config, "loss")
    if chosen is None:
        raise ConfigError("losses: a LossConfig sets no loss")
    name, sub = chosen
    cls = plugins.get("losses", name, provided_by(config, name))
    return name, cls(sub, num_class=num_class, reduction=reduction)


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
