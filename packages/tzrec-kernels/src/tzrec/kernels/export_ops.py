"""Custom ops that exported programs call: jagged HSTU attention as one opaque op.

``torch.export`` cannot trace the jagged attention's per-row loop, and the padded form costs
B × max_seq_len². ``tzrec::hstu_mha_fwd`` wraps the forward of the PyTorch jagged path
(cost Σ nᵢ²) as a ``torch.library`` custom op with a fake (shape-only) kernel, so an
exported graph records one call that runs it. Loading such a program needs this module
imported (``import tzrec.kernels`` does), as with any custom op.

No ``from __future__ import annotations`` here: ``torch.library`` reads the annotations to
build the op schema.
"""

from typing import Optional

import torch

from tzrec.kernels.attention_ref import rowwise_hstu_mha


@torch.library.custom_op("tzrec::hstu_mha_fwd", mutates_args=())
def hstu_mha_fwd(
    max_seq_len: int,
    alpha: float,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    causal: bool,
    num_targets: Optional[torch.Tensor],  # noqa: UP045 (op schema)
    max_attn_len: int,
    contextual_seq_len: int,
) -> torch.Tensor:
    """Forward of HSTU attention (serving: no dropout, no autograd), padded or jagged.

    Rows of similar length (padding would add less than half the work) run padded to the
    batch's longest row, in a few large matmuls (still divided by ``max_seq_len``); uneven
    rows run the jagged row loop (:func:`tzrec.kernels.attention_ref.rowwise_hstu_mha`).
    """
    with torch.no_grad():
        return rowwise_hstu_mha(
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


@hstu_mha_fwd.register_fake
def _hstu_mha_fwd_fake(
    max_seq_len, alpha, q, k, v, seq_offsets, causal, num_targets, max_attn_len, contextual_seq_len
):
    return q.new_empty((q.shape[0], v.shape[1], v.shape[2]))
