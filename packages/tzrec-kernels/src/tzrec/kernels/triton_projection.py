"""Triton matmul with fused bias + SiLU epilogue (and its SiLU' epilogue)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tzrec.kernels.kernel import triton_interpret_enabled

_EPI_NONE = 0
_EPI_SILU = 1
_EPI_SILU_BWD = 2


@triton.jit
def _matmul_kernel(
    A,
    B,
    C,
    Bias,
    G,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    HAS_BIAS: tl.constexpr,
    EPILOGUE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """C = epilogue(A @ B + bias); SILU_BWD gives C = G * SiLU'(A @ B + bias)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(
            A + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak,
            mask=(offs_m[:, None] < M) & (offs_k[None, :] < K),
            other=0.0,
        )
        b = tl.load(
            B + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn,
            mask=(offs_k[:, None] < K) & (offs_n[None, :] < N),
            other=0.0,
        )
        acc += tl.dot(a, b, input_precision="ieee")
    if HAS_BIAS:
        acc += tl.load(Bias + offs_n, mask=offs_n < N, other=0.0)[None, :]
    c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    c_off = offs_m[:, None] * N + offs_n[None, :]
    if EPILOGUE == 1:
        acc = acc / (1.0 + tl.exp(-acc))
    elif EPILOGUE == 2:
        g = tl.load(G + c_off, mask=c_mask, other=0.0).to(tl.float32)
        sig = 1.0 / (1.0 + tl.exp(-acc))
        acc = g * sig * (1.0 + acc * (1.0 - sig))
    tl.store(C + c_off, acc.to(C.dtype.element_ty), mask=c_mask)


def _matmul(a, b, bias=None, epilogue=_EPI_NONE, grad=None):
    """Launch the matmul kernel: (M, K) @ (K, N) with optional epilogue."""
    m, k = a.shape
    n = b.shape[1]
    c = a.new_empty((m, n))
    if m == 0 or n == 0:
        return c
    if k == 0:
        a = a.new_zeros((m, 1))
        b = b.new_zeros((1, n))
        k = 1
    block = 16 if triton_interpret_enabled() else 64
    grid = (triton.cdiv(m, block), triton.cdiv(n, block))
    _matmul_kernel[grid](
        a,
        b,
        c,
        bias if bias is not None else c,
        grad.contiguous() if grad is not None else c,
        m,
        n,
        k,
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        HAS_BIAS=bias is not None,
        EPILOGUE=epilogue,
        BLOCK_M=block,
        BLOCK_N=block,
        BLOCK_K=32 if block == 64 else 16,
    )
    return c


class _LinearSiLU(torch.autograd.Function):
    """SiLU(x W + b); backward recomputes x W + b rather than storing it."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        bias = bias.contiguous()
        ctx.save_for_backward(x, weight, bias)
        return _matmul(x, weight, bias, _EPI_SILU)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias = ctx.saved_tensors
        dpre = _matmul(x, weight, bias, _EPI_SILU_BWD, grad)
        dx = _matmul(dpre, weight.t())
        dw = _matmul(x.t(), dpre)
        return dx, dw, dpre.sum(0)


class _Linear(torch.autograd.Function):
    """x W + b with Triton matmuls forward and backward."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return _matmul(x, weight, bias.contiguous())

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        return _matmul(grad, weight.t()), _matmul(x.t(), grad), grad.sum(0)


def triton_linear(x, weight, bias):
    """Triton x @ weight + bias, x (M, K), weight (K, N), bias (N,)."""
    return _Linear.apply(x, weight, bias)


def triton_linear_silu(x, weight, bias):
    """Triton SiLU(x @ weight + bias), x (M, K), weight (K, N), bias (N,)."""
    return _LinearSiLU.apply(x, weight, bias)
