"""Semi-local attention (SLA, ULTRA-HSTU): HSTU attention over a local window + a global prefix.

TorchEasyRec's rule (``build_sla_func_tensor``), for one row of length ``n`` with ``t``
targets at its end and ``c`` contextual tokens at its start; ``h = n - min(t, n)`` is the
history boundary and ``k2e = max(sla_k2, c)`` the global prefix::

    history query i < h:  sees key j  iff  j <= i  and  (i - j < sla_k1  or  j < k2e)
    target query  i >= h: sees key j  iff  j < h       (the whole history, no target,
                                                       itself neither)

attn = SiLU(alpha · q kᵀ) / divisor on visible pairs, 0 elsewhere; out = attn · v (no
dropout: the STU layer never drops attention weights).

:func:`sla_hstu_mha` runs, per row, blocks of ``_BLOCK`` history queries against the keys
``[0, min(k2e, end)) ∪ [start - sla_k1 + 1, end)`` and the targets against ``[0, h)``: time
and memory O(n · (sla_k1 + k2e + _BLOCK) + t · n), not O(n²).
:func:`padded_sla_mha` is the dense masked reference the fast paths are tested against.
Triton: :mod:`tzrec.kernels.triton_sla`. TorchScript (``torch.jit.trace``) records the
scripted blocked forward; ``torch.export`` records the ``tzrec::sla_hstu_mha_fwd`` op.

No ``from __future__ import annotations``: TorchScript and ``torch.library`` read the
annotations.
"""

from typing import List, Optional, Tuple, Union  # noqa: UP035 (TorchScript, op schema)

import torch
import torch.nn.functional as F

from tzrec.kernels.jagged import jagged_positions
from tzrec.kernels.kernel import Kernel, is_tracing, resolve_kernel

__all__ = [
    "padded_sla_mha",
    "sla_attention_mask",
    "sla_blocks",
    "sla_hstu_mha",
    "sla_visibility",
]

# History query rows per block of the PyTorch path.
_BLOCK = 128


def sla_visibility(
    i: torch.Tensor,
    j: torch.Tensor,
    n: torch.Tensor,
    num_targets: torch.Tensor,
    sla_k1: int,
    sla_k2: int,
    contextual_seq_len: int,
) -> torch.Tensor:
    """Boolean visibility of key ``j`` to query ``i`` (broadcasting tensors), module rule."""
    k2e = max(sla_k2, contextual_seq_len)
    h = n - torch.minimum(num_targets.clamp(min=0), n)
    history = (j <= i) & (((i - j) < sla_k1) | (j < k2e))
    visible = torch.where(i < h, history, j < h)
    return visible & (i < n) & (j < n)


def sla_attention_mask(
    n: int,
    num_targets: int = 0,
    sla_k1: int = 0,
    sla_k2: int = 0,
    contextual_seq_len: int = 0,
) -> torch.Tensor:
    """The (n, n) boolean SLA mask of one row: ``mask[i, j]`` is True if i sees j."""
    idx = torch.arange(n)
    return sla_visibility(
        idx[:, None],
        idx[None, :],
        torch.tensor(n),
        torch.tensor(num_targets),
        sla_k1,
        sla_k2,
        contextual_seq_len,
    )


def padded_sla_mha(
    divisor: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    sla_k1: int,
    sla_k2: int,
    num_targets: Optional[torch.Tensor] = None,  # noqa: UP045
    contextual_seq_len: int = 0,
) -> torch.Tensor:
    """Dense masked reference: pad to the longest row, B × L² scores, SLA mask (autograd)."""
    lengths = seq_offsets[1:] - seq_offsets[:-1]
    batch = lengths.shape[0]
    longest = int(lengths.max()) if batch > 0 else 0
    rows, pos = jagged_positions(seq_offsets, q.shape[0])
    pq = q.new_zeros((batch, longest, q.shape[1], q.shape[2]))
    pk = k.new_zeros((batch, longest, k.shape[1], k.shape[2]))
    pv = v.new_zeros((batch, longest, v.shape[1], v.shape[2]))
    pq = pq.index_put((rows, pos), q)
    pk = pk.index_put((rows, pos), k)
    pv = pv.index_put((rows, pos), v)
    attn = F.silu(torch.einsum("bnhd,bmhd->bhnm", pq, pk) * alpha) / divisor
    idx = torch.arange(longest, device=q.device)
    targets = torch.zeros_like(lengths) if num_targets is None else num_targets.to(lengths.dtype)
    mask = sla_visibility(
        idx.view(1, -1, 1),
        idx.view(1, 1, -1),
        lengths.view(-1, 1, 1),
        targets.view(-1, 1, 1),
        sla_k1,
        sla_k2,
        contextual_seq_len,
    )
    attn = attn * mask.unsqueeze(1).to(attn.dtype)
    return torch.einsum("bhnm,bmhd->bnhd", attn, pv)[rows, pos]


def sla_blocks(
    offsets: List[int],  # noqa: UP006 (TorchScript)
    targets: List[int],  # noqa: UP006
    sla_k1: int,
    sla_k2: int,
    contextual_seq_len: int,
    block: int,
) -> List[Tuple[int, int, int, int, int, int, int, int]]:  # noqa: UP006
    """The work plan: one (s0, n, h, a, b, p, l0, l1) per query block of every row.

    Row ``[s0, s0 + n)`` with history end ``h``; queries ``[a, b)`` (row-relative, all
    history or all targets) read the keys ``[0, p) ∪ [l0, l1)`` with ``p <= l0``, a superset
    of what they see (the mask removes the rest).
    """
    k2e = max(sla_k2, contextual_seq_len)
    plan: List[Tuple[int, int, int, int, int, int, int, int]] = []  # noqa: UP006
    for row in range(len(offsets) - 1):
        s0 = offsets[row]
        n = offsets[row + 1] - s0
        if n <= 0:
            continue
        h = n - min(max(targets[row], 0), n)
        for a in range(0, h, block):
            b = min(a + block, h)
            p = min(k2e, b)
            l0 = max(p, a - sla_k1 + 1) if sla_k1 > 0 else p
            l1 = b if sla_k1 > 0 else p
            plan.append((s0, n, h, a, b, p, l0, max(l0, l1)))
        for a in range(h, n, block):
            plan.append((s0, n, h, a, min(a + block, n), h, h, h))
    return plan


def _block_keys(t: torch.Tensor, s0: int, p: int, l0: int, l1: int) -> torch.Tensor:
    """Rows ``[s0, s0 + p) ∪ [s0 + l0, s0 + l1)`` of (H, total, D) ``t`` along dim 1."""
    if l1 <= l0:
        return t[:, s0 : s0 + p]
    if p == 0:
        return t[:, s0 + l0 : s0 + l1]
    return torch.cat([t[:, s0 : s0 + p], t[:, s0 + l0 : s0 + l1]], dim=1)


def _block_mask(
    n: int,
    h: int,
    a: int,
    b: int,
    p: int,
    l0: int,
    l1: int,
    sla_k1: int,
    k2e: int,
    device: torch.device,
) -> torch.Tensor:
    """Visibility (b - a, p + l1 - l0) of a block's key set to its queries."""
    i = torch.arange(a, b, device=device).view(-1, 1)
    j = torch.cat([torch.arange(0, p, device=device), torch.arange(l0, l1, device=device)]).view(
        1, -1
    )
    return sla_visibility(
        i, j, torch.tensor(n, device=device), torch.tensor(n - h, device=device), sla_k1, k2e, 0
    )


def rowwise_sla_mha(
    divisor: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    sla_k1: int,
    sla_k2: int,
    num_targets: Optional[torch.Tensor],  # noqa: UP045 (TorchScript)
    contextual_seq_len: int,
) -> torch.Tensor:
    """Forward-only blocked SLA (serving: TorchScript and the export op); no autograd."""
    offsets: List[int] = seq_offsets.tolist()  # noqa: UP006 (TorchScript)
    targets: List[int] = [0] * (len(offsets) - 1)  # noqa: UP006
    if num_targets is not None:
        given: List[int] = num_targets.tolist()  # noqa: UP006
        targets = given
    k2e = max(sla_k2, contextual_seq_len)
    qt = q.transpose(0, 1)
    kt = k.transpose(0, 1)
    vt = v.transpose(0, 1)
    out = torch.zeros(v.shape[1], q.shape[0], v.shape[2], dtype=v.dtype, device=v.device)
    block = 128  # _BLOCK (TorchScript reads no module globals)
    for s0, n, h, a, b, p, l0, l1 in sla_blocks(
        offsets, targets, sla_k1, sla_k2, contextual_seq_len, block
    ):
        if p + l1 - l0 == 0:
            continue
        scores = torch.bmm(qt[:, s0 + a : s0 + b], _block_keys(kt, s0, p, l0, l1).transpose(1, 2))
        mask = _block_mask(n, h, a, b, p, l0, l1, sla_k1, k2e, q.device)
        attn = F.silu(scores * alpha) * mask.to(scores.dtype).unsqueeze(0)
        out[:, s0 + a : s0 + b] = torch.bmm(attn, _block_keys(vt, s0, p, l0, l1)) / divisor
    return out.transpose(0, 1).contiguous()


# Filled into masked scores: silu(x) and silu'(x) are exactly 0 there.
_MASKED_SCORE = -1.0e4


class _JaggedSLA(torch.autograd.Function):
    """Blocked SLA with batched matmuls over heads; saves each block's masked scores."""

    @staticmethod
    def forward(ctx, q, k, v, offsets, targets, divisor, alpha, sla_k1, sla_k2, c):
        qt = q.transpose(0, 1).contiguous()  # (H, total, Dq)
        kt = k.transpose(0, 1).contiguous()
        vt = v.transpose(0, 1).contiguous()
        k2e = max(sla_k2, c)
        inv_n = 1.0 / divisor
        out = torch.zeros((vt.shape[0], vt.shape[1], vt.shape[2]), dtype=v.dtype, device=v.device)
        saved = []
        for s0, n, h, a, b, p, l0, l1 in sla_blocks(offsets, targets, sla_k1, sla_k2, c, _BLOCK):
            if p + l1 - l0 == 0:
                continue
            qb = qt[:, s0 + a : s0 + b]
            scores = torch.baddbmm(
                qb.new_empty(()),
                qb,
                _block_keys(kt, s0, p, l0, l1).transpose(1, 2),
                beta=0,
                alpha=alpha,
            )
            if a < h:  # target blocks see every key of their set
                visible = _block_mask(n, h, a, b, p, l0, l1, sla_k1, k2e, q.device)
                scores.masked_fill_(~visible, _MASKED_SCORE)
            out[:, s0 + a : s0 + b] = torch.baddbmm(
                scores.new_empty(()),
                F.silu(scores),
                _block_keys(vt, s0, p, l0, l1),
                beta=0,
                alpha=inv_n,
            )
            saved.append((s0, a, b, p, l0, l1, scores))
        ctx.saved_blocks = saved
        ctx.save_for_backward(qt, kt, vt)
        ctx.inv_n = inv_n
        ctx.alpha = alpha
        return out.transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        qt, kt, vt = ctx.saved_tensors
        dot = grad_out.transpose(0, 1).contiguous()
        dq = torch.zeros_like(qt)
        dk = torch.zeros_like(kt)
        dv = torch.zeros_like(vt)
        scale = ctx.alpha * ctx.inv_n
        for s0, a, b, p, l0, l1, scores in ctx.saved_blocks:
            qb = qt[:, s0 + a : s0 + b]
            dob = dot[:, s0 + a : s0 + b]
            kb = _block_keys(kt, s0, p, l0, l1)
            vb = _block_keys(vt, s0, p, l0, l1)
            dvb = torch.bmm(F.silu(scores).transpose(1, 2), dob)
            dscores = torch.ops.aten.silu_backward(torch.bmm(dob, vb.transpose(1, 2)), scores)
            dq[:, s0 + a : s0 + b] = torch.baddbmm(
                dscores.new_empty(()), dscores, kb, beta=0, alpha=scale
            )
            dkb = torch.bmm(dscores.transpose(1, 2), qb)
            for grad, part in ((dv, dvb), (dk, dkb)):
                scale_part = ctx.inv_n if grad is dv else scale
                grad[:, s0 : s0 + p].add_(part[:, :p], alpha=scale_part)
                if l1 > l0:
                    grad[:, s0 + l0 : s0 + l1].add_(part[:, p:], alpha=scale_part)
        return (dq.transpose(0, 1), dk.transpose(0, 1), dv.transpose(0, 1)) + (None,) * 7


@torch.library.custom_op("tzrec::sla_hstu_mha_fwd", mutates_args=())
def sla_hstu_mha_fwd(
    divisor: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    sla_k1: int,
    sla_k2: int,
    num_targets: Optional[torch.Tensor],  # noqa: UP045 (op schema)
    contextual_seq_len: int,
) -> torch.Tensor:
    """Forward of SLA as one opaque op for ``torch.export`` (serving: no autograd)."""
    with torch.no_grad():
        return rowwise_sla_mha(
            divisor, alpha, q, k, v, seq_offsets, sla_k1, sla_k2, num_targets, contextual_seq_len
        )


@sla_hstu_mha_fwd.register_fake
def _sla_hstu_mha_fwd_fake(
    divisor, alpha, q, k, v, seq_offsets, sla_k1, sla_k2, num_targets, contextual_seq_len
):
    return q.new_empty((q.shape[0], v.shape[1], v.shape[2]))


_SCRIPTED: list = []


def _scripted_rowwise_sla_mha(*args):
    """:func:`rowwise_sla_mha` compiled by ``torch.jit.script`` (on first use)."""
    if not _SCRIPTED:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            _SCRIPTED.append(torch.jit.script(rowwise_sla_mha))
    return _SCRIPTED[0](*args)


def sla_hstu_mha(
    divisor: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    sla_k1: int,
    sla_k2: int,
    num_targets: Optional[torch.Tensor] = None,  # noqa: UP045
    contextual_seq_len: int = 0,
    kernel: Union[Kernel, int, str] = Kernel.PYTORCH,  # noqa: UP007
) -> torch.Tensor:
    """Semi-local HSTU attention on jagged q, k, v (see the module doc for the rule).

    Args:
        divisor: attention weights are divided by it (the STU's ``scaling_seqlen``).
        alpha: scale applied to Q Kᵀ before SiLU.
        q: (total, heads, attn_dim) jagged queries.
        k: (total, heads, attn_dim) jagged keys.
        v: (total, heads, hidden_dim) jagged values.
        seq_offsets: (B + 1,) int64 row offsets.
        sla_k1: local causal window (a query sees itself and the ``sla_k1 - 1`` before it).
        sla_k2: global prefix length (``max(sla_k2, contextual_seq_len)`` is used).
        num_targets: optional (B,) candidates at the row ends.
        contextual_seq_len: contextual tokens at every row's start.
        kernel: PYTORCH or TRITON (degrades to PYTORCH when Triton cannot run).

    Raises:
        ValueError: bad shapes, negative or all-zero window sizes, divisor <= 0.
    """
    if q.dim() != 3 or k.shape != q.shape or v.dim() != 3 or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            "sla_hstu_mha expects q, k of shape (total, heads, attn_dim) and v of shape "
            f"(total, heads, hidden_dim); got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    if sla_k1 < 0 or sla_k2 < 0 or contextual_seq_len < 0 or (sla_k1 == 0 and sla_k2 == 0):
        raise ValueError(
            f"sla_k1/sla_k2 must be >= 0 and not both 0 (got {sla_k1}/{sla_k2}), "
            f"contextual_seq_len >= 0 (got {contextual_seq_len})"
        )
    if divisor <= 0:
        raise ValueError(f"divisor must be > 0, got {divisor}")
    if resolve_kernel(kernel, q.device) == Kernel.TRITON:
        from tzrec.kernels.triton_sla import triton_sla_hstu_mha

        return triton_sla_hstu_mha(
            divisor, alpha, q, k, v, seq_offsets, sla_k1, sla_k2, num_targets, contextual_seq_len
        )
    args = (int(divisor), float(alpha), q, k, v, seq_offsets, int(sla_k1), int(sla_k2))
    if torch.jit.is_tracing():
        return _scripted_rowwise_sla_mha(*args, num_targets, int(contextual_seq_len))
    if is_tracing():
        return sla_hstu_mha_fwd(*args, num_targets, int(contextual_seq_len))
    offsets = seq_offsets.tolist()
    targets = [0] * (len(offsets) - 1) if num_targets is None else num_targets.tolist()
    return _JaggedSLA.apply(
        q,
        k,
        v,
        offsets,
        targets,
        int(divisor),
        float(alpha),
        int(sla_k1),
        int(sla_k2),
        int(contextual_seq_len),
    )
