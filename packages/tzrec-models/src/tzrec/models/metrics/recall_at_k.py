"""Recall@K for match models."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from tzrec.protos import metric_pb2


class RecallAtK(Metric):
    """Fraction of relevant items found among each row's ``top_k`` highest scores.

    ``update(preds, target=None)``: ``preds`` are scores ``(B, N)``; ``target`` is a
    ``(B, N)`` bool/0-1 relevance matrix, or ``(B,)`` indices of each row's positive, or
    None when the positive is column 0 (a match model's user-vs-[pos, negs] similarity).
    In-batch negatives (positive on the diagonal) pass ``torch.arange(B)``.

    Args:
        config: a ``RecallAtK`` message (``top_k``).
        num_class: unused.
    """

    full_state_update = False

    def __init__(
        self, config: metric_pb2.RecallAtK | None = None, num_class: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.top_k = (config or metric_pb2.RecallAtK()).top_k
        if self.top_k <= 0:
            raise ValueError(f"recall_at_k needs top_k > 0, got {self.top_k}")
        self.add_state("num_true_pos", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """Add a batch of scores and relevance."""
        if target is None:
            relevant = torch.zeros_like(preds, dtype=torch.bool)
            relevant[:, 0] = True
        elif target.dim() == 1:
            relevant = torch.zeros_like(preds, dtype=torch.bool)
            relevant.scatter_(1, target.long().unsqueeze(1), True)
        else:
            relevant = target.bool()
        k = min(self.top_k, preds.size(-1))
        top = torch.topk(preds, k, dim=-1).indices
        self.num_true_pos += torch.gather(relevant, -1, top).sum()
        self.num_total += relevant.sum()

    def compute(self) -> torch.Tensor:
        """Recall so far (0 before any relevant item was seen)."""
        total = self.num_total.clamp_min(1).to(torch.float32)
        return self.num_true_pos.to(torch.float32) / total
