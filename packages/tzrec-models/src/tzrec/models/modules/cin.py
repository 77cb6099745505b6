"""Compressed Interaction Network (xDeepFM): explicit vector-wise feature crosses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CIN(nn.Module):
    """CIN over ``(B, m, D)`` field embeddings ``X^0``.

    Layer k forms every product of a row of ``X^{k-1}`` (``H_{k-1}`` rows, ``H_0 = m``) with
    a row of ``X^0``, elementwise over D, and mixes the ``H_{k-1} * m`` products into
    ``H_k`` rows with a width-1 convolution (weights ``W^k`` and a bias):
    ``X^k_h = sum_{i,j} W^k_{h,i,j} (X^{k-1}_i * X^0_j) + b^k_h``. Each layer is summed over
    D and the sums are concatenated: output ``(B, sum_k H_k)``.

    Args:
        feature_num: number of fields m.
        cin_layer_size: ``H_k`` of each layer (at least one).
    """

    def __init__(self, feature_num: int, cin_layer_size: Sequence[int]) -> None:
        super().__init__()
        self.feature_num = int(feature_num)
        self.cin_layer_size = [int(h) for h in cin_layer_size]
        if not self.cin_layer_size:
            raise ValueError("CIN: cin_layer_size must name at least one layer")
        rows = [self.feature_num, *self.cin_layer_size[:-1]]
        self.cin_layers = nn.ModuleList(
            nn.Conv1d(h_prev * self.feature_num, h, kernel_size=1)
            for h_prev, h in zip(rows, self.cin_layer_size, strict=True)
        )

    def output_dim(self) -> int:
        """Width of the output: ``sum(cin_layer_size)``."""
        return sum(self.cin_layer_size)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """``(B, m, D)`` field embeddings -> ``(B, sum_k H_k)``."""
        x = x0
        pooled = []
        for layer in self.cin_layers:
            z = torch.einsum("bhd,bmd->bhmd", x, x0).flatten(1, 2)
            x = layer(z)
            pooled.append(x.sum(dim=2))
        return torch.cat(pooled, dim=1)
