"""Task towers: an optional MLP followed by a linear layer to ``num_class`` outputs."""

from __future__ import annotations

import torch
from torch import nn

from tzrec.models.modules.mlp import MLP
from tzrec.protos import module_pb2


class TaskTower(nn.Module):
    """Optional MLP then ``Linear(., num_class)``.

    Args:
        in_features: input width.
        num_class: number of outputs (1 for a binary or regression task).
        mlp: the tower's ``MLP`` config, or None for a linear tower.
    """

    def __init__(self, in_features: int, num_class: int = 1, mlp: module_pb2.MLP | None = None):
        super().__init__()
        self.num_class = num_class
        self.tower_mlp: MLP | None = None
        width = in_features
        if mlp is not None and len(mlp.hidden_units) > 0:
            self.tower_mlp = MLP.from_config(in_features, mlp)
            width = self.tower_mlp.output_dim()
        self.linear = nn.Linear(width, num_class)

    def output_dim(self) -> int:
        """Width of the output."""
        return self.num_class

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_features)`` to ``(B, num_class)``."""
        if self.tower_mlp is not None:
            features = self.tower_mlp(features)
        return self.linear(features)
