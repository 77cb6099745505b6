"""Output postprocessors applied to STU outputs (jagged (N, D) in, (N, D) out)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.kernels import Kernel, layer_norm
from tzrec.protos import module_pb2


class L2NormPostprocessor(nn.Module):
    """``l2norm_postprocessor``: every token scaled to unit L2 norm (zero stays zero).

    Args:
        config: a ``GRL2NormPostprocessor`` message.
        embedding_dim: D (unused; every postprocessor takes it).
        kernel: unused.
    """

    def __init__(
        self,
        config: module_pb2.GRL2NormPostprocessor | None = None,
        embedding_dim: int = 0,
        kernel: Kernel | int | str = Kernel.PYTORCH,
    ) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) to (N, D) with unit rows."""
        return F.normalize(x, p=2.0, dim=-1, eps=1e-6)


class LayerNormPostprocessor(nn.Module):
    """``layernorm_postprocessor``: a learned layer norm of every token.

    Args:
        config: a ``GRLayerNormPostprocessor`` message.
        embedding_dim: D.
        kernel: PYTORCH or TRITON.
    """

    def __init__(
        self,
        config: module_pb2.GRLayerNormPostprocessor | None = None,
        embedding_dim: int = 0,
        kernel: Kernel | int | str = Kernel.PYTORCH,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(embedding_dim))
        self.bias = nn.Parameter(torch.zeros(embedding_dim))
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) to (N, D), each row normalised then scaled and shifted."""
        return layer_norm(x, self.weight, self.bias, kernel=self.kernel)
