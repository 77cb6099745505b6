"""Cross layers of Deep & Cross Networks: DCN's rank-one cross and DCN-v2's low-rank cross."""

from __future__ import annotations

import torch
from torch import nn


class Cross(nn.Module):
    """DCN (v1) cross network: ``x_{l+1} = x_0 * (w_l . x_l) + b_l + x_l``.

    Each layer has a weight vector ``w_l`` (``(D,)``, Xavier-uniform) and a bias ``b_l``
    (zeros). Input and output ``(B, D)``.

    Args:
        input_dim: width D of the input.
        cross_num: number of cross layers.
    """

    def __init__(self, input_dim: int, cross_num: int = 3) -> None:
        super().__init__()
        self._input_dim = int(input_dim)
        self.cross_num = int(cross_num)
        self.w = nn.ModuleList(
            nn.Linear(self._input_dim, 1, bias=False) for _ in range(self.cross_num)
        )
        self.b = nn.ParameterList(
            nn.Parameter(torch.zeros(self._input_dim)) for _ in range(self.cross_num)
        )
        for layer in self.w:
            nn.init.xavier_uniform_(layer.weight)

    def output_dim(self) -> int:
        """Width of the output (the input's)."""
        return self._input_dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Apply the cross layers to ``(B, D)``."""
        x = x0
        for w, b in zip(self.w, self.b, strict=True):
            x = x0 * w(x) + b + x
        return x


class CrossV2(nn.Module):
    """DCN-v2 cross network with a low-rank kernel: ``x_{l+1} = x_0 * (V_l U_l x_l + c_l) + x_l``.

    ``U_l`` maps D to ``low_rank`` (no bias) and ``V_l`` maps back to D with bias ``c_l``,
    so ``V_l U_l`` stands for the full ``D x D`` matrix of the paper. Input/output ``(B, D)``.

    Args:
        input_dim: width D of the input.
        cross_num: number of cross layers.
        low_rank: inner width of each layer's factorised kernel.
    """

    def __init__(self, input_dim: int, cross_num: int = 3, low_rank: int = 32) -> None:
        super().__init__()
        self._input_dim = int(input_dim)
        self.cross_num = int(cross_num)
        self.low_rank = int(low_rank)
        self.u_kernels = nn.ModuleList(
            nn.Linear(self._input_dim, self.low_rank, bias=False) for _ in range(self.cross_num)
        )
        self.v_kernels = nn.ModuleList(
            nn.Linear(self.low_rank, self._input_dim) for _ in range(self.cross_num)
        )

    def output_dim(self) -> int:
        """Width of the output (the input's)."""
        return self._input_dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Apply the cross layers to ``(B, D)``."""
        x = x0
        for u, v in zip(self.u_kernels, self.v_kernels, strict=True):
            x = x0 * v(u(x)) + x
        return x
