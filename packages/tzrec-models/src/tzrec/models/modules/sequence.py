"""Sequence encoders: pool a padded ``(B, L, D)`` sequence (plus a ``(B, Dq)`` query) to a vector.

Each encoder is built as ``cls(config, sequence_dim, query_dim)`` from its
``SeqEncoderConfig`` oneof message and registered under that oneof name. ``forward`` takes
the embedding group's dict (the ``sequence_key``, ``sequence_length_key`` and, where used,
``query_key`` of its input group, see :mod:`tzrec.models.layout`);
:meth:`SequenceEncoder.encode` takes the tensors directly.
Positions at or beyond a row's length are ignored, and a zero-length row gives a finite
(zero, or query-only) output with finite gradients.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.models.layout import query_key, sequence_key, sequence_length_key
from tzrec.models.modules.mlp import MLP, mlp_kwargs
from tzrec.protos import seq_encoder_pb2


def _valid_mask(sequence_length: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B, L)`` bool mask of positions inside each row's length."""
    positions = torch.arange(max_len, device=sequence_length.device)
    return positions.unsqueeze(0) < sequence_length.unsqueeze(1)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim restricted to ``mask``; all-masked rows give zeros.

    Computed in float32 with a finite fill value, so an all-masked row is uniform (not NaN)
    before the mask zeroes it, and its gradients stay finite.
    """
    filled = scores.float().masked_fill(~mask, -1e9)
    return (torch.softmax(filled, dim=-1) * mask.float()).to(scores.dtype)


class SequenceEncoder(nn.Module):
    """Base class: names the feature group it reads and its output width.

    Args:
        input: the feature group name (``config.input``).
        max_seq_length: truncate sequences to this length (0 keeps them whole).
    """

    def __init__(self, input: str, max_seq_length: int = 0) -> None:
        super().__init__()
        self._input = input
        self._max_seq_length = max_seq_length
        self._query_name = query_key(input)
        self._sequence_name = sequence_key(input)
        self._sequence_length_name = sequence_length_key(input)

    def input(self) -> str:
        """The feature group this encoder reads."""
        return self._input

    def output_dim(self) -> int:
        """Width of the encoded vector."""
        raise NotImplementedError

    def _truncate(
        self, sequence: torch.Tensor, sequence_length: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._max_seq_length > 0:
            sequence = sequence[:, : self._max_seq_length, :]
            sequence_length = torch.clamp_max(sequence_length, self._max_seq_length)
        return sequence, sequence_length

    def encode(
        self,
        sequence: torch.Tensor,
        sequence_length: torch.Tensor,
        query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode ``sequence`` ``(B, L, D)`` with lengths ``(B,)`` and query ``(B, Dq)``."""
        raise NotImplementedError

    def forward(self, sequence_embedded: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encode the group's tensors from the embedding group's output dict."""
        query = sequence_embedded.get(self._query_name)
        return self.encode(
            sequence_embedded[self._sequence_name],
            sequence_embedded[self._sequence_length_name],
            query,
        )


def _require_query(query: torch.Tensor | None, name: str) -> torch.Tensor:
    if query is None:
        raise ValueError(f"{name} needs a query tensor")
    return query


class _QueryEncoder(SequenceEncoder):
    """Shared checks for encoders that compare the sequence with a query."""

    def __init__(self, input: str, sequence_dim: int, query_dim: int, max_seq_length: int = 0):
        super().__init__(input, max_seq_length)
        if query_dim > sequence_dim:
            raise ValueError(
                f"sequence encoder '{input}': query_dim {query_dim} > sequence_dim "
                f"{sequence_dim} is not supported"
            )
        self._sequence_dim = sequence_dim
        self._query_dim = query_dim

    def _pad_query(self, query: torch.Tensor) -> torch.Tensor:
        if self._query_dim < self._sequence_dim:
            query = F.pad(query, (0, self._sequence_dim - self._query_dim))
        return query

    def output_dim(self) -> int:
        """Width of the encoded vector (the sequence width)."""
        return self._sequence_dim


class DINEncoder(_QueryEncoder):
    """DIN target attention: MLP scores of ``[q, s, q - s, q * s]``, softmax over valid steps.

    Args:
        config: a ``DINEncoder`` config message.
        sequence_dim: width of the sequence embeddings.
        query_dim: width of the query (zero-padded up to ``sequence_dim``).
    """

    def __init__(
        self, config: seq_encoder_pb2.DINEncoder, sequence_dim: int, query_dim: int = 0
    ) -> None:
        super().__init__(config.input, sequence_dim, query_dim, config.max_seq_length)
        self.mlp = MLP(sequence_dim * 4, dim=3, **mlp_kwargs(config.attn_mlp))
        self.linear = nn.Linear(self.mlp.output_dim(), 1)

    def encode(
        self,
        sequence: torch.Tensor,
        sequence_length: torch.Tensor,
        query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, sequence_dim)`` attention-weighted sum of the sequence."""
        sequence, sequence_length = self._truncate(sequence, sequence_length)
        seq_len = sequence.size(1)
        q = self._pad_query(_require_query(query, "din_encoder"))
        queries = q.unsqueeze(1).expand(-1, seq_len, -1)
        attn_in = torch.cat([queries, sequence, queries - sequence, queries * sequence], dim=-1)
        scores = self.linear(self.mlp(attn_in)).squeeze(-1)  # (B, L)
        weights = _masked_softmax(scores, _valid_mask(sequence_length, seq_len))
        return torch.bmm(weights.unsqueeze(1), sequence).squeeze(1)


class SimpleAttention(_QueryEncoder):
    """Dot-product attention of the query over the sequence (no parameters).

    Args:
        config: a ``SimpleAttention`` config message.
        sequence_dim: width of the sequence embeddings.
        query_dim: width of the query (zero-padded up to ``sequence_dim``).
    """

    def __init__(
        self, config: seq_encoder_pb2.SimpleAttention, sequence_dim: int, query_dim: int = 0
    ) -> None:
        super().__init__(config.input, sequence_dim, query_dim, config.max_seq_length)

    def encode(
        self,
        sequence: torch.Tensor,
        sequence_length: torch.Tensor,
        query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, sequence_dim)`` softmax(s . q)-weighted sum of the sequence."""
        sequence, sequence_length = self._truncate(sequence, sequence_length)
        q = self._pad_query(_require_query(query, "simple_attention"))
        scores = torch.bmm(sequence, q.unsqueeze(2)).squeeze(2)
        weights = _masked_softmax(scores, _valid_mask(sequence_length, sequence.size(1)))
        return torch.bmm(weights.unsqueeze(1), sequence).squeeze(1)


class PoolingEncoder(SequenceEncoder):
    """Sum or mean of the valid steps.

    Args:
        config: a ``PoolingEncoder`` config message (``pooling_type`` ``mean`` or ``sum``).
        sequence_dim: width of the sequence embeddings.
        query_dim: unused.
    """

    def __init__(
        self, config: seq_encoder_pb2.PoolingEncoder, sequence_dim: int, query_dim: int = 0
    ) -> None:
        super().__init__(config.input, config.max_seq_length)
        if config.pooling_type not in ("sum", "mean"):
            raise ValueError(
                f"pooling_encoder '{config.input}': pooling_type must be sum or mean, "
                f"got {config.pooling_type!r}"
            )
        self._pooling_type = config.pooling_type
        self._sequence_dim = sequence_dim

    def output_dim(self) -> int:
        """Width of the encoded vector (the sequence width)."""
        return self._sequence_dim

    def encode(
        self,
        sequence: torch.Tensor,
        sequence_length: torch.Tensor,
        query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, sequence_dim)`` sum or mean over valid steps (zeros for empty rows)."""
        sequence, sequence_length = self._truncate(sequence, sequence_length)
        mask = _valid_mask(sequence_length, sequence.size(1)).unsqueeze(2)
        pooled = (sequence * mask.to(sequence.dtype)).sum(dim=1)
        if self._pooling_type == "mean":
            pooled = pooled / torch.clamp_min(sequence_length, 1).unsqueeze(1).to(pooled.dtype)
        return pooled


class SelfAttentionEncoder(SequenceEncoder):
    """Multi-head self-attention over the valid steps, then mean over them.

    Args:
        config: a ``SelfAttentionEncoder`` config message.
        sequence_dim: width of the sequence embeddings.
        query_dim: unused.
    """

    def __init__(
        self,
        config: seq_encoder_pb2.SelfAttentionEncoder,
        sequence_dim: int,
        query_dim: int = 0,
    ) -> None:
        super().__init__(config.input, config.max_seq_length)
        attn_dim, num_heads = config.multihead_attn_dim, config.num_heads
        if num_heads <= 0 or attn_dim % num_heads != 0:
            raise ValueError(
                f"self_attention_encoder '{config.input}': multihead_attn_dim {attn_dim} "
                f"must be divisible by num_heads {num_heads}"
            )
        self._sequence_dim = sequence_dim
        self._attn_dim = attn_dim
        self._num_heads = num_heads
        self._query = nn.Linear(sequence_dim, attn_dim)
        self._key = nn.Linear(sequence_dim, attn_dim)
        self._value = nn.Linear(sequence_dim, attn_dim)
        self._multihead_attn = nn.MultiheadAttention(
            attn_dim, num_heads=num_heads, dropout=config.dropout, batch_first=True
        )

    def output_dim(self) -> int:
        """Width of the encoded vector (``multihead_attn_dim``)."""
        return self._attn_dim

    def encode(
        self,
        sequence: torch.Tensor,
        sequence_length: torch.Tensor,
        query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, multihead_attn_dim)`` mean of the attended valid steps."""
        sequence, sequence_length = self._truncate(sequence, sequence_length)
        seq_len = sequence.size(1)
        valid = _valid_mask(sequence_length, seq_len)
        # Padded keys are hidden; every step may attend to itself so no row is fully
        # masked (a fully masked row gives NaN); padded outputs are dropped below.
        eye = torch.eye(seq_len, dtype=torch.bool, device=sequence.device)
        blocked = ~(valid.unsqueeze(1) | eye.unsqueeze(0))  # (B, L, L)
        blocked = blocked.repeat_interleave(self._num_heads, dim=0)
        out, _ = self._multihead_attn(
            self._query(sequence),
            self._key(sequence),
            self._value(sequence),
            attn_mask=blocked,
            need_weights=False,
        )
        out = out * valid.unsqueeze(2).to(out.dtype)
        return out.sum(dim=1) / torch.clamp_min(sequence_length, 1).unsqueeze(1).to(out.dtype)


class MultiWindowDINEncoder(_QueryEncoder):
    """DIN-style scores pooled per time window, concatenated with the query.

    Steps ``[0, w0)`` form window 0, the next ``w1`` steps window 1, and so on; each window
    is the mean over its valid steps of ``PReLU(score) * step``.

    Args:
        config: a ``MultiWindowDINEncoder`` config message (``windows_len``).
        sequence_dim: width of the sequence embeddings.
        query_dim: width of the query (zero-padded up to ``sequence_dim``).
    """

    def __init__(
        self,
        config: seq_encoder_pb2.MultiWindowDINEncoder,
        sequence_dim: int,
        query_dim: int = 0,
    ) -> None:
        super().__init__(config.input, sequence_dim, query_dim)
        windows = [int(w) for w in config.windows_len]
        if not windows or min(windows) <= 0:
            raise ValueError(
                f"multi_window_din_encoder '{config.input}': windows_len must be positive"
            )
        self._windows_len = windows
        total = sum(windows)
        self._total_len = total
        starts = [sum(windows[:i]) for i in range(len(windows))]
        window_of_step = torch.zeros(len(windows), total)
        for i, (start, size) in enumerate(zip(starts, windows, strict=True)):
            window_of_step[i, start : start + size] = 1.0
        self.register_buffer("window_of_step", window_of_step, persistent=False)
        self.register_buffer("window_start", torch.tensor(starts), persistent=False)
        self.register_buffer("window_len", torch.tensor(windows), persistent=False)
        self.mlp = MLP(sequence_dim * 3, dim=3, **mlp_kwargs(config.attn_mlp))
        self.linear = nn.Linear(self.mlp.output_dim(), 1)
        self.active = nn.PReLU()

    def output_dim(self) -> int:
        """Width of the encoded vector: ``sequence_dim * (len(windows_len) + 1)``."""
        return self._sequence_dim * (len(self._windows_len) + 1)

    def encode(
        self,
        sequence: torch.Tensor,
        sequence_length: torch.Tensor,
        query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, sequence_dim * (W + 1))``: per-window means, then the query."""
        sequence = sequence[:, : self._total_len, :]
        seq_len = sequence.size(1)
        q = self._pad_query(_require_query(query, "multi_window_din_encoder"))
        queries = q.unsqueeze(1).expand(-1, seq_len, -1)
        attn_in = torch.cat([sequence, queries * sequence, queries], dim=-1)
        scores = self.active(self.linear(self.mlp(attn_in)))  # (B, L, 1)
        mask = _valid_mask(sequence_length, seq_len).unsqueeze(2).to(sequence.dtype)
        weighted = scores * mask * sequence
        weighted = F.pad(weighted, (0, 0, 0, self._total_len - seq_len))
        windows = torch.einsum("wl,bld->bwd", self.window_of_step, weighted)
        count = torch.minimum(
            sequence_length.unsqueeze(1) - self.window_start.unsqueeze(0),
            self.window_len.unsqueeze(0),
        )
        windows = windows / torch.clamp_min(count, 1).unsqueeze(2).to(windows.dtype)
        return torch.cat([windows, q.unsqueeze(1)], dim=1).reshape(q.size(0), -1)


def create_sequence_encoder(
    config: seq_encoder_pb2.SeqEncoderConfig, group_total_dim: dict[str, int]
) -> SequenceEncoder:
    """Build the encoder a ``SeqEncoderConfig`` names, through the plugin registry.

    ``group_total_dim`` maps ``sequence_key(input)`` (and ``query_key(input)`` where the
    group has a query) to widths, as the embedding group reports them.
    """
    from tzrec.core import plugins
    from tzrec.core.config import provided_by, which_oneof
    from tzrec.core.errors import ConfigError

    chosen = which_oneof(config, "seq_module")
    if chosen is None:
        raise ConfigError("sequence_encoders: a SeqEncoderConfig sets no encoder")
    name, sub = chosen
    cls: Any = plugins.get("sequence_encoders", name, provided_by(config, name))
    seq_key = sequence_key(sub.input)
    if seq_key not in group_total_dim:
        raise ConfigError(f"{name}: input group '{sub.input}' has no sequence")
    return cls(sub, group_total_dim[seq_key], group_total_dim.get(query_key(sub.input), 0))
