"""DLRM's dot interaction: the inner product of every pair of feature vectors."""

from __future__ import annotations

import torch
from torch import nn


class InteractionArch(nn.Module):
    """``<x_i, x_j>`` for every pair ``i < j`` of ``(B, N, D)`` features -> ``(B, N(N-1)/2)``.

    Pairs are in row-major upper-triangle order: (0,1), (0,2), ..., (1,2), ... (a feature
    with itself is not included, as upstream).

    Args:
        feature_num: number of feature vectors N.
    """

    def __init__(self, feature_num: int) -> None:
        super().__init__()
        self.feature_num = int(feature_num)
        self.register_buffer(
            "triu_indices",
            torch.triu_indices(self.feature_num, self.feature_num, offset=1),
            persistent=False,
        )

    def output_dim(self) -> int:
        """Number of pairs ``N(N-1)/2``."""
        return self.feature_num * (self.feature_num - 1) // 2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` -> ``(B, N(N-1)/2)`` pairwise dot products."""
        gram = torch.bmm(features, features.transpose(1, 2))
        return gram[:, self.triu_indices[0], self.triu_indices[1]]
