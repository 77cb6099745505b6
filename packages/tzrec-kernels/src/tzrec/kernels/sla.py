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

# History query rows per block of the PyTorch path (64: least CPU time at K1 = 256).
_BLOCK = 64


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


def _window_layout(h: int, sla_k1: int, k2e: int, block: int, device: torch.device):
    """Key layout of a row's history as ``nb`` query blocks (one batched matmul per row).

    Block ``j`` holds queries ``[j·block, (j+1)·block)`` and reads the global prefix
    ``[0, P)`` (``P = min(k2e, h)``) followed by its window ``[j·block - sla_k1 + 1,
    (j+1)·block)``: ``W = sla_k1 - 1 + block`` keys (0 without a window). Returns
    ``(nb, P, W, visible)`` with ``visible`` (nb, block, P + W) the SLA rule on that layout
    (window keys below ``P`` are the prefix's, so hidden there: no pair counts twice).
    """
    nb = -(-h // block)
    p = min(k2e, h)
    w = sla_k1 - 1 + block if sla_k1 > 0 else 0
    r = torch.arange(block, device=device).view(-1, 1)
    c = torch.arange(w, device=device).view(1, -1)
    # away from the row's start and end every block has the same pattern: the whole prefix
    # and the band i - sla_k1 < j <= i of its window
    band = (c >= r) & (c <= r + sla_k1 - 1)
    same = torch.cat([band.new_ones(block, p), band], dim=1)
    visible = same.unsqueeze(0).expand(nb, block, p + w).clone()
    first = min(nb, -(-(p + max(sla_k1 - 1, 0)) // block))
    edge = torch.tensor(sorted({*range(first), nb - 1}), device=device)
    i = (edge * block).view(-1, 1, 1) + r.view(1, -1, 1)
    jp = torch.arange(p, device=device).view(1, 1, -1)
    prefix = (jp <= i) & (i < h)
    jw = (edge * block - (sla_k1 - 1)).view(-1, 1, 1) + c.view(1, 1, -1)
    window = (jw >= p) & (jw <= i) & ((i - jw) < sla_k1) & (i < h)
    visible[edge] = torch.cat([prefix, window], dim=2)
    return nb, p, w, visible


def _gather_keys(t: torch.Tensor, p: int, w: int, nb: int, sla_k1: int, block: int):
    """(H, nb, P + W, D) keys of every block of one row's history ``t`` (H, h, D)."""
    heads, h, dim = t.shape
    prefix = t[:, :p].unsqueeze(1).expand(heads, nb, p, dim)
    if w == 0:
        return prefix
    pad = t.new_zeros(heads, sla_k1 - 1, dim), t, t.new_zeros(heads, nb * block - h, dim)
    windows = torch.cat(pad, dim=1).unfold(1, w, block).transpose(2, 3)  # (H, nb, W, D)
    return torch.cat([prefix, windows], dim=2)


def _scatter_keys(grad: torch.Tensor, h: int, p: int, w: int, sla_k1: int, block: int):
    """Adjoint of :func:`_gather_keys`: (H, nb, P + W, D) → (H, h, D), overlaps summed."""
    heads, nb, _, dim = grad.shape
    out = grad.new_zeros(heads, sla_k1 - 1 + nb * block if w else h, dim)
    out[:, :p] += grad[:, :, :p].sum(1)
    if w:
        index = (torch.arange(nb, device=grad.device) * block).view(-1, 1) + torch.arange(
            w, device=grad.device
        ).view(1, -1)
        out.index_add_(1, index.reshape(-1), grad[:, :, p:].reshape(heads, nb * w, dim))
        # window slots shifted by the sla_k1 - 1 zero rows in front
        out = torch.cat([out[:, :p], out[:, sla_k1 - 1 + p : sla_k1 - 1 + h]], dim=1)
    return out


def _query_blocks(t: torch.Tensor, s0: int, h: int, nb: int) -> torch.Tensor:
    """Rows ``[s0, s0 + h)`` of (H, total, D) ``t``, zero-padded, as (H, nb, block, D)."""
    pad = t.new_zeros(t.shape[0], nb * _BLOCK - h, t.shape[2])
    return torch.cat([t[:, s0 : s0 + h], pad], 1).view(t.shape[0], nb, _BLOCK, -1)


class _JaggedSLA(torch.autograd.Function):
    """SLA per row: the history as one batched matmul over blocks, the targets as another.

    Saves each row's masked scores ((H, nb, block, P + W) and (H, t, h)): memory and work
    O(n · (K1 + K2 + block) + t · h) per row.
    """

    @staticmethod
    def forward(ctx, q, k, v, offsets, targets, divisor, alpha, sla_k1, sla_k2, c):
        qt = q.transpose(0, 1).contiguous()  # (H, total, Dq)
        kt = k.transpose(0, 1).contiguous()
        vt = v.transpose(0, 1).contiguous()
        heads = qt.shape[0]
        k2e = max(sla_k2, c)
        inv_n = 1.0 / divisor
        out = torch.zeros((heads, vt.shape[1], vt.shape[2]), dtype=v.dtype, device=v.device)
        saved = []
        for row in range(len(offsets) - 1):
            s0, n = offsets[row], offsets[row + 1] - offsets[row]
            h = n - min(max(targets[row], 0), n)
            if h == 0:
                continue  # targets see no history: output 0
            hist_scores = None
            nb, p, w, visible = _window_layout(h, sla_k1, k2e, _BLOCK, q.device)
            if p + w > 0:
                qb = _query_blocks(qt, s0, h, nb)
                keys = _gather_keys(kt[:, s0 : s0 + h], p, w, nb, sla_k1, _BLOCK)
                hist_scores = torch.matmul(qb, keys.transpose(-1, -2)).mul_(alpha)
                hist_scores.masked_fill_(~visible, _MASKED_SCORE)
                values = _gather_keys(vt[:, s0 : s0 + h], p, w, nb, sla_k1, _BLOCK)
                hist_out = torch.matmul(F.silu(hist_scores), values).mul_(inv_n)
                out[:, s0 : s0 + h] = hist_out.reshape(heads, nb * _BLOCK, -1)[:, :h]
            tgt_scores = None
            if n > h:  # targets see the whole history
                tgt_scores = torch.baddbmm(
                    qt.new_empty(()),
                    qt[:, s0 + h : s0 + n],
                    kt[:, s0 : s0 + h].transpose(1, 2),
                    beta=0,
                    alpha=alpha,
                )
                out[:, s0 + h : s0 + n] = torch.baddbmm(
                    qt.new_empty(()), F.silu(tgt_scores), vt[:, s0 : s0 + h], beta=0, alpha=inv_n
                )
            saved.append((s0, n, h, nb, p, w, hist_scores, tgt_scores))
        ctx.saved_rows = saved
        ctx.save_for_backward(qt, kt, vt)
        ctx.inv_n = inv_n
        ctx.alpha = alpha
        ctx.sla_k1 = sla_k1
        return out.transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        qt, kt, vt = ctx.saved_tensors
        dot = grad_out.transpose(0, 1).contiguous()
        dq, dk, dv = torch.zeros_like(qt), torch.zeros_like(kt), torch.zeros_like(vt)
        heads = qt.shape[0]
        inv_n, scale, k1 = ctx.inv_n, ctx.alpha * ctx.inv_n, ctx.sla_k1
        for s0, n, h, nb, p, w, hist_scores, tgt_scores in ctx.saved_rows:
            if hist_scores is not None:
                qb, dob = _query_blocks(qt, s0, h, nb), _query_blocks(dot, s0, h, nb)
                keys = _gather_keys(kt[:, s0 : s0 + h], p, w, nb, k1, _BLOCK)
                values = _gather_keys(vt[:, s0 : s0 + h], p, w, nb, k1, _BLOCK)
                dvals = torch.matmul(F.silu(hist_scores).transpose(-1, -2), dob)
                dscores = torch.ops.aten.silu_backward(
                    torch.matmul(dob, values.transpose(-1, -2)), hist_scores
                )
                dqb = torch.matmul(dscores, keys).mul_(scale)
                dq[:, s0 : s0 + h] += dqb.reshape(heads, nb * _BLOCK, -1)[:, :h]
                dkeys = torch.matmul(dscores.transpose(-1, -2), qb)
                dk[:, s0 : s0 + h] += _scatter_keys(dkeys, h, p, w, k1, _BLOCK).mul_(scale)
                dv[:, s0 : s0 + h] += _scatter_keys(dvals, h, p, w, k1, _BLOCK).mul_(inv_n)
            if tgt_scores is not None:
                qb, dob = qt[:, s0 + h : s0 + n], dot[:, s0 + h : s0 + n]
                kb, vb = kt[:, s0 : s0 + h], vt[:, s0 : s0 + h]
                dv[:, s0 : s0 + h].baddbmm_(F.silu(tgt_scores).transpose(1, 2), dob, alpha=inv_n)
                dscores = torch.ops.aten.silu_backward(
                    torch.bmm(dob, vb.transpose(1, 2)), tgt_scores
                )
                dq[:, s0 + h : s0 + n] += torch.bmm(dscores, kb).mul_(scale)
                dk[:, s0 : s0 + h].baddbmm_(dscores.transpose(1, 2), qb, alpha=scale)
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
