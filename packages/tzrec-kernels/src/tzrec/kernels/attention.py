"""HSTU pointwise attention over jagged sequences: dispatch and the autograd PyTorch path.

The mask rule and math are documented in :mod:`tzrec.kernels.attention_ref` (the reference
this module, the Triton kernels and the export op share). ``hstu_mha`` picks Triton, the
TorchScript row loop (``torch.jit.trace``), the ``tzrec::hstu_mha_fwd`` op (``torch.export``)
or the row-blocked PyTorch path below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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

# Filled into masked scores: silu(x) and silu'(x) are exactly 0 there.
_MASKED_SCORE = -1.0e4
# Query rows per block in the PyTorch path; keys beyond a block's end are
# skipped for causal rows, roughly halving the work of long rows.
_BLOCK = 128


def _row_blocks(n: int, t: int, c: int, m: int, causal: bool) -> list[tuple[int, int, int, bool]]:
    """Split a row into query blocks: (start, end, key_end, needs_general_mask)."""
    plain = causal and t == 0 and c == 0 and m == 0
    blocks = []
    for a in range(0, n, _BLOCK):
        b = min(a + _BLOCK, n)
        key_end = b if causal and a >= c else n
        blocks.append((a, b, key_end, not plain))
    return blocks


class _JaggedHSTUAttention(torch.autograd.Function):
    """Row-by-row HSTU attention with batched matmuls over heads.

    Forward keeps only the masked scores alpha·QKᵀ of each (row, query block);
    backward rebuilds SiLU and SiLU' from them. Memory grows with Σ nᵢ².
    """

    @staticmethod
    def forward(
        ctx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        offsets: list[int],
        targets: list[int],
        max_seq_len: int,
        alpha: float,
        causal: bool,
        max_attn_len: int,
        contextual_seq_len: int,
        dropout_pr: float,
    ) -> torch.Tensor:
        qt = q.transpose(0, 1).contiguous()  # (H, total, Dq)
        kt = k.transpose(0, 1).contiguous()
        vt = v.transpose(0, 1).contiguous()
        heads, total, _ = qt.shape
        out = torch.zeros((heads, total, vt.shape[-1]), dtype=q.dtype, device=q.device)
        inv_n = 1.0 / max_seq_len
        saved: list[tuple] = []
        for row in range(len(offsets) - 1):
            s0, s1 = offsets[row], offsets[row + 1]
            n = s1 - s0
            if n == 0:
                continue
            t = min(max(targets[row], 0), n)
            for a, b, key_end, general in _row_blocks(
                n, t, contextual_seq_len, max_attn_len, causal
            ):
                qb = qt[:, s0 + a : s0 + b]
                kb = kt[:, s0 : s0 + key_end]
                vb = vt[:, s0 : s0 + key_end]
                scores = torch.baddbmm(
                    qb.new_empty(()), qb, kb.transpose(1, 2), beta=0, alpha=alpha
                )
                if general:
                    visible = attention_visibility(
                        torch.arange(a, b, device=q.device)[:, None],
                        torch.arange(0, key_end, device=q.device)[None, :],
                        n,
                        t,
                        contextual_seq_len,
                        max_attn_len,
                        causal,
                    )
                    scores.masked_fill_(~visible, _MASKED_SCORE)
                elif key_end > a:
                    # causal: mask the strict upper triangle of the diagonal tile
                    diag = scores[:, :, a:key_end]
                    upper = torch.ones(b - a, key_end - a, dtype=torch.bool, device=q.device).triu_(
                        1
                    )
                    diag.masked_fill_(upper, _MASKED_SCORE)
                attn = F.silu(scores)
                keep = None
                if dropout_pr > 0.0:
                    keep = torch.rand_like(attn) >= dropout_pr
                    attn = attn * keep * (1.0 / (1.0 - dropout_pr))
                out[:, s0 + a : s0 + b] = torch.baddbmm(
                    attn.new_empty(()), attn, vb, beta=0, alpha=inv_n
                )
                saved.append((s0, a, b, key_end, scores, keep))
        ctx.saved_blocks = saved
        ctx.save_for_backward(qt, kt, vt)
        ctx.inv_n = inv_n
        ctx.alpha = alpha
        ctx.dropout_pr = dropout_pr
        return out.transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        qt, kt, vt = ctx.saved_tensors
        dot = grad_out.transpose(0, 1).contiguous()
        dq = torch.zeros_like(qt)
        dk = torch.zeros_like(kt)
        dv = torch.zeros_like(vt)
        inv_n, alpha, pr = ctx.inv_n, ctx.alpha, ctx.dropout_pr
        for s0, a, b, key_end, scores, keep in ctx.saved_blocks:
            qb = qt[:, s0 + a : s0 + b]
            kb = kt[:, s0 : s0 + key_end]
            vb = vt[:, s0 : s0 + key_end]
            dob = dot[:, s0 + a : s0 + b]
            attn = F.silu(scores)
            if keep is not None:
                attn = attn * keep * (1.0 / (1.0 - pr))
            dv[:, s0 : s0 + key_end].baddbmm_(attn.transpose(1, 2), dob, alpha=inv_n)
            dattn = torch.bmm(dob, vb.transpose(1, 2))
            if keep is not None:
                dattn = dattn * keep * (1.0 / (1.0 - pr))
            dscores = torch.ops.aten.silu_backward(dattn, scores)
            dq[:, s0 + a : s0 + b] = torch.baddbmm(
                dscores.new_empty(()), dscores, kb, beta=0, alpha=alpha * inv_n
            )
            dk[:, s0 : s0 + key_end].baddbmm_(dscores.transpose(1, 2), qb, alpha=alpha * inv_n)
        return (
            dq.transpose(0, 1),
            dk.transpose(0, 1),
            dv.transpose(0, 1),
        ) + (None,) * 8


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

    Returns:
        (total, heads, hidden_dim) jagged output.
    """
    _check_inputs(q, k, v, seq_offsets)
    pr = dropout_pr if training else 0.0
    if not 0.0 <= pr < 1.0:
        raise ValueError(f"dropout_pr must be in [0, 1), got {dropout_pr}")
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
    return _JaggedHSTUAttention.apply(
        q,
        k,
        v,
        offsets,
        targets,
        max_seq_len,
        float(alpha),
        causal,
        max_attn_len,
        contextual_seq_len,
        pr,
    )
