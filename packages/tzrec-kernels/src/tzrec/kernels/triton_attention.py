"""Triton HSTU attention: forward, and backward as a dq pass plus a dk/dv pass.

Mask rule and math are those of `tzrec.kernels.attention` (module docstring).
Dropout draws ``tl.rand(seed + b*H + h, i*N + j)`` in every pass, so forward
and backward agree without storing a mask; its stream differs from PyTorch's.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK_M = 16
_BLOCK_N = 16


@triton.jit
def _visible(offs_m, offs_n, n, h, c, m, CAUSAL: tl.constexpr):
    """Visibility of keys offs_n to queries offs_m (same id rule as the reference)."""
    i = offs_m[:, None]
    j = offs_n[None, :]
    off = tl.maximum(c - 1, 0)
    hid = h - off
    id_i = tl.minimum(tl.maximum(i - off, 0), hid)
    id_j = tl.minimum(tl.maximum(j - off, 0), hid)
    dist = id_i - id_j
    if not CAUSAL:
        dist = tl.abs(dist)
    vis = ((i == j) | (dist > 0)) & ((m <= 0) | (dist <= m))
    vis = vis | ((c > 0) & (id_i == 0) & (id_j < hid))
    return vis & (i < n) & (j < n)


@triton.jit
def _keep(seed, pid_bh, offs_m, offs_n, N, pr):
    """Dropout keep-mask for one tile, reproducible from (seed, row, head)."""
    r = tl.rand(seed + pid_bh, offs_m[:, None] * N + offs_n[None, :])
    return r >= pr


@triton.jit
def _row_info(offsets, num_targets, b, HAS_TARGETS: tl.constexpr):
    """Start, length and history end (length - targets) of row b."""
    start = tl.load(offsets + b)
    n = (tl.load(offsets + b + 1) - start).to(tl.int32)
    if HAS_TARGETS:
        t = tl.load(num_targets + b).to(tl.int32)
        t = tl.minimum(tl.maximum(t, 0), n)
    else:
        t = 0
    return start, n, n - t


@triton.jit
def _hstu_fwd_kernel(
    Q,
    K,
    V,
    Out,
    offsets,
    num_targets,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_ot,
    stride_oh,
    alpha,
    inv_n,
    c,
    m,
    pr,
    seed,
    H,
    N,
    DQ,
    DV,
    HAS_TARGETS: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DQ: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """One (query block, row, head): out = mask(SiLU(alpha q kᵀ) / N) v."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    hd = pid_bh % H
    start, n, h = _row_info(offsets, num_targets, b, HAS_TARGETS)
    if pid_m * BLOCK_M < n:
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_dq = tl.arange(0, BLOCK_DQ)
        offs_dv = tl.arange(0, BLOCK_DV)
        q = tl.load(
            Q + (start + offs_m[:, None]) * stride_qt + hd * stride_qh + offs_dq[None, :],
            mask=(offs_m[:, None] < n) & (offs_dq[None, :] < DQ),
            other=0.0,
        )
        acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
        hi = n
        if CAUSAL:
            hi = tl.where(pid_m * BLOCK_M < c, n, tl.minimum(n, (pid_m + 1) * BLOCK_M))
        for start_n in range(0, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k = tl.load(
                K + (start + offs_n[:, None]) * stride_kt + hd * stride_kh + offs_dq[None, :],
                mask=(offs_n[:, None] < n) & (offs_dq[None, :] < DQ),
                other=0.0,
            )
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * alpha
            p = s / (1.0 + tl.exp(-s)) * inv_n
            p = tl.where(_visible(offs_m, offs_n, n, h, c, m, CAUSAL), p, 0.0)
            if DROPOUT:
                keep = _keep(seed, pid_bh, offs_m, offs_n, N, pr)
                p = tl.where(keep, p / (1.0 - pr), 0.0)
            v = tl.load(
                V + (start + offs_n[:, None]) * stride_vt + hd * stride_vh + offs_dv[None, :],
                mask=(offs_n[:, None] < n) & (offs_dv[None, :] < DV),
                other=0.0,
            )
            acc += tl.dot(p.to(v.dtype), v, input_precision="ieee")
        tl.store(
            Out + (start + offs_m[:, None]) * stride_ot + hd * stride_oh + offs_dv[None, :],
            acc.to(Out.dtype.element_ty),
            mask=(offs_m[:, None] < n) & (offs_dv[None, :] < DV),
        )


@triton.jit
def _dscores(s, dp, visible, inv_n):
    """Gradient w.r.t. alpha·qkᵀ given the gradient dp of the attention weights."""
    sig = 1.0 / (1.0 + tl.exp(-s))
    ds = dp * sig * (1.0 + s * (1.0 - sig)) * inv_n
    return tl.where(visible, ds, 0.0)


@triton.jit
def _hstu_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    DQ_,
    offsets,
    num_targets,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dqt,
    stride_dqh,
    alpha,
    inv_n,
    c,
    m,
    pr,
    seed,
    H,
    N,
    DQ,
    DV,
    HAS_TARGETS: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DQ: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Dq for one (query block, row, head), looping over key blocks."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    hd = pid_bh % H
    start, n, h = _row_info(offsets, num_targets, b, HAS_TARGETS)
    if pid_m * BLOCK_M < n:
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_dq = tl.arange(0, BLOCK_DQ)
        offs_dv = tl.arange(0, BLOCK_DV)
        row_ok = offs_m[:, None] < n
        q = tl.load(
            Q + (start + offs_m[:, None]) * stride_qt + hd * stride_qh + offs_dq[None, :],
            mask=row_ok & (offs_dq[None, :] < DQ),
            other=0.0,
        )
        do = tl.load(
            DO + (start + offs_m[:, None]) * stride_dot + hd * stride_doh + offs_dv[None, :],
            mask=row_ok & (offs_dv[None, :] < DV),
            other=0.0,
        )
        dq = tl.zeros((BLOCK_M, BLOCK_DQ), dtype=tl.float32)
        hi = n
        if CAUSAL:
            hi = tl.where(pid_m * BLOCK_M < c, n, tl.minimum(n, (pid_m + 1) * BLOCK_M))
        for start_n in range(0, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            col_ok = offs_n[:, None] < n
            k = tl.load(
                K + (start + offs_n[:, None]) * stride_kt + hd * stride_kh + offs_dq[None, :],
                mask=col_ok & (offs_dq[None, :] < DQ),
                other=0.0,
            )
            v = tl.load(
                V + (start + offs_n[:, None]) * stride_vt + hd * stride_vh + offs_dv[None, :],
                mask=col_ok & (offs_dv[None, :] < DV),
                other=0.0,
            )
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * alpha
            dp = tl.dot(do, tl.trans(v), input_precision="ieee")
            if DROPOUT:
                keep = _keep(seed, pid_bh, offs_m, offs_n, N, pr)
                dp = tl.where(keep, dp / (1.0 - pr), 0.0)
            visible = _visible(offs_m, offs_n, n, h, c, m, CAUSAL)
            ds = _dscores(s, dp, visible, inv_n)
            dq += tl.dot(ds.to(k.dtype), k, input_precision="ieee")
        tl.store(
            DQ_ + (start + offs_m[:, None]) * stride_dqt + hd * stride_dqh + offs_dq[None, :],
            (dq * alpha).to(DQ_.dtype.element_ty),
            mask=row_ok & (offs_dq[None, :] < DQ),
        )


@triton.jit
def _hstu_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    DK,
    DV_,
    offsets,
    num_targets,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dkt,
    stride_dkh,
    stride_dvt,
    stride_dvh,
    alpha,
    inv_n,
    c,
    m,
    pr,
    seed,
    H,
    N,
    DQ,
    DV,
    HAS_TARGETS: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DQ: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Dk and dv for one (key block, row, head), looping over query blocks."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    hd = pid_bh % H
    start, n, h = _row_info(offsets, num_targets, b, HAS_TARGETS)
    if pid_n * BLOCK_N < n:
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_dq = tl.arange(0, BLOCK_DQ)
        offs_dv = tl.arange(0, BLOCK_DV)
        col_ok = offs_n[:, None] < n
        k = tl.load(
            K + (start + offs_n[:, None]) * stride_kt + hd * stride_kh + offs_dq[None, :],
            mask=col_ok & (offs_dq[None, :] < DQ),
            other=0.0,
        )
        v = tl.load(
            V + (start + offs_n[:, None]) * stride_vt + hd * stride_vh + offs_dv[None, :],
            mask=col_ok & (offs_dv[None, :] < DV),
            other=0.0,
        )
        dk = tl.zeros((BLOCK_N, BLOCK_DQ), dtype=tl.float32)
        dv = tl.zeros((BLOCK_N, BLOCK_DV), dtype=tl.float32)
        lo = 0
        if CAUSAL:
            # only contextual queries look ahead; all others have i >= j
            lo = tl.where(c > 0, 0, (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M)
        for start_m in range(lo, n, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            row_ok = offs_m[:, None] < n
            q = tl.load(
                Q + (start + offs_m[:, None]) * stride_qt + hd * stride_qh + offs_dq[None, :],
                mask=row_ok & (offs_dq[None, :] < DQ),
                other=0.0,
            )
            do = tl.load(
                DO + (start + offs_m[:, None]) * stride_dot + hd * stride_doh + offs_dv[None, :],
                mask=row_ok & (offs_dv[None, :] < DV),
                other=0.0,
            )
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * alpha
            visible = _visible(offs_m, offs_n, n, h, c, m, CAUSAL)
            p = tl.where(visible, s / (1.0 + tl.exp(-s)) * inv_n, 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision="ieee")
            if DROPOUT:
                keep = _keep(seed, pid_bh, offs_m, offs_n, N, pr)
                p = tl.where(keep, p / (1.0 - pr), 0.0)
                dp = tl.where(keep, dp / (1.0 - pr), 0.0)
            dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision="ieee")
            ds = _dscores(s, dp, visible, inv_n)
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision="ieee")
        tl.store(
            DK + (start + offs_n[:, None]) * stride_dkt + hd * stride_dkh + offs_dq[None, :],
            (dk * alpha).to(DK.dtype.element_ty),
            mask=col_ok & (offs_dq[None, :] < DQ),
        )
        tl.store(
            DV_ + (start + offs_n[:, None]) * stride_dvt + hd * stride_dvh + offs_dv[None, :],
            dv.to(DV_.dtype.element_ty),
            mask=col_ok & (offs_dv[None, :] < DV),
        )


def _meta(q: torch.Tensor, v: torch.Tensor) -> dict:
    """Compile-time block sizes for head dims (tl.dot needs >= 16)."""
    return dict(
        BLOCK_M=_BLOCK_M,
        BLOCK_N=_BLOCK_N,
        BLOCK_DQ=max(16, triton.next_power_of_2(q.shape[-1])),
        BLOCK_DV=max(16, triton.next_power_of_2(v.shape[-1])),
    )


class _TritonHSTUAttention(torch.autograd.Function):
    """autograd wrapper of the three Triton kernels."""

    @staticmethod
    def forward(
        ctx,
        q,
        k,
        v,
        offsets,
        num_targets,
        max_seq_len,
        alpha,
        causal,
        max_attn_len,
        contextual_seq_len,
        dropout_pr,
    ):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        offsets = offsets.contiguous()
        heads = q.shape[1]
        batch = offsets.numel() - 1
        out = torch.empty_like(v)
        has_targets = num_targets is not None
        targets = num_targets.contiguous() if has_targets else offsets
        seed = int(torch.randint(0, 2**30, ()).item()) if dropout_pr > 0 else 0
        if batch > 0 and q.shape[0] > 0:
            grid = (triton.cdiv(max_seq_len, _BLOCK_M), batch * heads)
            _hstu_fwd_kernel[grid](
                q,
                k,
                v,
                out,
                offsets,
                targets,
                q.stride(0),
                q.stride(1),
                k.stride(0),
                k.stride(1),
                v.stride(0),
                v.stride(1),
                out.stride(0),
                out.stride(1),
                alpha,
                1.0 / max_seq_len,
                contextual_seq_len,
                max_attn_len,
                dropout_pr,
                seed,
                heads,
                max_seq_len,
                q.shape[-1],
                v.shape[-1],
                HAS_TARGETS=has_targets,
                CAUSAL=causal,
                DROPOUT=dropout_pr > 0,
                **_meta(q, v),
            )
        ctx.save_for_backward(q, k, v, offsets, targets)
        ctx.args = (
            max_seq_len,
            alpha,
            causal,
            max_attn_len,
            contextual_seq_len,
            dropout_pr,
            seed,
            has_targets,
        )
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, offsets, targets = ctx.saved_tensors
        n_max, alpha, causal, m, c, pr, seed, has_targets = ctx.args
        do = grad_out.contiguous()
        dq = torch.zeros_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        heads = q.shape[1]
        batch = offsets.numel() - 1
        if batch > 0 and q.shape[0] > 0:
            common = dict(
                HAS_TARGETS=has_targets,
                CAUSAL=causal,
                DROPOUT=pr > 0,
                **_meta(q, v),
            )
            scalars = (alpha, 1.0 / n_max, c, m, pr, seed, heads, n_max)
            dims = (q.shape[-1], v.shape[-1])
            strides = (
                q.stride(0),
                q.stride(1),
                k.stride(0),
                k.stride(1),
                v.stride(0),
                v.stride(1),
                do.stride(0),
                do.stride(1),
            )
            _hstu_bwd_dq_kernel[(triton.cdiv(n_max, _BLOCK_M), batch * heads)](
                q,
                k,
                v,
                do,
                dq,
                offsets,
                targets,
                *strides,
                dq.stride(0),
                dq.stride(1),
                *scalars,
                *dims,
                **common,
            )
            _hstu_bwd_dkdv_kernel[(triton.cdiv(n_max, _BLOCK_N), batch * heads)](
                q,
                k,
                v,
                do,
                dk,
                dv,
                offsets,
                targets,
                *strides,
                dk.stride(0),
                dk.stride(1),
                dv.stride(0),
                dv.stride(1),
                *scalars,
                *dims,
                **common,
            )
        return (dq, dk, dv) + (None,) * 8


def triton_hstu_mha(
    max_seq_len: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    causal: bool = True,
    dropout_pr: float = 0.0,
    num_targets: torch.Tensor | None = None,
    max_attn_len: int = 0,
    contextual_seq_len: int = 0,
) -> torch.Tensor:
    """Triton HSTU attention; rows longer than max_seq_len are not supported."""
    return _TritonHSTUAttention.apply(
        q,
        k,
        v,
        seq_offsets,
        num_targets,
        max_seq_len,
        float(alpha),
        causal,
        max_attn_len,
        contextual_seq_len,
        dropout_pr,
    )
