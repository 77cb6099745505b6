"""HSTU pointwise attention over jagged sequences: dispatch and the autograd PyTorch path.

The mask rule and math are documented in :mod:`tzrec.kernels.attention_ref` (the reference
this module, the Triton kernels and the export op share). ``hstu_mha`` picks Triton, the
TorchScript row loop (``torch.jit.trace``), the ``tzrec::hstu_mha_fwd`` op (``torch.export``)
or the PyTorch path: a per-batch plan (:mod:`tzrec.kernels.attention_plan`) runs short rows
padded in length buckets and long rows jagged in query blocks, chosen by a cost model.
"""

from __future__ import annotations

import torch

from tzrec.kernels.attention_plan import JaggedHSTUAttention, build_plan, run_plan
from tzrec.kernels.attention_ref import (
    attention_visibility,
    hstu_attention_mask,
    padded_hstu_mha,
    scripted_jagged_hstu_mha,
)
from tzrec.kernels.export_ops import hstu_mha_fwd
from tzrec.kernels.kernel import Kernel, is_tracing, resolve_kernel

__all__ = [
    "attention_visibility",
    "hstu_attention_mask",
    "hstu_mha",
    "padded_hstu_mha",
    "scripted_jagged_hstu_mha",
]


# the autograd function of the plan's jagged rows (tests inspect its saved state)
_JaggedHSTUAttention = JaggedHSTUAttention


def _check_inputs(q, k, v, seq_offsets) -> None:
    """Validate shapes of hstu_mha inputs; raise ValueError with a clear line."""
    if q.dim() != 3 or k.shape != q.shape or v.dim() != 3:
        raise ValueError(
            "hstu_mha expects q, k of shape (total, heads, attn_dim) and v of "
            f"shape (total, heads, hidden_dim); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if v.shape[:2] != q.shape[:2]:
        raise ValueError(f"v shape {tuple(v.shape)} does not match q shape {tuple(q.shape)}")
    if seq_offsets.dim() != 1 or seq_offsets.numel() < 1:
        raise ValueError("seq_offsets must be a 1-D tensor of B + 1 offsets")


def hstu_mha(
    max_seq_len: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    causal: bool = True,
    dropout_pr: float = 0.0,
    training: bool = True,
    num_targets: torch.Tensor | None = None,
    max_attn_len: int = 0,
    contextual_seq_len: int = 0,
    kernel: Kernel | int | str = Kernel.PYTORCH,
    plan: str | None = None,
) -> torch.Tensor:
    """HSTU multi-head pointwise attention on jagged q, k, v (see module doc).

    Args:
        max_seq_len: N; attention weights are divided by it (upstream rule).
        alpha: scale applied to Q Kᵀ before SiLU.
        q: (total, heads, attn_dim) jagged queries.
        k: (total, heads, attn_dim) jagged keys.
        v: (total, heads, hidden_dim) jagged values.
        seq_offsets: (B + 1,) int64 row offsets into the jagged dimension.
        causal: causal (True) or bidirectional-over-history (False) mask.
        dropout_pr: dropout probability on the attention weights.
        training: dropout only applies when True.
        num_targets: optional (B,) number of candidate positions at row ends.
        max_attn_len: if > 0, the attention window in ids (see the module doc).
        contextual_seq_len: number of leading contextual tokens in every row.
        kernel: PYTORCH or TRITON (degrades to PYTORCH when unavailable).
        plan: PyTorch path only: None picks padded buckets / jagged rows by the cost
            model; "padded" or "jagged" forces one (tests, benchmarks).

    Returns:
        (total, heads, hidden_dim) jagged output.
    """
    _check_inputs(q, k, v, seq_offsets)
    pr = dropout_pr if training else 0.0
    if not 0.0 <= pr < 1.0:
        raise ValueError(f"dropout_pr must be in [0, 1), got {dropout_pr}")
    if plan not in (None, "padded", "jagged"):
        raise ValueError(f"hstu_mha plan must be None, 'padded' or 'jagged', got {plan!r}")
    if resolve_kernel(kernel, q.device) == Kernel.TRITON:
        from tzrec.kernels.triton_attention import triton_hstu_mha

        return triton_hstu_mha(
            max_seq_len,
            alpha,
            q,
            k,
            v,
            seq_offsets,
            causal=causal,
            dropout_pr=pr,
            num_targets=num_targets,
            max_attn_len=max_attn_len,
            contextual_seq_len=contextual_seq_len,
        )
    if torch.jit.is_tracing():
        # TorchScript export: the trace records a call into a scripted row loop
        return scripted_jagged_hstu_mha(
            max_seq_len,
            float(alpha),
            q,
            k,
            v,
            seq_offsets,
            causal,
            num_targets,
            max_attn_len,
            contextual_seq_len,
        )
    if is_tracing():
        # torch.export: one opaque custom op running the jagged forward (export_ops)
        return hstu_mha_fwd(
            int(max_seq_len),
            float(alpha),
            q,
            k,
            v,
            seq_offsets,
            causal,
            num_targets,
            int(max_attn_len),
            int(contextual_seq_len),
        )
    offsets = seq_offsets.tolist()
    batch = len(offsets) - 1
    targets = [0] * batch if num_targets is None else num_targets.tolist()
    plan = build_plan(
        offsets,
        targets,
        q.shape[1],
        q.shape[2],
        v.shape[2],
        int(max_seq_len),
        causal,
        int(max_attn_len),
        int(contextual_seq_len),
        q.device,
        force=plan,
    )
    return run_plan(
        plan,
        q,
        k,
        v,
        int(max_seq_len),
        float(alpha),
        causal,
        int(max_attn_len),
        int(contextual_seq_len),
        pr,
    )
