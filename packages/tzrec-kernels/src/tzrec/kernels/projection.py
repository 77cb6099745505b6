"""HSTU input projection: x W + b split into u, v, q, k, SiLU on u only (as upstream)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tzrec.kernels.kernel import Kernel, resolve_kernel


def uvqk_projection(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    num_heads: int,
    attn_dim: int,
    hidden_dim: int,
    kernel: Kernel | int | str = Kernel.PYTORCH,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x @ weight + bias`` split into u, v, q, k; u = SiLU(u) (generative-recommenders' HSTU).

    Args:
        x: (total, in_dim) jagged values.
        weight: (in_dim, num_heads * (2 * hidden_dim + 2 * attn_dim)).
        bias: (num_heads * (2 * hidden_dim + 2 * attn_dim),).
        num_heads: number of attention heads H.
        attn_dim: per-head q/k width.
        hidden_dim: per-head u/v width.
        kernel: PYTORCH or TRITON (matmul + bias, SiLU fused for the u columns).

    Returns:
        u (total, H*hidden_dim), v (total, H, hidden_dim),
        q (total, H, attn_dim), k (total, H, attn_dim).
    """
    out_dim = num_heads * (2 * hidden_dim + 2 * attn_dim)
    if x.dim() != 2 or weight.shape != (x.shape[1], out_dim):
        raise ValueError(
            f"uvqk_projection: weight must be ({x.shape[-1]}, {out_dim}) for "
            f"x {tuple(x.shape)}; got {tuple(weight.shape)}"
        )
    if bias.shape != (out_dim,):
        raise ValueError(f"uvqk_projection: bias must be ({out_dim},)")
    u_width = hidden_dim * num_heads
    if resolve_kernel(kernel, x.device) == Kernel.TRITON:
        from tzrec.kernels.triton_projection import triton_linear, triton_linear_silu

        u = triton_linear_silu(x, weight[:, :u_width], bias[:u_width])
        vqk = triton_linear(x, weight[:, u_width:], bias[u_width:])
    else:
        uvqk = torch.addmm(bias, x, weight)
        u, vqk = F.silu(uvqk[:, :u_width]), uvqk[:, u_width:]
    v, q, k = torch.split(vqk, [u_width, attn_dim * num_heads, attn_dim * num_heads], dim=1)
    total = x.shape[0]
    return (
        u,
        v.reshape(total, num_heads, hidden_dim),
        q.reshape(total, num_heads, attn_dim),
        k.reshape(total, num_heads, attn_dim),
    )
