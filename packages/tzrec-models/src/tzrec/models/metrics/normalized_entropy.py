"""Normalized entropy: the model's log loss over that of always predicting the label rate."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from tzrec.protos import metric_pb2


class NormalizedEntropy(Metric):
    """``NE = Σ BCE(p, t) / -(Σt·log(r) + (n - Σt)·log(1 - r))`` with ``r = Σt / n``.

    As upstream: ``r`` is clamped to ``[eta, 1 - eta]``; below 1 the model beats the
    constant predictor. Sums are float64 and add across ranks.
    """

    full_state_update = False

    def __init__(
        self,
        config: metric_pb2.NormalizedEntropy | None = None,
        num_class: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from tzrec.core.errors import ConfigError

        if num_class > 2:
            raise ConfigError(
                f"metrics.normalized_entropy needs num_class <= 2 (binary), got {num_class}"
            )
        self.eta = float(config.eta) if config is not None else 1e-12
        for name in ("cross_entropy", "count", "positives"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of probabilities and 0/1 labels."""
        if preds.dim() == 2 and preds.size(1) == 2:
            preds = preds[:, 1]
        p = preds.detach().reshape(-1).double()
        t = target.detach().reshape(-1).double()
        self.cross_entropy += F.binary_cross_entropy(p, t, reduction="sum")
        self.count += t.numel()
        self.positives += t.sum()

    def compute(self) -> torch.Tensor:
        """The normalized entropy (0 before any row)."""
        if float(self.count) == 0:
            return torch.tensor(0.0)
        rate = (self.positives / self.count).clamp(self.eta, 1.0 - self.eta)
        base = -(
            self.positives * torch.log(rate) + (self.count - self.positives) * torch.log1p(-rate)
        )
        return (self.cross_entropy / base).float()


__all__ = ["NormalizedEntropy"]
