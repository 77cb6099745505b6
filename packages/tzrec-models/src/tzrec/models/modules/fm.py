"""Factorization-machine second-order term, the pairwise part of FM/DeepFM."""

from __future__ import annotations

import torch
from torch import nn


class FactorizationMachine(nn.Module):
    """Sum over feature pairs ``i < j`` of ``v_i * v_j``, per embedding dimension.

    Computed in linear time as ``0.5 * ((sum_i v_i)^2 - sum_i v_i^2)``: input
    ``(B, N, D)`` (N feature embeddings of width D), output ``(B, D)``. Summing the output
    over D gives the classic FM interaction ``sum_{i<j} <v_i, v_j>``.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` embeddings -> ``(B, D)`` second-order interactions."""
        total = features.sum(dim=1)
        return 0.5 * (total * total - (features * features).sum(dim=1))
