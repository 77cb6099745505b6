"""HSTU attention reference: the mask rule, padded and row-loop forwards (a leaf module).

Imported by :mod:`tzrec.kernels.attention` (dispatch, autograd) and
:mod:`tzrec.kernels.export_ops` (the op exported programs call); it imports neither.


The mask is TorchEasyRec's (and generative-recommenders') ``_get_valid_attn_mask``. For one
row of length ``n`` with ``t`` candidate targets at its end and ``c`` contextual tokens at
its start, give every position ``p`` an id::

    off = max(c - 1, 0)          # the c contextual tokens share id 0
    hid = n - t - off            # id of the targets (all targets share it)
    id(p) = min(max(p - off, 0), hid)

and let ``d = id(i) - id(j)`` (``|d|`` when not causal). Query ``i`` sees key ``j`` iff
``(i == j or d > 0)`` and, when ``max_attn_len = m > 0``, ``d <= m``; or, when ``c > 0``,
``id(i) == 0 and id(j) < hid`` (contextual queries see every non-target key). So:

* causal: a history query sees earlier keys; targets see the contextual tokens, the history
  and themselves, never each other; with a window, every key farther than ``m`` ids away is
  hidden, contextual keys included (only contextual queries look outside the window);
* non-causal: every key with a different id, so history queries also see the targets.

attn = SiLU(alpha * Q Kᵀ) / max_seq_len, masked, then dropout; out = attn V. The divisor
``max_seq_len`` is what TorchEasyRec calls ``scaling_seqlen`` (the STU layer passes it).
"""

from __future__ import annotations

from typing import List, Optional  # noqa: UP035 (TorchScript)

import torch

from tzrec.kernels.jagged import jagged_positions


def attention_visibility(
    i: torch.Tensor,
    j: torch.Tensor,
    n: torch.Tensor | int,
    num_targets: torch.Tensor | int,
    contextual_seq_len: int,
    max_attn_len: int,
    causal: bool,
) -> torch.Tensor:
    """Boolean visibility of key ``j`` to query ``i`` (broadcasting), module rule."""
    if not isinstance(n, torch.Tensor):
        n = torch.as_tensor(n)
    if not isinstance(num_targets, torch.Tensor):
        num_targets = torch.as_tensor(num_targets)
    return _visibility(i, j, n, num_targets, contextual_seq_len, max_attn_len, causal)


def _visibility(
    i: torch.Tensor,
    j: torch.Tensor,
    n: torch.Tensor,
    num_targets: torch.Tensor,
    contextual_seq_len: int,
    max_attn_len: int,
    causal: bool,
) -> torch.Tensor:
    """:func:`attention_visibility` on tensors (TorchScript compiles it too)."""
    c = contextual_seq_len
    off = c - 1 if c > 0 else 0
    t = torch.minimum(num_targets.clamp(min=0), n)
    hid = n - t - off
    id_i = torch.minimum((i - off).clamp(min=0), hid)
    id_j = torch.minimum((j - off).clamp(min=0), hid)
    dist = id_i - id_j
    if not causal:
        dist = dist.abs()
    visible = (i == j) | (dist > 0)
    if max_attn_len > 0:
        visible = visible & (dist <= max_attn_len)
    if c > 0:
        visible = visible | ((id_i == 0) & (id_j < hid))
    return visible & (i < n) & (j < n)


def hstu_attention_mask(
    n: int,
    num_targets: int = 0,
    contextual_seq_len: int = 0,
    max_attn_len: int = 0,
    causal: bool = True,
) -> torch.Tensor:
    """The (n, n) boolean mask of one row: ``mask[i, j]`` is True if i sees j."""
    idx = torch.arange(n)
    return attention_visibility(
        idx[:, None],
        idx[None, :],
        n,
        num_targets,
        contextual_seq_len,
        max_attn_len,
        causal,
    )


def padded_hstu_mha(
    max_seq_len: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    causal: bool = True,
    num_targets: torch.Tensor | None = None,
    max_attn_len: int = 0,
    contextual_seq_len: int = 0,
) -> torch.Tensor:
    """Padded dense reference: pad rows to max_seq_len, einsum, SiLU, mask.

    This is how TorchEasyRec's PyTorch path computes HSTU attention; it costs
    B x max_seq_len² memory and time whatever the real lengths are. No dropout.
    """
    return _padded_rows(
        max_seq_len,
        max_seq_len,
        alpha,
        q,
        k,
        v,
        seq_offsets,
        causal,
        num_targets,
        max_attn_len,
        contextual_seq_len,
    )


def rowwise_hstu_mha(
    max_seq_len: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    causal: bool,
    num_targets: Optional[torch.Tensor],  # noqa: UP045 (TorchScript)
    max_attn_len: int,
    contextual_seq_len: int,
) -> torch.Tensor:
    """Forward-only jagged attention, row by row, for TorchScript (the module's rule).

    What ``torch.jit.trace`` records for ``hstu_mha``: a call into this scripted function,
    so the exported graph keeps the per-row loop (cost Σ nᵢ², no padding) and works for
    any batch. No dropout, no autograd (serving).
    """
    lengths = seq_offsets[1:] - seq_offsets[:-1]
    longest = int(lengths.max()) if lengths.numel() > 0 else 0
    if longest > 0 and 2 * int((lengths * lengths).sum()) >= lengths.numel() * longest**2:
        # rows of similar length: pad to the longest, a few large matmuls
        return _padded_rows(
            max_seq_len,
            longest,
            alpha,
            q,
            k,
            v,
            seq_offsets,
            causal,
            num_targets,
            max_attn_len,
            contextual_seq_len,
        )
    offsets: List[int] = seq_offsets.tolist()  # noqa: UP006 (TorchScript)
    batch = len(offsets) - 1
    targets: List[int] = [0] * batch  # noqa: UP006
    if num_targets is not None:
        given: List[int] = num_targets.tolist()  # noqa: UP006
        targets = given
    out = torch.zeros(q.shape[0], v.shape[1], v.shape[2], dtype=v.dtype, device=v.device)
    for b in range(batch):
        s0 = offsets[b]
        n = offsets[b + 1] - s0
        if n == 0:
            continue
        scores = torch.einsum("nhd,mhd->hnm", q[s0 : s0 + n], k[s0 : s0 + n]) * alpha
        attn = torch.nn.functional.silu(scores) / max_seq_len
        idx = torch.arange(n, device=q.device)
        mask = _visibility(
            idx.view(-1, 1),
            idx.view(1, -1),
            torch.tensor(n, device=q.device),
            torch.tensor(targets[b], device=q.device),
            contextual_seq_len,
            max_attn_len,
            causal,
        )
        attn = attn * mask.to(attn.dtype).unsqueeze(0)
        out[s0 : s0 + n] = torch.einsum("hnm,mhd->nhd", attn, v[s0 : s0 + n])
    return out


def _padded_rows(
    max_seq_len: int,
    longest: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    causal: bool,
    num_targets: Optional[torch.Tensor],  # noqa: UP045 (TorchScript)
    max_attn_len: int,
    contextual_seq_len: int,
) -> torch.Tensor:
    """Attention padded to ``longest`` (≥ every row), divided by ``max_seq_len``.

    Shared by :func:`padded_hstu_mha` (``longest == max_seq_len``), the scripted serving path
    and the export op (both pad to the batch's longest row); TorchScript compiles it.
    """
    lengths = seq_offsets[1:] - seq_offsets[:-1]
    batch = lengths.shape[0]
    rows, pos = jagged_positions(seq_offsets, q.shape[0])
    pq = q.new_zeros((batch, longest, q.shape[1], q.shape[2]))
    pk = k.new_zeros((batch, longest, k.shape[1], k.shape[2]))
    pv = v.new_zeros((batch, longest, v.shape[1], v.shape[2]))
    pq[rows, pos] = q
    pk[rows, pos] = k
    pv[rows, pos] = v
    attn = torch.nn.functional.silu(torch.einsum("bnhd,bmhd->bhnm", pq, pk) * alpha)
    attn = attn / max_seq_len
    idx = torch.arange(longest, device=q.device)
    targets = torch.zeros_like(lengths) if num_targets is None else num_targets
    mask = _visibility(
        idx.view(1, -1, 1),
        idx.view(1, 1, -1),
        lengths.view(-1, 1, 1),
        targets.view(-1, 1, 1),
        contextual_seq_len,
        max_attn_len,
        causal,
    )
    attn = attn * mask.unsqueeze(1).to(attn.dtype)
    return torch.einsum("bhnm,bmhd->bnhd", attn, pv)[rows, pos]


_SCRIPTED: list = []


def scripted_jagged_hstu_mha(*args):
    """:func:`rowwise_hstu_mha` compiled by ``torch.jit.script`` (on first use)."""
    if not _SCRIPTED:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            _SCRIPTED.append(torch.jit.script(rowwise_hstu_mha))
    return _SCRIPTED[0](*args)
