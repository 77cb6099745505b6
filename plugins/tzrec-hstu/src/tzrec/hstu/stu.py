"""STU: the HSTU transducer layer (``STULayer``) and a stack of them (``STUStack``).

One layer, for jagged input ``x`` (N, D) with row offsets (B + 1,), as TorchEasyRec's and
generative-recommenders' ``STULayer`` compute it::

    u, v, q, k = split(LN(x) W_uvqk + b_uvqk);  u = SiLU(u)   # tzrec.kernels.uvqk_projection
    a = hstu_mha(q, k, v) / scaling_seqlen                    # causal, target-aware mask
    y = dropout(concat[u, a, u * norm(a)])                    # (N, 3 * H * hidden)
    out = x + y @ W_o                                         # W_o (3 * H * hidden, D), no bias

With ``sla_k1``/``sla_k2`` > 0 the attention is semi-local (ULTRA-HSTU,
:func:`tzrec.kernels.sla_hstu_mha`): a history token sees its last ``sla_k1`` tokens and the
first ``max(sla_k2, contextual_seq_len)``; a candidate sees the whole history. A stack may
truncate mid-way (:func:`truncation_index`): from layer ``split`` on only the contextual
tokens, the last ``tail`` history tokens and the candidates of every row go on.

``LN`` and ``norm`` use eps 1e-6; ``norm`` is a layer norm over all heads, or with
``use_group_norm`` a per-head norm whose weight and bias are one value per head. The
attention kernel is the model's ``kernel`` (PYTORCH or TRITON; TRITON degrades to PYTORCH
where Triton cannot run, see tzrec.kernels).

Parameters are named as upstream's without the leading underscore, except
``_uvqk_beta`` → ``uvqk_bias``; :data:`UPSTREAM_RENAMES` and :func:`load_upstream_hstu`
load a TorchEasyRec HSTU state dict (STU layers and positional encoder) into ours.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tzrec.core.errors import ConfigError
from tzrec.kernels import (
    Kernel,
    group_norm,
    hstu_mha,
    jagged_positions,
    layer_norm,
    sla_hstu_mha,
    uvqk_projection,
)
from tzrec.protos import module_pb2

#: layer-norm epsilon of both norms (upstream's ``norm_eps``)
NORM_EPS = 1e-6


def _project(
    x: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    shape: tuple[int, int, int],
    kernel: Kernel | int | str,
    recompute_normed_x: bool,
    recompute_uvqk: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """LN + uvqk projection; the recompute flags drop LN(x) and/or uvqk from saved state."""
    heads, attn_dim, hidden_dim = shape

    def norm(t: torch.Tensor) -> torch.Tensor:
        return layer_norm(t, norm_weight, norm_bias, eps=NORM_EPS, kernel=kernel)

    def proj(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return uvqk_projection(t, weight, bias, heads, attn_dim, hidden_dim, kernel=kernel)

    if not torch.is_grad_enabled():
        recompute_normed_x = recompute_uvqk = False
    if recompute_normed_x and recompute_uvqk:
        return checkpoint(lambda t: proj(norm(t)), x, use_reentrant=False)
    if recompute_normed_x:
        return proj(checkpoint(norm, x, use_reentrant=False))
    if recompute_uvqk:
        return checkpoint(proj, norm(x), use_reentrant=False)
    return proj(norm(x))


def _norm_mul_concat(
    attn: torch.Tensor,
    u: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    num_heads: int,
    use_group_norm: bool,
    dropout: float,
    training: bool,
    kernel: Kernel | int | str,
) -> torch.Tensor:
    """dropout(concat[u, a, u * norm(a)]): the input of the output projection."""
    if use_group_norm:
        hidden = attn.shape[1] // num_heads
        normed = group_norm(
            attn,
            norm_weight.repeat_interleave(hidden),
            norm_bias.repeat_interleave(hidden),
            num_groups=num_heads,
            eps=NORM_EPS,
            kernel=kernel,
        )
    else:
        normed = layer_norm(attn, norm_weight, norm_bias, eps=NORM_EPS, kernel=kernel)
    y = torch.cat([u, attn, u * normed], dim=1)
    return F.dropout(y, p=dropout, training=training)


class STULayer(nn.Module):
    """One HSTU layer over jagged sequences (see the module doc for the formula).

    Args:
        config: an ``STU`` message. ``contextual_seq_len`` >= 0 overrides the contextual
            token count the model passes; ``scaling_seqlen`` >= 0 overrides the divisor
            of the attention weights; ``recompute_*`` trade memory for a recomputation in
            backward (same numbers); ``sort_by_length`` is a scheduling hint of upstream's
            GPU kernels (our kernels schedule per row: no effect on results);
            ``sla_k1``/``sla_k2`` > 0 switch to semi-local attention (module doc).
        kernel: PYTORCH or TRITON.
        scaling_seqlen: the divisor when ``config.scaling_seqlen`` < 0 (the model's
            ``max_seq_len``, as upstream passes it); <= 0: the ``max_seq_len`` of the call.

    Raises:
        ConfigError: sla_k1/sla_k2 with max_attn_len, scaling_seqlen 0, non-positive dims.
    """

    def __init__(
        self,
        config: module_pb2.STU,
        kernel: Kernel | int | str = Kernel.PYTORCH,
        scaling_seqlen: int = -1,
    ):
        super().__init__()
        check_stu_config(config)
        self.embedding_dim = int(config.embedding_dim)
        self.num_heads = int(config.num_heads)
        self.hidden_dim = int(config.hidden_dim)
        self.attention_dim = int(config.attention_dim)
        self.output_dropout_ratio = float(config.output_dropout_ratio)
        self.max_attn_len = int(config.max_attn_len)
        # upstream: ``attn_alpha or 1 / sqrt(attention_dim)`` (0 means the default)
        self.alpha = (
            float(config.attn_alpha) if config.attn_alpha else 1.0 / math.sqrt(self.attention_dim)
        )
        self.use_group_norm = bool(config.use_group_norm)
        self.recompute_normed_x = bool(config.recompute_normed_x)
        self.recompute_uvqk = bool(config.recompute_uvqk)
        self.recompute_y = bool(config.recompute_y)
        self.contextual_seq_len = int(config.contextual_seq_len)
        self.sla_k1 = int(config.sla_k1)
        self.sla_k2 = int(config.sla_k2)
        self.scaling_seqlen = (
            int(config.scaling_seqlen) if config.scaling_seqlen >= 0 else int(scaling_seqlen)
        )
        self.kernel = kernel
        heads, hidden = self.num_heads, self.hidden_dim
        width = heads * (2 * hidden + 2 * self.attention_dim)
        self.input_norm_weight = nn.Parameter(torch.ones(self.embedding_dim))
        self.input_norm_bias = nn.Parameter(torch.zeros(self.embedding_dim))
        self.uvqk_weight = nn.Parameter(torch.empty(self.embedding_dim, width))
        self.uvqk_bias = nn.Parameter(torch.zeros(width))
        norm_width = heads if self.use_group_norm else heads * hidden
        self.output_norm_weight = nn.Parameter(torch.ones(norm_width))
        self.output_norm_bias = nn.Parameter(torch.zeros(norm_width))
        self.output_weight = nn.Parameter(torch.empty(3 * heads * hidden, self.embedding_dim))
        nn.init.xavier_uniform_(self.uvqk_weight)
        nn.init.xavier_uniform_(self.output_weight)

    def divisor(self, max_seq_len: int) -> int:
        """What the attention weights are divided by (``scaling_seqlen``)."""
        return self.scaling_seqlen if self.scaling_seqlen > 0 else int(max_seq_len)

    def forward(
        self,
        x: torch.Tensor,
        seq_offsets: torch.Tensor,
        max_seq_len: int,
        contextual_seq_len: int = 0,
        num_targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Jagged (N, D) in, jagged (N, D) out (same offsets).

        ``contextual_seq_len``: contextual tokens at the start of every row (the config's
        ``contextual_seq_len`` wins when >= 0). ``num_targets`` (B,): candidates at the end
        of every row; they see the history and themselves, not each other.
        """
        c = self.contextual_seq_len if self.contextual_seq_len >= 0 else contextual_seq_len
        u, v, q, k = _project(
            x,
            self.input_norm_weight,
            self.input_norm_bias,
            self.uvqk_weight,
            self.uvqk_bias,
            (self.num_heads, self.attention_dim, self.hidden_dim),
            self.kernel,
            self.training and self.recompute_normed_x,
            self.training and self.recompute_uvqk,
        )
        if self.sla_k1 > 0 or self.sla_k2 > 0:
            attn = sla_hstu_mha(
                self.divisor(max_seq_len),
                self.alpha,
                q,
                k,
                v,
                seq_offsets,
                self.sla_k1,
                self.sla_k2,
                num_targets=num_targets,
                contextual_seq_len=int(c),
                kernel=self.kernel,
            )
        else:
            attn = hstu_mha(
                self.divisor(max_seq_len),
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
                contextual_seq_len=int(c),
                kernel=self.kernel,
            )
        attn = attn.reshape(x.shape[0], -1)
        args = (
            attn,
            u,
            self.output_norm_weight,
            self.output_norm_bias,
            self.num_heads,
            self.use_group_norm,
            self.output_dropout_ratio,
            self.training,
            self.kernel,
        )
        if self.training and self.recompute_y and torch.is_grad_enabled():
            y = checkpoint(_norm_mul_concat, *args, use_reentrant=False)
        else:
            y = _norm_mul_concat(*args)
        return torch.addmm(x, y, self.output_weight)


def check_stu_config(config: module_pb2.STU, where: str = "hstu.stu") -> None:
    """Refuse, in one line, STU settings tzrec does not implement or that cannot work."""
    for name in ("embedding_dim", "num_heads", "hidden_dim", "attention_dim"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{where}.{name} must be > 0, got {getattr(config, name)}")
    if (config.sla_k1 > 0 or config.sla_k2 > 0) and config.max_attn_len > 0:
        raise ConfigError(
            f"{where}.max_attn_len ({config.max_attn_len}) cannot be combined with "
            f"sla_k1/sla_k2 ({config.sla_k1}/{config.sla_k2}): semi-local attention has its "
            "own window (sla_k1); set one of them"
        )
    if config.HasField("scaling_seqlen") and config.scaling_seqlen == 0:
        raise ConfigError(
            f"{where}.scaling_seqlen is 0 (a division by zero); set it > 0, or -1 for the "
            "model's max_seq_len"
        )
    if not 0.0 <= config.output_dropout_ratio < 1.0:
        raise ConfigError(
            f"{where}.output_dropout_ratio must be in [0, 1), got {config.output_dropout_ratio}"
        )


def truncation_index(
    seq_offsets: torch.Tensor,
    num_targets: torch.Tensor | None,
    contextual_seq_len: int,
    tail_len: int,
    total: int | torch.SymInt,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tokens survive mid-stack truncation, and the rows' new offsets.

    A row is ``[contextual (c) | history (u) | targets (t)]``; it keeps its ``c`` contextual
    tokens, the last ``min(u, tail_len)`` history tokens and all ``t`` targets (upstream's
    ``compute_stu_truncation_plan``). Returns the kept positions in the jagged dimension
    (ascending, (M,)) and the (B + 1,) offsets of the kept rows; ``total`` is the number of
    tokens (``seq_offsets[-1]``, the jagged tensor's first size).
    """
    lengths = seq_offsets[1:] - seq_offsets[:-1]
    targets = torch.zeros_like(lengths) if num_targets is None else num_targets.to(lengths.dtype)
    history = (lengths - contextual_seq_len - targets).clamp(min=0)
    dropped = history - history.clamp(max=tail_len)
    rows, pos = jagged_positions(seq_offsets, total)
    keep = (pos < contextual_seq_len) | (pos >= contextual_seq_len + dropped[rows])
    new_lengths = lengths - dropped
    offsets = torch.cat([new_lengths.new_zeros(1), torch.cumsum(new_lengths, 0)])
    return keep.nonzero().reshape(-1), offsets


class STUStack(nn.Module):
    """``num_layers`` :class:`STULayer` s applied in turn, with optional mid-stack truncation.

    Args:
        config: the ``STU`` message every layer uses.
        num_layers: how many layers (``HSTU.attn_num_layers``).
        kernel: PYTORCH or TRITON.
        scaling_seqlen: see :class:`STULayer`.
        truncate_split_layer: before layer ``truncate_split_layer`` (in ``(0, num_layers)``)
            keep only what :func:`truncation_index` keeps; 0: no truncation.
        truncate_tail_len: history tokens kept per row by the truncation (> 0 with it).
        where: config path for messages.

    Raises:
        ConfigError: only one of the truncation fields set, or the split layer out of range.
    """

    def __init__(
        self,
        config: module_pb2.STU,
        num_layers: int,
        kernel: Kernel | int | str = Kernel.PYTORCH,
        scaling_seqlen: int = -1,
        truncate_split_layer: int = 0,
        truncate_tail_len: int = 0,
        where: str = "hstu",
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [STULayer(config, kernel, scaling_seqlen) for _ in range(num_layers)]
        )
        if (truncate_split_layer > 0) != (truncate_tail_len > 0):
            raise ConfigError(
                f"{where}.attn_truncation_split_layer ({truncate_split_layer}) and "
                f"attn_truncation_tail_len ({truncate_tail_len}) must both be > 0 to truncate, "
                "or both 0"
            )
        if truncate_split_layer > 0 and not 0 < truncate_split_layer < num_layers:
            raise ConfigError(
                f"{where}.attn_truncation_split_layer must be in (0, attn_num_layers = "
                f"{num_layers}), got {truncate_split_layer}"
            )
        self.truncate_split_layer = int(truncate_split_layer)
        self.truncate_tail_len = int(truncate_tail_len)

    def forward(
        self,
        x: torch.Tensor,
        seq_offsets: torch.Tensor,
        max_seq_len: int,
        contextual_seq_len: int = 0,
        num_targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Jagged (N, D) in, jagged (N, D) out (``num_targets``: see :class:`STULayer`).

        Raises:
            RuntimeError: the stack truncates (rows change: use :meth:`encode`).
        """
        if self.truncate_split_layer > 0:
            raise RuntimeError("a truncating STUStack changes the rows; call encode()")
        return self.encode(x, seq_offsets, max_seq_len, contextual_seq_len, num_targets)[0]

    def encode(
        self,
        x: torch.Tensor,
        seq_offsets: torch.Tensor,
        max_seq_len: int,
        contextual_seq_len: int = 0,
        num_targets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run every layer; returns (x, its row offsets, the kept token positions or None).

        The kept positions (:func:`truncation_index`) index the input tokens; parallel
        jagged tensors (timestamps) follow with ``index_select``. ``max_seq_len`` stays the
        attention divisor across the truncation (the model's, as upstream pins it).
        """
        kept = None
        for i, layer in enumerate(self.layers):
            if i == self.truncate_split_layer and self.truncate_split_layer > 0:
                c = layer.contextual_seq_len
                c = c if c >= 0 else contextual_seq_len
                kept, seq_offsets = truncation_index(
                    seq_offsets, num_targets, int(c), self.truncate_tail_len, x.shape[0]
                )
                x = x.index_select(0, kept)
            x = layer(x, seq_offsets, max_seq_len, contextual_seq_len, num_targets)
        return x, seq_offsets, kept


#: upstream parameter name → ours, inside one STU layer / the positional encoder
UPSTREAM_RENAMES = {
    "_input_norm_weight": "input_norm_weight",
    "_input_norm_bias": "input_norm_bias",
    "_uvqk_weight": "uvqk_weight",
    "_uvqk_beta": "uvqk_bias",
    "_output_norm_weight": "output_norm_weight",
    "_output_norm_bias": "output_norm_bias",
    "_output_weight": "output_weight",
    "_position_embeddings_weight": "position_embeddings",
    "_timestamp_embeddings_weight": "timestamp_embeddings",
}
_UPSTREAM_STU = re.compile(r"(?:^|\.)_stu_module\._stu_layers\.(\d+)\.(_\w+)$")
_UPSTREAM_POS = re.compile(r"(?:^|\.)_positional_encoder\.(_\w+)$")


def upstream_key_map(keys: list[str] | Mapping[str, object]) -> dict[str, str]:
    """Upstream key → our key, relative to the module holding ``stu`` / ``positional_encoder``.

    ``<model>._stu_module._stu_layers.<i>._uvqk_beta`` becomes ``stu.layers.<i>.uvqk_bias``,
    ``<model>._positional_encoder._position_embeddings_weight`` becomes
    ``positional_encoder.position_embeddings``; other keys (embedding tables,
    preprocessors, towers) are not mapped.
    """
    out: dict[str, str] = {}
    for key in keys:
        m = _UPSTREAM_STU.search(key)
        if m and m.group(2) in UPSTREAM_RENAMES:
            out[key] = f"stu.layers.{m.group(1)}.{UPSTREAM_RENAMES[m.group(2)]}"
            continue
        m = _UPSTREAM_POS.search(key)
        if m and m.group(1) in UPSTREAM_RENAMES:
            out[key] = f"positional_encoder.{UPSTREAM_RENAMES[m.group(1)]}"
    return out


def load_upstream_hstu(
    target: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict"
) -> list[str]:
    """Copy a TorchEasyRec HSTU state dict's STU and positional weights into ``target``.

    ``target`` holds ``stu`` (an :class:`STUStack`) and optionally ``positional_encoder``
    (an encoder or user tower of ours). Returns our names that were loaded. Every layer of
    ``target.stu`` must be found, with the same shapes.

    Raises:
        ConfigError: no STU weights in ``state_dict``, a layer-count or shape mismatch.
    """
    mapping = upstream_key_map(state_dict)
    ours = target.state_dict()
    wanted = {k for k in ours if k.startswith("stu.layers.")}
    found = {v for v in mapping.values() if v.startswith("stu.layers.")}
    if not found:
        raise ConfigError(
            f"{source}: no TorchEasyRec STU weights (keys ending "
            "'_stu_module._stu_layers.<i>._uvqk_weight' ...)"
        )
    if found != wanted:
        missing = sorted(wanted - found)[:3]
        extra = sorted(found - wanted)[:3]
        raise ConfigError(
            f"{source}: STU layers differ from the model's (missing {missing}, unexpected "
            f"{extra}); check attn_num_layers and use_group_norm"
        )
    loaded: list[str] = []
    with torch.no_grad():
        for up, mine in mapping.items():
            if mine not in ours:
                continue
            value = state_dict[up]
            if tuple(value.shape) != tuple(ours[mine].shape):
                raise ConfigError(
                    f"{source}: '{up}' has shape {tuple(value.shape)} but '{mine}' needs "
                    f"{tuple(ours[mine].shape)}"
                )
            ours[mine].copy_(value)
            loaded.append(mine)
    return sorted(loaded)
