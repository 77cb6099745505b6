"""Grouped AUC: the mean AUC of groups (e.g. users) that have both labels."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification.auroc import _binary_auroc_compute
from torchmetrics.utilities.data import dim_zero_cat

from tzrec.protos import metric_pb2


class GroupedAUC(Metric):
    """Mean over groups of each group's exact binary AUC; one-label groups are skipped.

    ``update(preds, target, grouping_key)`` with probabilities, 0/1 labels and integer group
    ids, all ``(B,)``. States are concatenated across ranks when computing, so a group split
    across ranks is still scored as one group.

    Args:
        config: a ``GroupedAUC`` message; ``grouping_key`` names the id column the caller
            reads from the batch.
        num_class: 1 or 2.
    """

    full_state_update = False

    def __init__(
        self, config: metric_pb2.GroupedAUC | None = None, num_class: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.grouping_key = config.grouping_key if config is not None else ""
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("group", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, grouping_key: torch.Tensor) -> None:
        """Add a batch."""
        if preds.dim() == 2 and preds.size(1) == 2:
            preds = preds[:, 1]
        self.preds.append(preds.reshape(-1).float())
        self.target.append(target.reshape(-1).long())
        self.group.append(grouping_key.reshape(-1).long())

    def compute(self) -> torch.Tensor:
        """Mean AUC over groups with both labels (0 when there is none)."""
        if isinstance(self.preds, list) and not self.preds:
            return torch.tensor(0.0)
        preds = dim_zero_cat(self.preds)
        target = dim_zero_cat(self.target)
        group = dim_zero_cat(self.group)
        order = torch.argsort(group, stable=True)
        _, counts = torch.unique_consecutive(group[order], return_counts=True)
        aucs = []
        for p, t in zip(
            torch.split(preds[order], counts.tolist()),
            torch.split(target[order], counts.tolist()),
            strict=True,
        ):
            positives = int(t.sum())
            if 0 < positives < t.numel():
                aucs.append(_binary_auroc_compute((p, t), None))
        if not aucs:
            return torch.tensor(0.0, device=preds.device)
        return torch.stack(aucs).mean()
