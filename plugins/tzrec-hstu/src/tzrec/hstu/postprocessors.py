"""Output postprocessors applied to STU outputs (jagged (N, D) in, (N, D) out).

Each is built as ``cls(config, embedding_dim, kernel)`` and called as ``post(x)`` or
``post(x, timestamps)`` with ``timestamps`` (N,) int64 seconds of the same tokens; only
``timestamp_layernorm_postprocessor`` reads them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.core.errors import ConfigError
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

    def forward(self, x: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) to (N, D) with unit rows (``timestamps`` unused)."""
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

    def forward(self, x: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) to (N, D), each row normalised then scaled and shifted (``timestamps`` unused)."""
        return layer_norm(x, self.weight, self.bias, kernel=self.kernel)


class TimestampLayerNormPostprocessor(nn.Module):
    """``timestamp_layernorm_postprocessor``: mix in cyclic time features, then layer norm.

    For every pair ``(u_k, n_k)`` of ``time_duration_period_units`` and
    ``time_duration_units_per_period`` (e.g. ``(3600, 24)``: hour of day, ``(86400, 7)``: day
    of week) a token with timestamp ``ts`` gets the angle
    ``phi_k = 2π · ((ts // u_k) mod n_k) / n_k`` and the features ``cos phi_k, sin phi_k``;
    then ``out = LayerNorm(Linear([x, cos phi_1, sin phi_1, ...]))``, D + 2K → D.

    Args:
        config: a ``GRTimestampLayerNormPostprocessor`` message.
        embedding_dim: D.
        kernel: PYTORCH or TRITON (for the layer norm).

    Raises:
        ConfigError: the two lists differ in length, or hold a zero.
    """

    def __init__(
        self,
        config: module_pb2.GRTimestampLayerNormPostprocessor | None = None,
        embedding_dim: int = 0,
        kernel: Kernel | int | str = Kernel.PYTORCH,
    ) -> None:
        super().__init__()
        config = config or module_pb2.GRTimestampLayerNormPostprocessor()
        units = [int(u) for u in config.time_duration_period_units]
        per_period = [int(n) for n in config.time_duration_units_per_period]
        field = "timestamp_layernorm_postprocessor"
        if len(units) != len(per_period):
            raise ConfigError(
                f"{field}: time_duration_period_units ({len(units)} values) and "
                f"time_duration_units_per_period ({len(per_period)}) must have the same length"
            )
        if any(v <= 0 for v in units + per_period):
            raise ConfigError(
                f"{field}: time_duration_period_units and time_duration_units_per_period "
                "must be > 0"
            )
        self.register_buffer(
            "period_units", torch.tensor(units, dtype=torch.int64), persistent=False
        )
        self.register_buffer(
            "units_per_period", torch.tensor(per_period, dtype=torch.int64), persistent=False
        )
        self.combiner = nn.Linear(embedding_dim + 2 * len(units), embedding_dim)
        nn.init.xavier_uniform_(self.combiner.weight)
        nn.init.zeros_(self.combiner.bias)
        self.weight = nn.Parameter(torch.ones(embedding_dim))
        self.bias = nn.Parameter(torch.zeros(embedding_dim))
        self.kernel = kernel

    def time_features(self, timestamps: torch.Tensor) -> torch.Tensor:
        """(N,) seconds to (N, 2K): ``cos phi_k, sin phi_k`` for every period k."""
        ts = timestamps.reshape(-1, 1).to(torch.int64)
        units = torch.div(ts, self.period_units, rounding_mode="floor")
        phase = torch.remainder(units, self.units_per_period).to(torch.float32)
        angle = phase / self.units_per_period.to(torch.float32) * (2.0 * math.pi)
        return torch.stack([torch.cos(angle), torch.sin(angle)], dim=2).reshape(ts.shape[0], -1)

    def forward(self, x: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) tokens and their (N,) timestamps to (N, D).

        Raises:
            ConfigError: called without timestamps (a model that does not pass them).
        """
        if timestamps is None:
            raise ConfigError(
                "timestamp_layernorm_postprocessor needs the tokens' timestamps; this model "
                "does not pass them (use it with dlrm_hstu, or choose layernorm_postprocessor)"
            )
        feats = self.time_features(timestamps).to(x.dtype)
        y = self.combiner(torch.cat([x, feats], dim=1))
        return layer_norm(y, self.weight, self.bias, kernel=self.kernel)
