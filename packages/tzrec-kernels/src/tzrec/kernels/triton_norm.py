"""Triton (group) layer norm: one program per (row, group)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _norm_fwd_kernel(X, Y, W, B, Mean, Rstd, G, D, eps, BLOCK_D: tl.constexpr):
    """Normalize row r = (row, group) of length D; save mean and 1/std."""
    r = tl.program_id(0)
    offs = tl.arange(0, BLOCK_D)
    ok = offs < D
    x = tl.load(X + r * D + offs, mask=ok, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / D
    xc = tl.where(ok, x - mean, 0.0)
    var = tl.sum(xc * xc, axis=0) / D
    rstd = 1.0 / tl.sqrt(var + eps)
    w_off = (r % G) * D
    w = tl.load(W + w_off + offs, mask=ok, other=0.0).to(tl.float32)
    b = tl.load(B + w_off + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(Y + r * D + offs, (xc * rstd * w + b).to(Y.dtype.element_ty), mask=ok)
    tl.store(Mean + r, mean)
    tl.store(Rstd + r, rstd)


@triton.jit
def _norm_bwd_kernel(X, DY, DX, W, DW, DB, Mean, Rstd, G, D, BLOCK_D: tl.constexpr):
    """Compute dx of one (row, group); dw and db accumulate atomically."""
    r = tl.program_id(0)
    offs = tl.arange(0, BLOCK_D)
    ok = offs < D
    x = tl.load(X + r * D + offs, mask=ok, other=0.0).to(tl.float32)
    dy = tl.load(DY + r * D + offs, mask=ok, other=0.0).to(tl.float32)
    w_off = (r % G) * D
    w = tl.load(W + w_off + offs, mask=ok, other=0.0).to(tl.float32)
    mean = tl.load(Mean + r)
    rstd = tl.load(Rstd + r)
    xhat = tl.where(ok, (x - mean) * rstd, 0.0)
    wdy = w * dy
    c1 = tl.sum(xhat * wdy, axis=0) / D
    c2 = tl.sum(wdy, axis=0) / D
    dx = (wdy - (xhat * c1 + c2)) * rstd
    tl.store(DX + r * D + offs, dx.to(DX.dtype.element_ty), mask=ok)
    tl.atomic_add(DW + w_off + offs, dy * xhat, mask=ok)
    tl.atomic_add(DB + w_off + offs, dy, mask=ok)


class _GroupNorm(torch.autograd.Function):
    """autograd wrapper of the Triton group-norm kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps):
        x = x.contiguous()
        rows = x.shape[0] * num_groups
        dim = x.shape[1] // num_groups
        y = torch.empty_like(x)
        mean = x.new_empty(rows, dtype=torch.float32)
        rstd = x.new_empty(rows, dtype=torch.float32)
        block = triton.next_power_of_2(max(dim, 1))
        if rows > 0:
            _norm_fwd_kernel[(rows,)](
                x,
                y,
                weight.contiguous(),
                bias.contiguous(),
                mean,
                rstd,
                num_groups,
                dim,
                eps,
                BLOCK_D=block,
            )
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.shape = (rows, num_groups, dim, block)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        rows, num_groups, dim, block = ctx.shape
        dx = torch.empty_like(x)
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=x.device)
        db = torch.zeros(weight.shape, dtype=torch.float32, device=x.device)
        if rows > 0:
            _norm_bwd_kernel[(rows,)](
                x,
                dy.contiguous(),
                dx,
                weight.contiguous(),
                dw,
                db,
                mean,
                rstd,
                num_groups,
                dim,
                BLOCK_D=block,
            )
        return dx, dw.to(weight.dtype), db.to(weight.dtype), None, None


def triton_group_norm(x, weight, bias, num_groups, eps):
    """Triton per-group layer norm of x (N, G*D) with weight/bias (G*D,)."""
    return _GroupNorm.apply(x, weight, bias, num_groups, eps)
