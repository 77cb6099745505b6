"""Jagged tensor ops: positions in rows, padding, concat/split of two jagged tensors, last item.

A jagged tensor is ``values`` (total, D) plus ``offsets`` (B + 1,) int64, row
``b`` being ``values[offsets[b]:offsets[b + 1]]``.
"""

from __future__ import annotations

import math

import torch

from tzrec.kernels.kernel import Kernel, is_tracing, resolve_kernel

try:  # fbgemm's CPU/GPU jagged ops, used by the PYTORCH path where present
    import fbgemm_gpu  # noqa: F401

    _HAS_FBGEMM = hasattr(torch.ops.fbgemm, "jagged_to_padded_dense")
except Exception:  # pragma: no cover - depends on the install
    _HAS_FBGEMM = False

# dtypes fbgemm's CPU jagged kernels implement (no float64)
_FBGEMM_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _use_fbgemm(t: torch.Tensor) -> bool:
    """Whether fbgemm's jagged op can take `t` (installed, dtype supported, not exporting)."""
    return _HAS_FBGEMM and t.dtype in _FBGEMM_DTYPES and not is_tracing()


def jagged_positions(offsets: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row id and position inside its row of every jagged item, each (total,) int64.

    ``total`` is ``offsets[-1]`` (the values' first size; pass ``values.shape[0]`` so no
    data-dependent size is read). TorchScript compiles it.
    """
    offsets = offsets.to(torch.int64)
    lengths = offsets[1:] - offsets[:-1]
    rows = torch.repeat_interleave(
        torch.arange(lengths.shape[0], device=offsets.device), lengths, output_size=total
    )
    return rows, torch.arange(total, device=offsets.device) - offsets[rows]


def jagged_reverse_index(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """Index that reverses the items of every jagged row (newest-first ↔ oldest-first)."""
    rows, pos = jagged_positions(offsets, total)
    return offsets[rows + 1].to(torch.int64) - 1 - pos


def _row_ids(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """Row index of every jagged position, shape (total,)."""
    return jagged_positions(offsets, total)[0]


def _as_2d(values: torch.Tensor) -> torch.Tensor:
    """View 1-D values as (total, 1); others as (total, -1)."""
    return values.reshape(values.shape[0], math.prod(values.shape[1:]))


def jagged_to_padded_dense(
    values: torch.Tensor,
    offsets: torch.Tensor,
    max_len: int,
    padding_value: float = 0.0,
    kernel: Kernel | int | str = Kernel.PYTORCH,
) -> torch.Tensor:
    """(total, D) jagged -> (B, max_len, D) padded; rows longer are truncated."""
    values2 = _as_2d(values)
    if resolve_kernel(kernel, values.device) == Kernel.TRITON:
        from tzrec.kernels.triton_jagged import triton_jagged_to_padded_dense

        out = triton_jagged_to_padded_dense(values2, offsets, max_len, padding_value)
    elif _use_fbgemm(values2):
        out = torch.ops.fbgemm.jagged_to_padded_dense(values2, [offsets], [max_len], padding_value)
    else:
        batch = offsets.numel() - 1
        rows, pos = jagged_positions(offsets, values2.shape[0])
        keep = pos < max_len
        out = values2.new_full((batch, max_len, values2.shape[1]), padding_value)
        out = out.index_put((rows[keep], pos[keep]), values2[keep])
    return out.view(out.shape[0], max_len, *values.shape[1:])


def dense_to_jagged(
    dense: torch.Tensor,
    offsets: torch.Tensor,
    total: int | None = None,
    kernel: Kernel | int | str = Kernel.PYTORCH,
) -> torch.Tensor:
    """(B, max_len, D) padded -> (total, D) jagged (rows must fit in max_len)."""
    if total is None:
        total = int(offsets[-1])
    batch, max_len = dense.shape[:2]
    dense3 = dense.reshape(batch, max_len, math.prod(dense.shape[2:]))
    if resolve_kernel(kernel, dense.device) == Kernel.TRITON:
        from tzrec.kernels.triton_jagged import triton_dense_to_jagged

        out = triton_dense_to_jagged(dense3, offsets, total)
    elif _use_fbgemm(dense3):
        out = torch.ops.fbgemm.dense_to_jagged(dense3, [offsets], total)[0]
    else:
        rows, pos = jagged_positions(offsets, total)
        out = dense3[rows, pos]
    return out.view(total, *dense.shape[2:])


def _concat_destinations(
    offsets_a: torch.Tensor, offsets_b: torch.Tensor, total_a: int, total_b: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions in the concatenated tensor of every element of a and of b."""
    rows_a = _row_ids(offsets_a, total_a)
    rows_b = _row_ids(offsets_b, total_b)
    dest_a = torch.arange(total_a, device=offsets_a.device) + offsets_b[rows_a]
    dest_b = torch.arange(total_b, device=offsets_b.device) + offsets_a[rows_b + 1]
    return dest_a, dest_b


def concat_2d_jagged(
    values_a: torch.Tensor,
    offsets_a: torch.Tensor,
    values_b: torch.Tensor,
    offsets_b: torch.Tensor,
    kernel: Kernel | int | str = Kernel.PYTORCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, a's items then b's items (e.g. history + candidates).

    Returns:
        (values, offsets) of the concatenated jagged tensor.
    """
    if offsets_a.numel() != offsets_b.numel():
        raise ValueError(
            f"concat_2d_jagged: batch sizes differ ({offsets_a.numel() - 1} vs "
            f"{offsets_b.numel() - 1})"
        )
    total_a, total_b = values_a.shape[0], values_b.shape[0]
    offsets = offsets_a + offsets_b
    dest_a, dest_b = _concat_destinations(offsets_a, offsets_b, total_a, total_b)
    if resolve_kernel(kernel, values_a.device) == Kernel.TRITON:
        from tzrec.kernels.triton_jagged import triton_gather_rows

        index = torch.empty(total_a + total_b, dtype=torch.long, device=dest_a.device)
        index[dest_a] = torch.arange(total_a, device=dest_a.device)
        index[dest_b] = torch.arange(total_b, device=dest_a.device) + total_a
        combined = torch.cat([values_a, values_b], dim=0)
        return triton_gather_rows(combined, index), offsets
    out = values_a.new_zeros((total_a + total_b, *values_a.shape[1:]))
    out = out.index_copy(0, dest_a, values_a).index_copy(0, dest_b, values_b)
    return out, offsets


def split_2d_jagged(
    values: torch.Tensor,
    offsets_a: torch.Tensor,
    offsets_b: torch.Tensor,
    kernel: Kernel | int | str = Kernel.PYTORCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `concat_2d_jagged`: split each row into its a- and b-parts."""
    total_a, total_b = int(offsets_a[-1]), int(offsets_b[-1])
    if values.shape[0] != total_a + total_b:
        raise ValueError(
            f"split_2d_jagged: values has {values.shape[0]} rows, offsets "
            f"describe {total_a} + {total_b}"
        )
    dest_a, dest_b = _concat_destinations(offsets_a, offsets_b, total_a, total_b)
    if resolve_kernel(kernel, values.device) == Kernel.TRITON:
        from tzrec.kernels.triton_jagged import triton_gather_rows

        both = triton_gather_rows(values, torch.cat([dest_a, dest_b]))
        return both[:total_a], both[total_a:]
    return values.index_select(0, dest_a), values.index_select(0, dest_b)


def jagged_last(
    values: torch.Tensor,
    offsets: torch.Tensor,
    default: torch.Tensor | None = None,
    kernel: Kernel | int | str = Kernel.PYTORCH,
) -> torch.Tensor:
    """Last item of every row, (B, D); empty rows give `default` (or zeros).

    Never indexes position -1: an empty row reads nothing from `values`.
    """
    batch = offsets.numel() - 1
    dim = values.shape[1:]
    if default is not None and default.shape != dim:
        raise ValueError(
            f"jagged_last: default shape {tuple(default.shape)} != item shape {tuple(dim)}"
        )
    if resolve_kernel(kernel, values.device) == Kernel.TRITON:
        from tzrec.kernels.triton_jagged import triton_jagged_last

        out = triton_jagged_last(_as_2d(values), offsets, default)
        return out.view(batch, *dim)
    lengths = offsets[1:] - offsets[:-1]
    fill = values.new_zeros(dim) if default is None else default.to(values.dtype)
    # the fill row sits after the values; empty rows index it (no branch on sizes, so
    # the same graph serves batches whose rows are all empty)
    padded = torch.cat([values, fill.unsqueeze(0)], dim=0)
    index = torch.where(lengths > 0, offsets[1:] - 1, torch.full_like(lengths, values.shape[0]))
    return padded.index_select(0, index)
