"""Triton semi-local attention: forward, and backward as a dq pass plus a dk/dv pass.

Rule and math: :mod:`tzrec.kernels.sla`. Every program visits only the key (or query)
blocks its tile can see: a history query block ``[m0, m1)`` loops over ``[0, min(k2e, m1))``
and ``[m0 - sla_k1 + 1, m1)``, a block holding targets over ``[0, m1)``; a key block
``[n0, n1)`` over the queries ``[n0, n1 + sla_k1 - 1)`` and the targets (every query when it
holds a global-prefix key). Work is O(n · (sla_k1 + k2e)) per row plus the targets' O(t · n).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tzrec.kernels.triton_attention import _dscores, _row_info

_BLOCK_M = 16
_BLOCK_N = 16


@triton.jit
def _sla_visible(offs_m, offs_n, n, h, k1, k2e):
    """Visibility of keys offs_n to queries offs_m (the rule of tzrec.kernels.sla)."""
    i = offs_m[:, None]
    j = offs_n[None, :]
    history = (j <= i) & (((i - j) < k1) | (j < k2e))
    vis = tl.where(i < h, history, j < h)
    return vis & (i < n) & (j < n)


@triton.jit
def _key_ranges(m0, m1, h, k1, k2e, BLOCK_N: tl.constexpr):
    """Key loops (lo0, hi0) and (lo1, hi1) of the query block [m0, m1)."""
    hi0 = tl.cdiv(tl.minimum(k2e, m1), BLOCK_N) * BLOCK_N
    lo1 = tl.maximum((tl.maximum(m0 - k1 + 1, 0) // BLOCK_N) * BLOCK_N, hi0)
    targets = m1 > h  # a block holding targets: they see the whole history
    return 0, tl.where(targets, m1, hi0), tl.where(targets, m1, lo1), m1


@triton.jit
def _load_rows(P, start, offs, stride_t, stride_h, hd, offs_d, n, D):
    """Rows offs (row-relative) of head hd, columns offs_d; zero outside the row."""
    return tl.load(
        P + (start + offs[:, None]) * stride_t + hd * stride_h + offs_d[None, :],
        mask=(offs[:, None] < n) & (offs_d[None, :] < D),
        other=0.0,
    )


@triton.jit
def _sla_fwd_kernel(
    Q, K, V, Out, offsets, num_targets,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    alpha, inv_n, k1, k2e, H, DQ, DV,
    HAS_TARGETS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """One (query block, row, head): out = mask(SiLU(alpha q kᵀ) / divisor) v."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    hd = pid_bh % H
    start, n, h = _row_info(offsets, num_targets, b, HAS_TARGETS)
    m0 = pid_m * BLOCK_M
    if m0 < n:
        m1 = tl.minimum(n, m0 + BLOCK_M)
        offs_m = m0 + tl.arange(0, BLOCK_M)
        offs_dq = tl.arange(0, BLOCK_DQ)
        offs_dv = tl.arange(0, BLOCK_DV)
        q = _load_rows(Q, start, offs_m, stride_qt, stride_qh, hd, offs_dq, n, DQ)
        acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
        lo0, hi0, lo1, hi1 = _key_ranges(m0, m1, h, k1, k2e, BLOCK_N)
        for part in tl.static_range(2):
            lo = lo0 if part == 0 else lo1
            hi = hi0 if part == 0 else hi1
            for start_n in range(lo, hi, BLOCK_N):
                offs_n = start_n + tl.arange(0, BLOCK_N)
                k = _load_rows(K, start, offs_n, stride_kt, stride_kh, hd, offs_dq, n, DQ)
                v = _load_rows(V, start, offs_n, stride_vt, stride_vh, hd, offs_dv, n, DV)
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * alpha
                p = s / (1.0 + tl.exp(-s)) * inv_n
                p = tl.where(_sla_visible(offs_m, offs_n, n, h, k1, k2e), p, 0.0)
                acc += tl.dot(p.to(v.dtype), v, input_precision="ieee")
        tl.store(
            Out + (start + offs_m[:, None]) * stride_ot + hd * stride_oh + offs_dv[None, :],
            acc.to(Out.dtype.element_ty),
            mask=(offs_m[:, None] < n) & (offs_dv[None, :] < DV),
        )


@triton.jit
def _sla_bwd_dq_kernel(
    Q, K, V, DO, DQ_, offsets, num_targets,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dqt, stride_dqh,
    alpha, inv_n, k1, k2e, H, DQ, DV,
    HAS_TARGETS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """Dq for one (query block, row, head), over the key blocks the block sees."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    hd = pid_bh % H
    start, n, h = _row_info(offsets, num_targets, b, HAS_TARGETS)
    m0 = pid_m * BLOCK_M
    if m0 < n:
        m1 = tl.minimum(n, m0 + BLOCK_M)
        offs_m = m0 + tl.arange(0, BLOCK_M)
        offs_dq = tl.arange(0, BLOCK_DQ)
        offs_dv = tl.arange(0, BLOCK_DV)
        q = _load_rows(Q, start, offs_m, stride_qt, stride_qh, hd, offs_dq, n, DQ)
        do = _load_rows(DO, start, offs_m, stride_dot, stride_doh, hd, offs_dv, n, DV)
        dq = tl.zeros((BLOCK_M, BLOCK_DQ), dtype=tl.float32)
        lo0, hi0, lo1, hi1 = _key_ranges(m0, m1, h, k1, k2e, BLOCK_N)
        for part in tl.static_range(2):
            lo = lo0 if part == 0 else lo1
            hi = hi0 if part == 0 else hi1
            for start_n in range(lo, hi, BLOCK_N):
                offs_n = start_n + tl.arange(0, BLOCK_N)
                k = _load_rows(K, start, offs_n, stride_kt, stride_kh, hd, offs_dq, n, DQ)
                v = _load_rows(V, start, offs_n, stride_vt, stride_vh, hd, offs_dv, n, DV)
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * alpha
                dp = tl.dot(do, tl.trans(v), input_precision="ieee")
                visible = _sla_visible(offs_m, offs_n, n, h, k1, k2e)
                ds = _dscores(s, dp, visible, inv_n)
                dq += tl.dot(ds.to(k.dtype), k, input_precision="ieee")
        tl.store(
            DQ_ + (start + offs_m[:, None]) * stride_dqt + hd * stride_dqh + offs_dq[None, :],
            (dq * alpha).to(DQ_.dtype.element_ty),
            mask=(offs_m[:, None] < n) & (offs_dq[None, :] < DQ),
        )


@triton.jit
def _sla_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV_, offsets, num_targets,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dkt, stride_dkh, stride_dvt, stride_dvh,
    alpha, inv_n, k1, k2e, H, DQ, DV,
    HAS_TARGETS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """Dk and dv for one (key block, row, head), over the query blocks that see it."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    hd = pid_bh % H
    start, n, h = _row_info(offsets, num_targets, b, HAS_TARGETS)
    n0 = pid_n * BLOCK_N
    if n0 < n:
        offs_n = n0 + tl.arange(0, BLOCK_N)
        offs_dq = tl.arange(0, BLOCK_DQ)
        offs_dv = tl.arange(0, BLOCK_DV)
        k = _load_rows(K, start, offs_n, stride_kt, stride_kh, hd, offs_dq, n, DQ)
        v = _load_rows(V, start, offs_n, stride_vt, stride_vh, hd, offs_dv, n, DV)
        dk = tl.zeros((BLOCK_N, BLOCK_DQ), dtype=tl.float32)
        dv = tl.zeros((BLOCK_N, BLOCK_DV), dtype=tl.float32)
        lo0 = (n0 // BLOCK_M) * BLOCK_M
        # the local window, then the targets; a global-prefix key: every later query
        hi0 = tl.minimum(n, n0 + BLOCK_N - 1 + k1)
        hi0 = lo0 + tl.cdiv(hi0 - lo0, BLOCK_M) * BLOCK_M
        lo1 = tl.where(n0 < h, tl.maximum(hi0, (h // BLOCK_M) * BLOCK_M), n)
        prefix = n0 < k2e
        hi0 = tl.where(prefix, n, hi0)
        lo1 = tl.where(prefix, n, lo1)
        for part in tl.static_range(2):
            lo = lo0 if part == 0 else lo1
            hi = hi0 if part == 0 else n
            for start_m in range(lo, hi, BLOCK_M):
                offs_m = start_m + tl.arange(0, BLOCK_M)
                q = _load_rows(Q, start, offs_m, stride_qt, stride_qh, hd, offs_dq, n, DQ)
                do = _load_rows(DO, start, offs_m, stride_dot, stride_doh, hd, offs_dv, n, DV)
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * alpha
                visible = _sla_visible(offs_m, offs_n, n, h, k1, k2e)
                p = tl.where(visible, s / (1.0 + tl.exp(-s)) * inv_n, 0.0)
                dp = tl.dot(do, tl.trans(v), input_precision="ieee")
                dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision="ieee")
                ds = _dscores(s, dp, visible, inv_n)
                dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision="ieee")
        tl.store(
            DK + (start + offs_n[:, None]) * stride_dkt + hd * stride_dkh + offs_dq[None, :],
            (dk * alpha).to(DK.dtype.element_ty),
            mask=(offs_n[:, None] < n) & (offs_dq[None, :] < DQ),
        )
        tl.store(
            DV_ + (start + offs_n[:, None]) * stride_dvt + hd * stride_dvh + offs_dv[None, :],
            dv.to(DV_.dtype.element_ty),
            mask=(offs_n[:, None] < n) & (offs_dv[None, :] < DV),
        )


def _meta(q: torch.Tensor, v: torch.Tensor) -> dict:
    """Compile-time block sizes (tl.dot needs >= 16)."""
    return dict(
        BLOCK_M=_BLOCK_M,
        BLOCK_N=_BLOCK_N,
        BLOCK_DQ=max(16, triton.next_power_of_2(q.shape[-1])),
        BLOCK_DV=max(16, triton.next_power_of_2(v.shape[-1])),
    )


class _TritonSLA(torch.autograd.Function):
    """autograd wrapper of the three SLA Triton kernels."""

    @staticmethod
    def forward(ctx, q, k, v, offsets, num_targets, divisor, alpha, sla_k1, sla_k2, c):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        offsets = offsets.contiguous()
        heads = q.shape[1]
        batch = offsets.numel() - 1
        longest = int((offsets[1:] - offsets[:-1]).max()) if batch > 0 else 0
        out = torch.zeros_like(v)
        has_targets = num_targets is not None
        targets = num_targets.contiguous() if has_targets else offsets
        scalars = (float(alpha), 1.0 / divisor, int(sla_k1), max(int(sla_k2), int(c)), heads)
        if longest > 0:
            _sla_fwd_kernel[(triton.cdiv(longest, _BLOCK_M), batch * heads)](
                q, k, v, out, offsets, targets,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                v.stride(0), v.stride(1), out.stride(0), out.stride(1),
                *scalars, q.shape[-1], v.shape[-1],
                HAS_TARGETS=has_targets, **_meta(q, v),
            )  # fmt: skip
        ctx.save_for_backward(q, k, v, offsets, targets)
        ctx.args = (longest, scalars, has_targets)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, offsets, targets = ctx.saved_tensors
        longest, scalars, has_targets = ctx.args
        do = grad_out.contiguous()
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        batch = offsets.numel() - 1
        if longest > 0:
            strides = (
                q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                v.stride(0), v.stride(1), do.stride(0), do.stride(1),
            )  # fmt: skip
            meta = dict(HAS_TARGETS=has_targets, **_meta(q, v))
            dims = (q.shape[-1], v.shape[-1])
            heads = q.shape[1]
            _sla_bwd_dq_kernel[(triton.cdiv(longest, _BLOCK_M), batch * heads)](
                q, k, v, do, dq, offsets, targets, *strides, dq.stride(0), dq.stride(1),
                *scalars, *dims, **meta,
            )  # fmt: skip
            _sla_bwd_dkdv_kernel[(triton.cdiv(longest, _BLOCK_N), batch * heads)](
                q, k, v, do, dk, dv, offsets, targets, *strides,
                dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
                *scalars, *dims, **meta,
            )  # fmt: skip
        return (dq, dk, dv) + (None,) * 7


def triton_sla_hstu_mha(
    divisor: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    sla_k1: int,
    sla_k2: int,
    num_targets: torch.Tensor | None = None,
    contextual_seq_len: int = 0,
) -> torch.Tensor:
    """Triton semi-local attention (arguments as :func:`tzrec.kernels.sla.sla_hstu_mha`)."""
    return _TritonSLA.apply(
        q, k, v, seq_offsets, num_targets, divisor, alpha, sla_k1, sla_k2, contextual_seq_len
    )
