"""tzrec.kernels: jagged ops and HSTU attention, PyTorch reference and Triton."""

from tzrec.kernels import export_ops  # noqa: F401  (registers tzrec:: ops for exported programs)
from tzrec.kernels.attention import (
    attention_visibility,
    hstu_attention_mask,
    hstu_mha,
    padded_hstu_mha,
)
from tzrec.kernels.jagged import (
    concat_2d_jagged,
    dense_to_jagged,
    jagged_last,
    jagged_positions,
    jagged_reverse_index,
    jagged_to_padded_dense,
    split_2d_jagged,
)
from tzrec.kernels.kernel import Kernel, is_tracing, resolve_kernel, to_kernel
from tzrec.kernels.norm import group_norm, layer_norm
from tzrec.kernels.position import (
    add_timestamp_positional_embeddings,
    timestamp_position_buckets,
)
from tzrec.kernels.projection import uvqk_projection
from tzrec.kernels.sla import padded_sla_mha, sla_attention_mask, sla_hstu_mha

__all__ = [
    "Kernel",
    "add_timestamp_positional_embeddings",
    "attention_visibility",
    "concat_2d_jagged",
    "dense_to_jagged",
    "group_norm",
    "hstu_attention_mask",
    "hstu_mha",
    "is_tracing",
    "jagged_last",
    "jagged_positions",
    "jagged_reverse_index",
    "jagged_to_padded_dense",
    "layer_norm",
    "padded_hstu_mha",
    "padded_sla_mha",
    "resolve_kernel",
    "sla_attention_mask",
    "sla_hstu_mha",
    "split_2d_jagged",
    "timestamp_position_buckets",
    "to_kernel",
    "uvqk_projection",
]
