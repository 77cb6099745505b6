"""AUC, accuracy and regression errors as torchmetrics metrics built from config messages.

Each is ``cls(config=None, num_class=1, **torchmetrics_kwargs)`` and updates with
``update(preds, target)``. Binary metrics take probabilities ``(B,)``; given ``(B, 2)``
probabilities they use column 1. Distributed reduction is torchmetrics' own.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanAbsoluteError as _MAE
from torchmetrics import MeanSquaredError as _MSE
from torchmetrics import Metric
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassAUROC,
)
from torchmetrics.functional.classification.auroc import _binary_auroc_compute
from torchmetrics.functional.classification.precision_recall_curve import (
    _binary_precision_recall_curve_format,
    _binary_precision_recall_curve_update,
)

from tzrec.protos import metric_pb2


def _positive_probs(preds: torch.Tensor) -> torch.Tensor:
    if preds.dim() == 2 and preds.size(1) == 2:
        return preds[:, 1]
    return preds.reshape(-1)


class AUC(BinaryAUROC):
    """Binary AUC, binned into ``config.thresholds`` thresholds (exact when 0).

    Args:
        config: an ``AUC`` message.
        num_class: 1, or 2 (then ``preds`` may be ``(B, 2)`` probabilities).
    """

    def __init__(
        self, config: metric_pb2.AUC | None = None, num_class: int = 1, **kwargs: Any
    ) -> None:
        if num_class > 2:
            raise ValueError(f"auc needs num_class <= 2, got {num_class}; use multiclass_auc")
        thresholds = (config or metric_pb2.AUC()).thresholds
        super().__init__(thresholds=thresholds or None, **kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of probabilities and 0/1 targets."""
        super().update(_positive_probs(preds), target.reshape(-1).long())


class MulticlassAUC(MulticlassAUROC):
    """Multi-class AUC over ``(B, num_class)`` probabilities.

    Args:
        config: a ``MulticlassAUC`` message (``thresholds``, ``average``).
        num_class: number of classes.
    """

    def __init__(
        self, config: metric_pb2.MulticlassAUC | None = None, num_class: int = 2, **kwargs: Any
    ) -> None:
        config = config or metric_pb2.MulticlassAUC()
        super().__init__(
            num_classes=num_class,
            average=config.average,
            thresholds=config.thresholds or None,
            **kwargs,
        )


class DecayAUC(Metric):
    """Binned AUC for training: batches collect in a buffer merged with decay by :meth:`decay`.

    Args:
        config: an ``AUC`` message (``thresholds``).
        num_class: 1 or 2.
    """

    full_state_update = False

    def __init__(
        self, config: metric_pb2.AUC | None = None, num_class: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        n = (config or metric_pb2.AUC()).thresholds or 200
        self.register_buffer("thresholds", torch.linspace(0, 1, n), persistent=False)
        # The decayed counts are fractional; the per-batch buffer counts are exact.
        self.add_state("confmat", default=torch.zeros(n, 2, 2), dist_reduce_fx="sum")
        self.add_state(
            "buffer_confmat", default=torch.zeros(n, 2, 2, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch to the buffer."""
        p, t, _ = _binary_precision_recall_curve_format(
            _positive_probs(preds), target.reshape(-1).long(), self.thresholds
        )
        self.buffer_confmat += _binary_precision_recall_curve_update(p, t, self.thresholds)

    def decay(self, decay: float) -> None:
        """Merge the buffer: ``confmat = decay * confmat + (1 - decay) * buffer``."""
        batch = self.buffer_confmat.to(self.confmat.dtype)
        if torch.any(self.confmat > 0):
            self.confmat = decay * self.confmat + (1 - decay) * batch
        else:
            self.confmat = self.confmat + batch
        self.buffer_confmat = torch.zeros_like(self.buffer_confmat)

    def compute(self) -> torch.Tensor:
        """AUC of the decayed confusion matrices."""
        return _binary_auroc_compute(self.confmat, self.thresholds)


class Accuracy(Metric):
    """Binary accuracy at ``config.threshold``, or top-k multi-class accuracy.

    Args:
        config: an ``Accuracy`` message (``threshold``, ``top_k``).
        num_class: 1 (binary) or the number of classes.
    """

    def __init__(
        self, config: metric_pb2.Accuracy | None = None, num_class: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        config = config or metric_pb2.Accuracy()
        self.inner: Metric
        if num_class > 1:
            self.inner = MulticlassAccuracy(
                num_classes=num_class, top_k=config.top_k, average="micro"
            )
        else:
            self.inner = BinaryAccuracy(threshold=config.threshold)
        self._num_class = num_class

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of probabilities and labels."""
        if self._num_class > 1:
            self.inner.update(preds, target.reshape(-1).long())
        else:
            self.inner.update(preds.reshape(-1), target.reshape(-1).long())

    def compute(self) -> torch.Tensor:
        """Accuracy so far (synchronised across ranks by the inner metric)."""
        return self.inner.compute()

    def reset(self) -> None:
        """Forget every batch."""
        super().reset()
        self.inner.reset()


class MeanAbsoluteError(_MAE):
    """Mean absolute error of regression outputs.

    Args:
        config: a ``MeanAbsoluteError`` message (no fields).
        num_class: unused.
    """

    def __init__(self, config: Any = None, num_class: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch."""
        super().update(preds.reshape(-1), target.reshape(-1).to(preds.dtype))


class MeanSquaredError(_MSE):
    """Mean squared error of regression outputs.

    Args:
        config: a ``MeanSquaredError`` message (no fields).
        num_class: unused.
    """

    def __init__(self, config: Any = None, num_class: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch."""
        super().update(preds.reshape(-1), target.reshape(-1).to(preds.dtype))


# Training uses a decaying AUC (see tzrec.models.metrics.factory.create_train_metric).
AUC.train_metric_cls = DecayAUC
