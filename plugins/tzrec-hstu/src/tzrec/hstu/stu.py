"""STU: the HSTU transducer layer (``STULayer``) and a stack of them (``STUStack``).

One layer, for jagged input ``x`` (N, D) with row offsets (B + 1,)::

    u, v, q, k = SiLU(LN(x) W_uvqk + b)                     # tzrec.kernels.uvqk_projection
    a = hstu_mha(q, k, v)                                    # causal pointwise attention
    y = x + W_o · dropout(u * norm(a))                       # norm: layer norm or per head

as in generative-recommenders' ``STULayer``. The attention kernel is the model's ``kernel``
(PYTORCH or TRITON; TRITON degrades to PYTORCH where Triton cannot run, see tzrec.kernels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.kernels import Kernel, group_norm, hstu_mha, layer_norm, uvqk_projection
from tzrec.protos import module_pb2


class STULayer(nn.Module):
    """One HSTU layer over jagged sequences.

    Args:
        config: an ``STU`` message (embedding_dim, num_heads, hidden_dim, attention_dim,
            output_dropout_ratio, max_attn_len, attn_alpha, use_group_norm).
        kernel: PYTORCH or TRITON.
    """

    def __init__(self, config: module_pb2.STU, kernel: Kernel | int | str = Kernel.PYTORCH):
        super().__init__()
        self.embedding_dim = int(config.embedding_dim)
        self.num_heads = int(config.num_heads)
        self.hidden_dim = int(config.hidden_dim)
        self.attention_dim = int(config.attention_dim)
        self.output_dropout_ratio = float(config.output_dropout_ratio)
        self.max_attn_len = int(config.max_attn_len)
        self.alpha = (
            float(config.attn_alpha)
            if config.HasField("attn_alpha") and config.attn_alpha > 0
            else 1.0 / math.sqrt(self.attention_dim)
        )
        self.use_group_norm = bool(config.use_group_norm)
        self.kernel = kernel
        width = self.num_heads * (2 * self.hidden_dim + 2 * self.attention_dim)
        self.input_norm_weight = nn.Parameter(torch.ones(self.embedding_dim))
        self.input_norm_bias = nn.Parameter(torch.zeros(self.embedding_dim))
        self.uvqk_weight = nn.Parameter(torch.empty(self.embedding_dim, width))
        self.uvqk_bias = nn.Parameter(torch.zeros(width))
        attn_width = self.num_heads * self.hidden_dim
        self.output_norm_weight = nn.Parameter(torch.ones(attn_width))
        self.output_norm_bias = nn.Parameter(torch.zeros(attn_width))
        self.output = nn.Linear(attn_width, self.embedding_dim)
        nn.init.xavier_uniform_(self.uvqk_weight)
        nn.init.xavier_uniform_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(
        self,
        x: torch.Tensor,
        seq_offsets: torch.Tensor,
        max_seq_len: int,
        contextual_seq_len: int = 0,
        num_targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Jagged (N, D) in, jagged (N, D) out (same offsets).

        ``num_targets`` (B,): candidates at the end of every row; they see the history and
        themselves, not each other (tzrec.kernels.hstu_mha's mask).
        """
        normed = layer_norm(x, self.input_norm_weight, self.input_norm_bias, kernel=self.kernel)
        u, v, q, k = uvqk_projection(
            normed,
            self.uvqk_weight,
            self.uvqk_bias,
            self.num_heads,
            self.attention_dim,
            self.hidden_dim,
            kernel=self.kernel,
        )
        attn = hstu_mha(
            max_seq_len,
            self.alpha,
            q,
            k,
            v,
            seq_offsets,
            causal=True,
            dropout_pr=0.0,
            training=self.training,
            num_targets=num_targets,
            max_attn_len=self.max_attn_len,
            contextual_seq_len=contextual_seq_len,
            kernel=self.kernel,
        ).reshape(x.shape[0], -1)
        norm_groups = self.num_heads if self.use_group_norm else 1
        attn = group_norm(
            attn,
            self.output_norm_weight,
            self.output_norm_bias,
            num_groups=norm_groups,
            kernel=self.kernel,
        )
        y = F.dropout(u * attn, p=self.output_dropout_ratio, training=self.training)
        return x + self.output(y)


class STUStack(nn.Module):
    """``num_layers`` :class:`STULayer` s applied in turn.

    Args:
        config: the ``STU`` message every layer uses.
        num_layers: how many layers (``HSTU.attn_num_layers``).
        kernel: PYTORCH or TRITON.
    """

    def __init__(
        self,
        config: module_pb2.STU,
        num_layers: int,
        kernel: Kernel | int | str = Kernel.PYTORCH,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList([STULayer(config, kernel) for _ in range(num_layers)])

    def forward(
        self,
        x: torch.Tensor,
        seq_offsets: torch.Tensor,
        max_seq_len: int,
        contextual_seq_len: int = 0,
        num_targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Jagged (N, D) in, jagged (N, D) out (``num_targets``: see :class:`STULayer`)."""
        for layer in self.layers:
            x = layer(x, seq_offsets, max_seq_len, contextual_seq_len, num_targets)
        return x
