"""Triton gather-add of position/time embeddings; backward scatters atomically."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK_D = 32


@triton.jit
def _add_emb_kernel(
    X,
    P,
    T,
    PB,
    TB,
    OUT,
    alpha,
    D,
    BACKWARD: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Forward: out = alpha x + P[pb] + T[tb]; backward: dx, dP, dT from OUT."""
    i = tl.program_id(0)
    pb = tl.load(PB + i)
    tb = tl.load(TB + i)
    for d0 in range(0, D, BLOCK_D):
        offs = d0 + tl.arange(0, BLOCK_D)
        ok = offs < D
        if BACKWARD:
            g = tl.load(OUT + i * D + offs, mask=ok, other=0.0)
            tl.store(X + i * D + offs, g * alpha, mask=ok)
            tl.atomic_add(P + pb * D + offs, g, mask=ok)
            tl.atomic_add(T + tb * D + offs, g, mask=ok)
        else:
            x = tl.load(X + i * D + offs, mask=ok, other=0.0)
            p = tl.load(P + pb * D + offs, mask=ok, other=0.0)
            t = tl.load(T + tb * D + offs, mask=ok, other=0.0)
            tl.store(OUT + i * D + offs, x * alpha + p + t, mask=ok)


class _AddEmbeddings(torch.autograd.Function):
    """autograd wrapper of the gather-add kernel."""

    @staticmethod
    def forward(ctx, x, pos_emb, ts_emb, pos_bucket, time_bucket, alpha):
        x = x.contiguous()
        out = torch.empty_like(x)
        total, dim = x.shape
        if total > 0 and dim > 0:
            _add_emb_kernel[(total,)](
                x,
                pos_emb.contiguous(),
                ts_emb.contiguous(),
                pos_bucket,
                time_bucket,
                out,
                alpha,
                dim,
                BACKWARD=False,
                BLOCK_D=_BLOCK_D,
            )
        ctx.save_for_backward(pos_bucket, time_bucket)
        ctx.alpha = alpha
        ctx.shapes = (pos_emb.shape, ts_emb.shape)
        return out

    @staticmethod
    def backward(ctx, grad):
        pos_bucket, time_bucket = ctx.saved_tensors
        grad = grad.contiguous()
        total, dim = grad.shape
        dx = torch.empty_like(grad)
        dpos = grad.new_zeros(ctx.shapes[0])
        dts = grad.new_zeros(ctx.shapes[1])
        if total > 0 and dim > 0:
            _add_emb_kernel[(total,)](
                dx,
                dpos,
                dts,
                pos_bucket,
                time_bucket,
                grad,
                ctx.alpha,
                dim,
                BACKWARD=True,
                BLOCK_D=_BLOCK_D,
            )
        return dx, dpos, dts, None, None, None


def triton_add_embeddings(x, pos_emb, ts_emb, pos_bucket, time_bucket, alpha):
    """Triton alpha * x + pos_emb[pos_bucket] + ts_emb[time_bucket]."""
    return _AddEmbeddings.apply(
        x, pos_emb, ts_emb, pos_bucket.contiguous(), time_bucket.contiguous(), alpha
    )
