"""XAUC and grouped XAUC: how often a pair of rows is ordered by the prediction as by the label.

Upstream's XAUC is the fraction of row pairs ``(i, j)`` with ``(t_i - t_j) * (p_i - p_j) > 0``
(a label or prediction tie counts as not concordant), estimated from randomly sampled pairs
(``sample_ratio`` / ``max_pairs``) because enumerating the n(n-1)/2 pairs is quadratic. tzrec
counts the concordant pairs exactly in O(n log² n) (:func:`concordant_counts`), so the value
is the expectation of upstream's estimate, with no sampling noise, and the same for any
number of processes (states are concatenated across ranks). Grouped XAUC is the mean of
each group's XAUC (groups with at least two rows) weighted by group size, as upstream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from tzrec.protos import metric_pb2


def earlier_smaller_counts(values: np.ndarray) -> np.ndarray:
    """For each position j, how many positions i < j hold a strictly smaller value.

    Vectorised merge counting: at each level, blocks of ``size`` rows are paired and every
    right-block value is located (``searchsorted``) among the sorted left-block values.
    """
    n = values.shape[0]
    counts = np.zeros(n, dtype=np.int64)
    if n < 2:
        return counts
    ranks = np.unique(values, return_inverse=True)[1].astype(np.int64)
    idx = np.arange(n, dtype=np.int64)
    size = 1
    while size < n:
        block = idx // size
        pair = block // 2
        right = (block % 2) == 1
        keys = pair * n + ranks
        left_keys = np.sort(keys[~right])
        queries = keys[right]
        below = np.searchsorted(left_keys, queries, side="left")
        start = np.searchsorted(left_keys, pair[right] * n, side="left")
        counts[right] += below - start
        size *= 2
    return counts


def concordant_counts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """For each row j, the rows i with ``x_i < x_j`` and ``y_i < y_j`` (both strict).

    Rows are ordered by ``x`` ascending and, within equal ``x``, by ``y`` descending: then
    an earlier row with a smaller ``y`` always has a strictly smaller ``x``. Returned in the
    input's row order.
    """
    order = np.lexsort((-y, x))
    counts = np.empty_like(order)
    counts[order] = earlier_smaller_counts(y[order])
    return counts


def _dense_rank(*keys: np.ndarray) -> np.ndarray:
    """Lexicographic dense rank of rows by ``keys`` (the first key most significant)."""
    order = np.lexsort(tuple(reversed(keys)))
    ranks = np.empty(order.shape[0], dtype=np.int64)
    sorted_keys = [k[order] for k in keys]
    new = np.zeros(order.shape[0], dtype=bool)
    if order.shape[0]:
        new[0] = True
        for k in sorted_keys:
            new[1:] |= k[1:] != k[:-1]
    ranks[order] = np.cumsum(new) - 1
    return ranks


def xauc(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Exact XAUC: concordant pairs over all n(n-1)/2 pairs (0 with fewer than two rows)."""
    p = preds.detach().double().cpu().numpy().reshape(-1)
    t = target.detach().double().cpu().numpy().reshape(-1)
    n = p.shape[0]
    if n < 2:
        return torch.tensor(0.0)
    concordant = concordant_counts(t, p).sum()
    return torch.tensor(float(concordant) / (n * (n - 1) / 2), dtype=torch.float64)


def grouped_xauc(preds: torch.Tensor, target: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Size-weighted mean of each group's exact XAUC over groups with two or more rows.

    One pass for all groups: rows are ranked by ``(group, target)`` and ``(group, pred)``,
    so a row of an earlier group is always "smaller" in both; those cross-group counts
    (the rows of all earlier groups) are subtracted per row.
    """
    p = preds.detach().double().cpu().numpy().reshape(-1)
    t = target.detach().double().cpu().numpy().reshape(-1)
    g = group.detach().cpu().numpy().reshape(-1).astype(np.int64)
    if p.shape[0] < 2:
        return torch.tensor(0.0)
    counts = concordant_counts(_dense_rank(g, t), _dense_rank(g, p))
    groups, gid, sizes = np.unique(g, return_inverse=True, return_counts=True)
    before = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # rows of earlier groups
    within = np.bincount(gid, weights=counts - before[gid], minlength=groups.shape[0])
    scored = sizes > 1
    if not scored.any():
        return torch.tensor(0.0)
    pairs = sizes[scored] * (sizes[scored] - 1) / 2
    values = within[scored] / pairs
    return torch.tensor(
        float((values * sizes[scored]).sum() / sizes[scored].sum()), dtype=torch.float64
    )


class XAUC(Metric):
    """Exact XAUC over the evaluation set, or its mean over batches with ``in_batch``.

    ``sample_ratio`` / ``max_pairs`` (upstream's pair sampling) are validated as upstream
    and need no sampling here: the exact value is what their estimate estimates.
    ``in_batch`` averages each batch's XAUC, as upstream (a different number: pairs never
    span batches, and batches are per process).
    """

    full_state_update = False

    def __init__(
        self, config: metric_pb2.XAUC | None = None, num_class: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        from tzrec.core.errors import ConfigError

        config = config if config is not None else metric_pb2.XAUC()
        if not 0 < config.sample_ratio <= 1:
            raise ConfigError(
                f"metrics.xauc.sample_ratio: expected a value in (0, 1], got {config.sample_ratio}"
            )
        if num_class != 1:
            raise ConfigError(f"metrics.xauc needs num_class 1 (regression 'y'), got {num_class}")
        self.in_batch = bool(config.in_batch)
        if self.in_batch:
            self.add_state("batch_values", default=[], dist_reduce_fx="cat")
        else:
            self.add_state("preds", default=[], dist_reduce_fx="cat")
            self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predictions ``y`` and labels, both ``(B,)``."""
        if self.in_batch:
            self.batch_values.append(xauc(preds, target).reshape(1).to(preds.device))
        else:
            self.preds.append(preds.reshape(-1).float())
            self.target.append(target.reshape(-1).float())

    def compute(self) -> torch.Tensor:
        """The XAUC (0 before any pair was seen)."""
        if self.in_batch:
            if isinstance(self.batch_values, list) and not self.batch_values:
                return torch.tensor(0.0)
            return dim_zero_cat(self.batch_values).double().mean().float()
        if isinstance(self.preds, list) and not self.preds:
            return torch.tensor(0.0)
        return xauc(dim_zero_cat(self.preds), dim_zero_cat(self.target)).float()


class GroupedXAUC(Metric):
    """Size-weighted mean XAUC of groups (e.g. users); ``update(preds, target, grouping_key)``.

    ``max_pairs_per_group`` (upstream's per-group pair sampling) needs no sampling here:
    each group's XAUC is exact. States are concatenated across ranks, so a group split
    across ranks is still scored as one group.
    """

    full_state_update = False

    def __init__(
        self, config: metric_pb2.GroupedXAUC | None = None, num_class: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        from tzrec.core.errors import ConfigError

        if num_class != 1:
            raise ConfigError(
                f"metrics.grouped_xauc needs num_class 1 (regression 'y'), got {num_class}"
            )
        self.grouping_key = config.grouping_key if config is not None else ""
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("group", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, grouping_key: torch.Tensor) -> None:
        """Add a batch."""
        self.preds.append(preds.reshape(-1).float())
        self.target.append(target.reshape(-1).float())
        self.group.append(grouping_key.reshape(-1).long())

    def compute(self) -> torch.Tensor:
        """The grouped XAUC (0 when no group has two rows)."""
        if isinstance(self.preds, list) and not self.preds:
            return torch.tensor(0.0)
        return grouped_xauc(
            dim_zero_cat(self.preds), dim_zero_cat(self.target), dim_zero_cat(self.group)
        ).float()


__all__ = [
    "XAUC",
    "GroupedXAUC",
    "concordant_counts",
    "earlier_smaller_counts",
    "grouped_xauc",
    "xauc",
]
