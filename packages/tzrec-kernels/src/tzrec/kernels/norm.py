"""Layer norm over jagged values (rows of a 2-D tensor) and its per-head variant."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tzrec.kernels.kernel import Kernel, resolve_kernel


def _affine(x: torch.Tensor, weight, bias, dim: int):
    """Weight/bias tensors, ones/zeros standing in for missing ones."""
    w = weight if weight is not None else x.new_ones(dim)
    b = bias if bias is not None else x.new_zeros(dim)
    return w, b


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    kernel: Kernel | int | str = Kernel.PYTORCH,
) -> torch.Tensor:
    """Normalize every row of x (N, D), then scale by weight (D,) and add bias."""
    return group_norm(x, weight, bias, num_groups=1, eps=eps, kernel=kernel)


def group_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    num_groups: int = 1,
    eps: float = 1e-5,
    kernel: Kernel | int | str = Kernel.PYTORCH,
) -> torch.Tensor:
    """Per-group layer norm: x (N, G*D) normalized over each of its G groups.

    With G = heads this normalizes every head of a (N, H*D) activation on its
    own; weight and bias are (G*D,), one value per channel.
    """
    if x.dim() != 2 or x.shape[1] % num_groups != 0:
        raise ValueError(
            f"group_norm expects x of shape (N, G*D) with G={num_groups}; got {tuple(x.shape)}"
        )
    width = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (width,):
            raise ValueError(f"{name} must have shape ({width},), got {t.shape}")
    if resolve_kernel(kernel, x.device) == Kernel.TRITON:
        from tzrec.kernels.triton_norm import triton_group_norm

        w, b = _affine(x, weight, bias, width)
        return triton_group_norm(x, w, b, num_groups, eps)
    dim = width // num_groups
    y = F.layer_norm(x.reshape(-1, num_groups, dim), (dim,), eps=eps)
    y = y.reshape(x.shape)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
