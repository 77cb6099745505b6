"""Timestamp + position embeddings added to jagged sequence embeddings.

Follows `add_timestamp_positional_embeddings` of generative-recommenders, for
item ``p`` (0-based) of a row of length ``n`` with timestamp ``ts_p``:

* position bucket = ``min(n - 1 - p, num_position_buckets - 1)``: positions
  count back from the row's end, so the newest item is always bucket 0 and
  rows of different lengths share the buckets of their recent items;
* time bucket = ``clamp(floor(f(dt) / time_bucket_divisor), 0,
  num_time_buckets - 1)`` with ``dt = max(query_time - ts_p, 1)`` seconds and
  ``f`` = ``sqrt`` (default) or ``log``; ``query_time`` defaults to the
  timestamp of the row's last item;
* out = alpha * seq_embeddings + pos_emb[pos_bucket] + ts_emb[time_bucket].
"""

from __future__ import annotations

import torch

from tzrec.kernels.jagged import jagged_positions
from tzrec.kernels.kernel import Kernel, resolve_kernel


def timestamp_position_buckets(
    seq_offsets: torch.Tensor,
    timestamps: torch.Tensor,
    num_position_buckets: int,
    num_time_buckets: int,
    query_time: torch.Tensor | None = None,
    time_bucket_fn: str = "sqrt",
    time_bucket_divisor: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position and time bucket (int64, shape (total,)) of every jagged item."""
    if time_bucket_fn not in ("sqrt", "log"):
        raise ValueError(f"time_bucket_fn must be 'sqrt' or 'log', not {time_bucket_fn!r}")
    total = timestamps.shape[0]
    lengths = seq_offsets[1:] - seq_offsets[:-1]
    rows, pos = jagged_positions(seq_offsets, total)
    pos_bucket = (lengths[rows] - 1 - pos).clamp(min=0, max=num_position_buckets - 1)
    if query_time is None:  # each row's last timestamp, 0 for empty rows (branch-free)
        padded = torch.cat([timestamps, timestamps.new_zeros(1)])
        last = torch.where(lengths > 0, seq_offsets[1:] - 1, torch.full_like(lengths, total))
        query_time = padded[last]
    dt = (query_time[rows] - timestamps).to(torch.float64).clamp(min=1.0)
    scaled = torch.sqrt(dt) if time_bucket_fn == "sqrt" else torch.log(dt)
    time_bucket = torch.floor(scaled / time_bucket_divisor).long()
    time_bucket = time_bucket.clamp(min=0, max=num_time_buckets - 1)
    return pos_bucket.long(), time_bucket


def add_timestamp_positional_embeddings(
    seq_embeddings: torch.Tensor,
    seq_offsets: torch.Tensor,
    timestamps: torch.Tensor,
    pos_embeddings: torch.Tensor,
    ts_embeddings: torch.Tensor,
    alpha: float = 1.0,
    query_time: torch.Tensor | None = None,
    time_bucket_fn: str = "sqrt",
    time_bucket_divisor: float = 1.0,
    kernel: Kernel | int | str = Kernel.PYTORCH,
) -> torch.Tensor:
    """Alpha * seq + pos_emb[position bucket] + ts_emb[time bucket] (module doc).

    Args:
        seq_embeddings: (total, D) jagged embeddings.
        seq_offsets: (B + 1,) int64 offsets.
        timestamps: (total,) int64 seconds.
        pos_embeddings: (num_position_buckets, D) table.
        ts_embeddings: (num_time_buckets, D) table.
        alpha: scale of seq_embeddings.
        query_time: optional (B,) per-row query time; defaults to last item's.
        time_bucket_fn: "sqrt" or "log".
        time_bucket_divisor: divides f(dt) before flooring.
        kernel: PYTORCH or TRITON.

    Returns:
        (total, D) jagged embeddings.
    """
    if timestamps.shape[0] != seq_embeddings.shape[0]:
        raise ValueError(
            f"timestamps has {timestamps.shape[0]} items, seq_embeddings {seq_embeddings.shape[0]}"
        )
    pos_bucket, time_bucket = timestamp_position_buckets(
        seq_offsets,
        timestamps,
        pos_embeddings.shape[0],
        ts_embeddings.shape[0],
        query_time,
        time_bucket_fn,
        time_bucket_divisor,
    )
    if resolve_kernel(kernel, seq_embeddings.device) == Kernel.TRITON:
        from tzrec.kernels.triton_position import triton_add_embeddings

        return triton_add_embeddings(
            seq_embeddings,
            pos_embeddings,
            ts_embeddings,
            pos_bucket,
            time_bucket,
            alpha,
        )
    return (
        alpha * seq_embeddings
        + pos_embeddings.index_select(0, pos_bucket)
        + ts_embeddings.index_select(0, time_bucket)
    )
