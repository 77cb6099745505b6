"""Triton kernels for jagged padding, row gathers (concat/split) and last-item."""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

_BLOCK_L = 16
_BLOCK_D = 32


@triton.jit
def _jagged_dense_kernel(
    values,
    dense,
    offsets,
    max_len,
    D,
    padding_value,
    TO_DENSE: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Copy row b between jagged values and dense[b] (padding when TO_DENSE)."""
    b = tl.program_id(0)
    pid_l = tl.program_id(1)
    start = tl.load(offsets + b)
    n = tl.load(offsets + b + 1) - start
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    in_row = offs_l < n
    in_dense = offs_l < max_len
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_ok = offs_d[None, :] < D
        j_ptr = values + (start + offs_l[:, None]) * D + offs_d[None, :]
        d_ptr = dense + (b * max_len + offs_l[:, None]) * D + offs_d[None, :]
        if TO_DENSE:
            x = tl.load(j_ptr, mask=in_row[:, None] & d_ok, other=padding_value)
            tl.store(d_ptr, x, mask=in_dense[:, None] & d_ok)
        else:
            x = tl.load(d_ptr, mask=(in_row & in_dense)[:, None] & d_ok, other=0.0)
            tl.store(j_ptr, x, mask=in_row[:, None] & d_ok)


def _to_dense(values, offsets, max_len, padding_value):
    """Launch the jagged -> dense copy."""
    batch = offsets.numel() - 1
    dim = values.shape[1]
    dense = values.new_empty((batch, max_len, dim))
    if batch > 0 and max_len > 0 and dim > 0:
        grid = (batch, triton.cdiv(max_len, _BLOCK_L))
        _jagged_dense_kernel[grid](
            values,
            dense,
            offsets,
            max_len,
            dim,
            padding_value,
            TO_DENSE=True,
            BLOCK_L=_BLOCK_L,
            BLOCK_D=_BLOCK_D,
        )
    return dense


def _to_jagged(dense, offsets, total):
    """Launch the dense -> jagged copy (positions beyond max_len become 0)."""
    batch, max_len, dim = dense.shape
    values = dense.new_zeros((total, dim))
    if batch > 0 and total > 0 and dim > 0:
        lengths = offsets[1:] - offsets[:-1]
        longest = max(int(lengths.max()), 1)
        grid = (batch, triton.cdiv(longest, _BLOCK_L))
        _jagged_dense_kernel[grid](
            values,
            dense,
            offsets,
            max_len,
            dim,
            0.0,
            TO_DENSE=False,
            BLOCK_L=_BLOCK_L,
            BLOCK_D=_BLOCK_D,
        )
    return values


class _JaggedToDense(torch.autograd.Function):
    """Jagged -> padded dense; backward is dense -> jagged."""

    @staticmethod
    def forward(ctx, values, offsets, max_len, padding_value):
        ctx.save_for_backward(offsets)
        ctx.total = values.shape[0]
        return _to_dense(values.contiguous(), offsets, max_len, padding_value)

    @staticmethod
    def backward(ctx, grad):
        (offsets,) = ctx.saved_tensors
        return _to_jagged(grad.contiguous(), offsets, ctx.total), None, None, None


class _DenseToJagged(torch.autograd.Function):
    """Padded dense -> jagged; backward is jagged -> zero-padded dense."""

    @staticmethod
    def forward(ctx, dense, offsets, total):
        ctx.save_for_backward(offsets)
        ctx.max_len = dense.shape[1]
        return _to_jagged(dense.contiguous(), offsets, total)

    @staticmethod
    def backward(ctx, grad):
        (offsets,) = ctx.saved_tensors
        return _to_dense(grad.contiguous(), offsets, ctx.max_len, 0.0), None, None


def triton_jagged_to_padded_dense(values, offsets, max_len, padding_value=0.0):
    """Triton jagged (total, D) -> (B, max_len, D)."""
    return _JaggedToDense.apply(values, offsets.contiguous(), max_len, padding_value)


def triton_dense_to_jagged(dense, offsets, total):
    """Triton (B, max_len, D) -> jagged (total, D)."""
    return _DenseToJagged.apply(dense, offsets.contiguous(), total)


@triton.jit
def _move_rows_kernel(src, dst, index, D, GATHER: tl.constexpr, BLOCK_D: tl.constexpr):
    """GATHER: dst[i] = src[index[i]]; else scatter: dst[index[i]] = src[i]."""
    i = tl.program_id(0)
    r = tl.load(index + i)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        ok = offs_d < D
        if GATHER:
            x = tl.load(src + r * D + offs_d, mask=ok)
            tl.store(dst + i * D + offs_d, x, mask=ok)
        else:
            x = tl.load(src + i * D + offs_d, mask=ok)
            tl.store(dst + r * D + offs_d, x, mask=ok)


def _move_rows(src, index, num_dst, gather):
    """Launch a row gather or scatter into a fresh (num_dst, D) tensor."""
    dim = src.shape[1]
    dst = src.new_zeros((num_dst, dim))
    if index.numel() > 0 and dim > 0:
        _move_rows_kernel[(index.numel(),)](src, dst, index, dim, GATHER=gather, BLOCK_D=_BLOCK_D)
    return dst


class _GatherRows(torch.autograd.Function):
    """out = src[index] for a permutation-like index (no repeated entries)."""

    @staticmethod
    def forward(ctx, src, index):
        ctx.save_for_backward(index)
        ctx.num_src = src.shape[0]
        return _move_rows(src.contiguous(), index, index.numel(), gather=True)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return _move_rows(grad.contiguous(), index, ctx.num_src, gather=False), None


def triton_gather_rows(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Triton `src[index]` over rows; `index` must not repeat (concat/split)."""
    shape = src.shape[1:]
    flat = src.reshape(src.shape[0], math.prod(shape))
    out = _GatherRows.apply(flat, index.contiguous())
    return out.view(index.numel(), *shape)


@triton.jit
def _last_kernel(
    values,
    default,
    out,
    offsets,
    D,
    HAS_DEFAULT: tl.constexpr,
    BACKWARD: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Forward: out[b] = values[end_b - 1] or default; backward: the reverse."""
    b = tl.program_id(0)
    start = tl.load(offsets + b)
    end = tl.load(offsets + b + 1)
    nonempty = end > start
    last = tl.where(nonempty, end - 1, 0)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        ok = offs_d < D
        if BACKWARD:
            g = tl.load(out + b * D + offs_d, mask=ok)
            tl.store(values + last * D + offs_d, g, mask=ok & nonempty)
            if HAS_DEFAULT:
                tl.atomic_add(default + offs_d, g, mask=ok & (end <= start))
        else:
            x = tl.load(values + last * D + offs_d, mask=ok & nonempty, other=0.0)
            if HAS_DEFAULT:
                fill = tl.load(default + offs_d, mask=ok, other=0.0)
                x = tl.where(nonempty, x, fill)
            tl.store(out + b * D + offs_d, x, mask=ok)


class _JaggedLast(torch.autograd.Function):
    """Last item per row with a default for empty rows."""

    @staticmethod
    def forward(ctx, values, offsets, default):
        batch = offsets.numel() - 1
        dim = values.shape[1]
        out = values.new_zeros((batch, dim))
        has_default = default is not None
        fill = default.contiguous() if has_default else out
        if batch > 0 and dim > 0:
            _last_kernel[(batch,)](
                values.contiguous(),
                fill,
                out,
                offsets,
                dim,
                HAS_DEFAULT=has_default,
                BACKWARD=False,
                BLOCK_D=_BLOCK_D,
            )
        ctx.save_for_backward(offsets)
        ctx.num_values = values.shape[0]
        ctx.has_default = has_default
        return out

    @staticmethod
    def backward(ctx, grad):
        (offsets,) = ctx.saved_tensors
        batch, dim = grad.shape
        dvalues = grad.new_zeros((ctx.num_values, dim))
        ddefault = grad.new_zeros((dim,)) if ctx.has_default else None
        if batch > 0 and dim > 0:
            _last_kernel[(batch,)](
                dvalues,
                ddefault if ctx.has_default else dvalues,
                grad.contiguous(),
                offsets,
                dim,
                HAS_DEFAULT=ctx.has_default,
                BACKWARD=True,
                BLOCK_D=_BLOCK_D,
            )
        return dvalues, None, ddefault


def triton_jagged_last(values, offsets, default=None):
    """Triton last-item gather, (B, D)."""
    return _JaggedLast.apply(values, offsets.contiguous(), default)
