"""Execution plan of PyTorch HSTU attention: which rows run padded, which run jagged.

Short rows lose to per-op overhead when run one by one, long rows lose to padding. A plan
sorts the rows by length and splits them into buckets by a cost model (:func:`plan_cost`):

* a padded bucket of ``r`` rows costs ``PADDED_OVERHEAD + r * L² * w`` (``L`` its longest
  row, every row padded to it: small batches pad to their own longest row, not to
  ``max_seq_len``);
* a jagged row of length ``n`` costs ``JAGGED_OVERHEAD`` per query block plus the keys it
  really reads (causal rows skip the keys after each block), times ``w``;

with ``w = heads * (0.06 * (attn_dim + hidden_dim) + 4)`` (ns of matmul and elementwise work
per score, fwd+bwd, at ~100 GFLOP/s sgemm). A dynamic program over the distinct lengths picks
the cheapest split. The plan also holds every gather index and mask (the visibility of
:mod:`tzrec.kernels.attention_ref`, scaled by ``1 / max_seq_len``), built once per batch and
cached by the batch's offsets, so the STU layers of one forward (and its backward) share it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from tzrec.kernels.attention_ref import attention_visibility

# Fill for masked scores in the jagged path: silu(x) and silu'(x) are exactly 0 there.
_MASKED_SCORE = -1.0e4
# Query rows per block in the jagged path.
BLOCK = 128
# Fixed cost (ns) of one padded bucket (gathers, 2 matmuls, SiLU·mask, scatter; fwd+bwd).
PADDED_OVERHEAD = 150_000.0
# Fixed cost (ns) of one jagged query block (2 matmuls, mask, SiLU; fwd+bwd).
JAGGED_OVERHEAD = 80_000.0
_CACHE_SIZE = 8


def score_weight(heads: int, attn_dim: int, hidden_dim: int) -> float:
    """Cost (ns) of one attention score, fwd+bwd: matmul flops plus elementwise passes."""
    return heads * (0.06 * (attn_dim + hidden_dim) + 4.0)


def row_blocks(n: int, c: int, m: int, t: int, causal: bool) -> list[tuple[int, int, int, bool]]:
    """Query blocks of a jagged row: (start, end, key_end, needs_general_mask)."""
    plain = causal and t == 0 and c == 0 and m == 0
    out = []
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        key_end = b if causal and a >= c else n
        out.append((a, b, key_end, not plain))
    return out


def jagged_row_cost(n: int, c: int, m: int, causal: bool, w: float) -> float:
    """Cost model of one row run by the jagged path (see the module doc)."""
    return sum(
        JAGGED_OVERHEAD + (b - a) * key_end * w
        for a, b, key_end, _ in row_blocks(n, c, m, 0, causal)
    )


def plan_cost(lengths: list[int], c: int, m: int, causal: bool, w: float) -> tuple[float, list]:
    """Cheapest split of rows into padded buckets and jagged runs: (cost, segments).

    Each segment is ``("padded" | "jagged", row_ids)``; rows are sorted by length and a
    segment is a run of consecutive distinct lengths.
    """
    order = sorted((n, r) for r, n in enumerate(lengths) if n > 0)
    if not order:
        return 0.0, []
    groups: list[list[int]] = []  # row ids per distinct length
    glen: list[int] = []
    for n, r in order:
        if glen and glen[-1] == n:
            groups[-1].append(r)
        else:
            glen.append(n)
            groups.append([r])
    u = len(groups)
    cnt = [0] * (u + 1)
    jag = [0.0] * (u + 1)
    for g in range(u):
        cnt[g + 1] = cnt[g] + len(groups[g])
        jag[g + 1] = jag[g] + len(groups[g]) * jagged_row_cost(glen[g], c, m, causal, w)
    best = [0.0] + [float("inf")] * u
    choice = [(0, "padded")] * (u + 1)
    for j in range(1, u + 1):
        sq = glen[j - 1] * glen[j - 1] * w
        for i in range(j):
            padded = PADDED_OVERHEAD + (cnt[j] - cnt[i]) * sq
            jagged = jag[j] - jag[i]
            cost, kind = (padded, "padded") if padded <= jagged else (jagged, "jagged")
            if best[i] + cost < best[j]:
                best[j] = best[i] + cost
                choice[j] = (i, kind)
    segments = []
    j = u
    while j > 0:
        i, kind = choice[j]
        segments.append((kind, [r for g in range(i, j) for r in groups[g]]))
        j = i
    segments.reverse()
    return best[u], segments


@dataclass
class PaddedBucket:
    """Rows run padded to ``longest``: gather index (rows·L,), kept slots, scaled mask."""

    rows: list[int]
    longest: int
    gather: torch.Tensor
    keep: torch.Tensor
    mask: torch.Tensor  # (rows, 1, L, L), visibility / max_seq_len (float64)
    cast: dict = field(default_factory=dict)  # the mask per compute dtype

    def scaled_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The scaled mask in ``dtype`` (converted once per dtype)."""
        if dtype not in self.cast:
            self.cast[dtype] = self.mask.to(dtype)
        return self.cast[dtype]


@dataclass
class AttentionPlan:
    """Buckets, jagged rows, per-row hidden masks and the output permutation of one batch."""

    offsets: list[int]
    targets: list[int]
    buckets: list[PaddedBucket]
    jagged_rows: list[int]
    hidden: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    inverse: torch.Tensor | None = None  # output row of every jagged position


_PLANS: OrderedDict = OrderedDict()


def build_plan(
    offsets: list[int],
    targets: list[int],
    heads: int,
    attn_dim: int,
    hidden_dim: int,
    max_seq_len: int,
    causal: bool,
    max_attn_len: int,
    contextual_seq_len: int,
    device: torch.device,
    force: str | None = None,
) -> AttentionPlan:
    """The (cached) plan of one batch; ``force`` = "padded"/"jagged" overrides the model."""
    key = (
        tuple(offsets),
        tuple(targets),
        heads,
        attn_dim,
        hidden_dim,
        max_seq_len,
        causal,
        max_attn_len,
        contextual_seq_len,
        str(device),
        force,
    )
    plan = _PLANS.get(key)
    if plan is not None:
        _PLANS.move_to_end(key)
        return plan
    lengths = [offsets[r + 1] - offsets[r] for r in range(len(offsets) - 1)]
    c, m = contextual_seq_len, max_attn_len
    if force is None:
        _, segments = plan_cost(lengths, c, m, causal, score_weight(heads, attn_dim, hidden_dim))
    else:
        rows = sorted((r for r, n in enumerate(lengths) if n > 0), key=lambda r: lengths[r])
        segments = [(force, rows)] if rows else []
    buckets, jagged_rows = [], []
    for kind, rows in segments:
        if kind == "jagged":
            jagged_rows.extend(rows)
            continue
        buckets.append(
            _padded_bucket(rows, offsets, targets, lengths, max_seq_len, causal, m, c, device)
        )
    plan = AttentionPlan(offsets, targets, buckets, sorted(jagged_rows))
    for r in plan.jagged_rows:
        n, t = lengths[r], min(max(targets[r], 0), lengths[r])
        if not (causal and t == 0 and c == 0 and m == 0) and (n, t) not in plan.hidden:
            idx = torch.arange(n, device=device)
            plan.hidden[(n, t)] = ~attention_visibility(
                idx[:, None], idx[None, :], n, t, c, m, causal
            )
    plan.inverse = _inverse(plan, offsets, device)
    _PLANS[key] = plan
    if len(_PLANS) > _CACHE_SIZE:
        _PLANS.popitem(last=False)
    return plan


def _padded_bucket(rows, offsets, targets, lengths, max_seq_len, causal, m, c, device):
    """Gather index, kept slots and scaled visibility of one padded bucket."""
    longest = max(lengths[r] for r in rows)
    starts = torch.tensor([offsets[r] for r in rows], device=device)
    ns = torch.tensor([lengths[r] for r in rows], device=device)
    ts = torch.tensor([targets[r] for r in rows], device=device)
    pos = torch.arange(longest, device=device)
    valid = pos[None, :] < ns[:, None]
    # padded slots read the row's first item: masked keys, discarded queries, zero grads
    gather = (starts[:, None] + torch.where(valid, pos[None, :], 0)).reshape(-1)
    mask = attention_visibility(
        pos.view(1, -1, 1), pos.view(1, 1, -1), ns.view(-1, 1, 1), ts.view(-1, 1, 1), c, m, causal
    )
    scaled = mask.unsqueeze(1).to(torch.float64) * (1.0 / max_seq_len)
    return PaddedBucket(rows, longest, gather, valid.reshape(-1), scaled)


def _inverse(plan: AttentionPlan, offsets: list[int], device) -> torch.Tensor:
    """Row of cat(bucket outputs, jagged output) holding every jagged position's output."""
    total = offsets[-1]
    inv = torch.arange(total, device=device)  # jagged rows: their own position, shifted below
    base = 0
    parts = []
    for bk in plan.buckets:
        kept = bk.gather[bk.keep]
        slots = torch.nonzero(bk.keep).view(-1) + base
        parts.append((kept, slots))
        base += bk.keep.numel()
    if plan.jagged_rows:
        inv = inv + base
    for kept, slots in parts:
        inv[kept] = slots
    return inv


def run_plan(
    plan: AttentionPlan,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    causal: bool,
    max_attn_len: int,
    contextual_seq_len: int,
    dropout_pr: float,
) -> torch.Tensor:
    """Attention of (total, heads, dim) q, k, v by ``plan`` (autograd through every part)."""
    heads, dv = v.shape[1], v.shape[2]
    parts = []
    for bk in plan.buckets:
        r, n = len(bk.rows), bk.longest
        qb = q.index_select(0, bk.gather).view(r, n, heads, -1).transpose(1, 2)
        kb = k.index_select(0, bk.gather).view(r, n, heads, -1).transpose(1, 2)
        vb = v.index_select(0, bk.gather).view(r, n, heads, dv).transpose(1, 2)
        scores = torch.matmul(qb * alpha, kb.transpose(-1, -2))
        attn = F.silu(scores) * bk.scaled_mask(scores.dtype)
        if dropout_pr > 0.0:
            attn = F.dropout(attn, dropout_pr)
        parts.append(torch.matmul(attn, vb).transpose(1, 2).reshape(r * n, heads, dv))
    if plan.jagged_rows:
        parts.append(
            JaggedHSTUAttention.apply(
                q,
                k,
                v,
                plan,
                max_seq_len,
                alpha,
                causal,
                max_attn_len,
                contextual_seq_len,
                dropout_pr,
            )
        )
    if not parts:
        return v * 0.0 + (q.sum() + k.sum()) * 0.0  # no non-empty row: zeros, with a graph
    if not plan.buckets:
        return parts[0]  # all rows jagged: already in place
    flat = parts[0] if len(parts) == 1 else torch.cat(parts)
    return flat.index_select(0, plan.inverse)


class JaggedHSTUAttention(torch.autograd.Function):
    """The plan's jagged rows, row by row in query blocks, batched over heads.

    Forward keeps only the masked scores alpha·QKᵀ of each (row, block); backward rebuilds
    SiLU and SiLU' from them. Rows outside the plan's jagged set give zeros.
    """

    @staticmethod
    def forward(ctx, q, k, v, plan, max_seq_len, alpha, causal, max_attn_len, ctx_len, pr):
        """Masked SiLU attention of the plan's jagged rows; saves the block scores."""
        qt = q.transpose(0, 1).contiguous()  # (H, total, Dq)
        kt = k.transpose(0, 1).contiguous()
        vt = v.transpose(0, 1).contiguous()
        heads, total, _ = qt.shape
        out = torch.zeros((heads, total, vt.shape[-1]), dtype=q.dtype, device=q.device)
        inv_n = 1.0 / max_seq_len
        saved: list[tuple] = []
        offsets, targets = plan.offsets, plan.targets
        for row in plan.jagged_rows:
            s0 = offsets[row]
            n = offsets[row + 1] - s0
            t = min(max(targets[row], 0), n)
            hidden = plan.hidden.get((n, t))
            for a, b, key_end, general in row_blocks(n, ctx_len, max_attn_len, t, causal):
                qb = qt[:, s0 + a : s0 + b]
                kb = kt[:, s0 : s0 + key_end]
                vb = vt[:, s0 : s0 + key_end]
                scores = torch.baddbmm(
                    qb.new_empty(()), qb, kb.transpose(1, 2), beta=0, alpha=alpha
                )
                if general:
                    scores.masked_fill_(hidden[a:b, :key_end], _MASKED_SCORE)
                elif key_end > a:
                    upper = torch.ones(b - a, key_end - a, dtype=torch.bool, device=q.device)
                    scores[:, :, a:key_end].masked_fill_(upper.triu_(1), _MASKED_SCORE)
                attn = F.silu(scores)
                keep = None
                if pr > 0.0:
                    keep = torch.rand_like(attn) >= pr
                    attn = attn * keep * (1.0 / (1.0 - pr))
                out[:, s0 + a : s0 + b] = torch.baddbmm(
                    attn.new_empty(()), attn, vb, beta=0, alpha=inv_n
                )
                saved.append((s0, a, b, key_end, scores, keep))
        ctx.saved_blocks = saved
        ctx.save_for_backward(qt, kt, vt)
        ctx.inv_n, ctx.alpha, ctx.pr = inv_n, alpha, pr
        return out.transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        """Gradients of q, k, v from the saved block scores."""
        qt, kt, vt = ctx.saved_tensors
        dot = grad_out.transpose(0, 1).contiguous()
        dq, dk, dv = torch.zeros_like(qt), torch.zeros_like(kt), torch.zeros_like(vt)
        inv_n, alpha, pr = ctx.inv_n, ctx.alpha, ctx.pr
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
        return (dq.transpose(0, 1), dk.transpose(0, 1), dv.transpose(0, 1)) + (None,) * 7
