"""HSTU positional encoder: position-from-the-end and time-since-query embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from tzrec.core.errors import ConfigError
from tzrec.kernels import Kernel, add_timestamp_positional_embeddings, timestamp_position_buckets
from tzrec.protos import module_pb2


class HSTUPositionalEncoder(nn.Module):
    """``sqrt(D) · x + pos_emb[position bucket] + ts_emb[time bucket]`` on jagged rows.

    Position buckets count back from each row's newest item; time buckets bucket
    ``f(query_time - timestamp)`` (``f`` = ``time_bucket_fn``, ``sqrt`` or ``log``) with
    ``time_bucket_increments`` seconds as the unit (tzrec.kernels ``position`` doc).

    Args:
        config: a ``GRPositionalEncoder`` message.
        embedding_dim: D.
        kernel: PYTORCH or TRITON.
    """

    def __init__(
        self,
        config: module_pb2.GRPositionalEncoder,
        embedding_dim: int,
        kernel: Kernel | int | str = Kernel.PYTORCH,
    ) -> None:
        super().__init__()
        if config.num_position_buckets <= 0:
            raise ConfigError("positional_encoder.num_position_buckets must be > 0")
        self.use_time_encoding = bool(config.use_time_encoding)
        if self.use_time_encoding and config.num_time_buckets <= 0:
            raise ConfigError("positional_encoder.use_time_encoding needs num_time_buckets > 0")
        if config.time_bucket_fn not in ("sqrt", "log"):
            raise ConfigError(
                f"positional_encoder.time_bucket_fn must be 'sqrt' or 'log', "
                f"not '{config.time_bucket_fn}'"
            )
        self.time_bucket_fn = config.time_bucket_fn
        increments = float(config.time_bucket_increments) or 1.0
        # f(dt / inc) == f(dt) / sqrt(inc) for sqrt; log keeps seconds as its unit
        self.time_bucket_divisor = math.sqrt(increments) if self.time_bucket_fn == "sqrt" else 1.0
        self.alpha = math.sqrt(embedding_dim)
        self.kernel = kernel
        std = 1.0 / math.sqrt(embedding_dim)
        self.position_embeddings = nn.Parameter(
            torch.empty(int(config.num_position_buckets), embedding_dim).uniform_(-std, std)
        )
        if self.use_time_encoding:
            self.timestamp_embeddings = nn.Parameter(
                torch.empty(int(config.num_time_buckets) + 1, embedding_dim).uniform_(-std, std)
            )
        else:  # one all-zero bucket: adds nothing
            self.register_buffer("timestamp_embeddings", torch.zeros(1, embedding_dim))

    def forward(
        self,
        seq_embeddings: torch.Tensor,
        seq_offsets: torch.Tensor,
        seq_timestamps: torch.Tensor,
        query_time: torch.Tensor | None = None,
        num_targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Jagged (N, D) embeddings plus position (and time) embeddings.

        Args:
            seq_embeddings: (N, D).
            seq_offsets: (B + 1,) int64.
            seq_timestamps: (N,) int64 seconds (zeros when time encoding is off).
            query_time: (B,) int64 anchor; default: each row's last timestamp.
            num_targets: (B,) candidates at the end of every row (ranking). Given, the
                candidates of a row share position bucket 0 and history items count back
                from 1 (the newest); time buckets are unchanged.
        """
        if num_targets is not None:
            return self._with_targets(
                seq_embeddings, seq_offsets, seq_timestamps, query_time, num_targets
            )
        return add_timestamp_positional_embeddings(
            seq_embeddings,
            seq_offsets,
            seq_timestamps,
            self.position_embeddings,
            self.timestamp_embeddings,
            alpha=self.alpha,
            query_time=query_time,
            time_bucket_fn=self.time_bucket_fn,
            time_bucket_divisor=self.time_bucket_divisor,
            kernel=self.kernel,
        )

    def _with_targets(
        self,
        seq_embeddings: torch.Tensor,
        seq_offsets: torch.Tensor,
        seq_timestamps: torch.Tensor,
        query_time: torch.Tensor | None,
        num_targets: torch.Tensor,
    ) -> torch.Tensor:
        """The ``num_targets`` path: no branch on data, no data-dependent sizes."""
        lengths = seq_offsets[1:] - seq_offsets[:-1]
        total = seq_embeddings.shape[0]
        if query_time is None:  # each row's last timestamp; empty rows read the pad
            padded = torch.cat([seq_timestamps, seq_timestamps.new_zeros(1)])
            last = torch.where(lengths > 0, seq_offsets[1:] - 1, torch.full_like(lengths, total))
            query_time = padded[last]
        _, time_bucket = timestamp_position_buckets(
            seq_offsets,
            seq_timestamps,
            self.position_embeddings.shape[0],
            self.timestamp_embeddings.shape[0],
            query_time,
            self.time_bucket_fn,
            self.time_bucket_divisor,
        )
        rows = torch.repeat_interleave(
            torch.arange(lengths.shape[0], device=seq_offsets.device), lengths, output_size=total
        )
        pos = torch.arange(total, device=seq_offsets.device) - seq_offsets[rows]
        history_end = (lengths - num_targets.to(lengths.dtype)).clamp(min=0)[rows]
        pos_bucket = (history_end - torch.minimum(pos, history_end)).clamp(
            min=0, max=self.position_embeddings.shape[0] - 1
        )
        return (
            self.alpha * seq_embeddings
            + self.position_embeddings.index_select(0, pos_bucket)
            + self.timestamp_embeddings.index_select(0, time_bucket)
        )
