"""Input preprocessors: turn grouped embeddings into the jagged token sequence STU reads.

``uih_preprocessor`` (:class:`UIHPreprocessor`) handles the user interaction history (UIH)
only, for retrieval: item embeddings (projected to the STU width), plus an action encoding
(``simple_action_encoder`` over the ``uih_action`` group, watch-time thresholds over
``uih_watchtime``) passed through ``action_mlp``, with contextual tokens (one per feature
of the DEEP ``contextual`` group) prepended to every row. Candidates are not appended.

Inputs are keyed by the upstream feature-group names (:data:`UIH`, :data:`CONTEXTUAL`,
:data:`UIH_ACTION`, :data:`UIH_WATCHTIME`, :data:`UIH_TIMESTAMP`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tzrec.core.config import which_oneof
from tzrec.core.errors import ConfigError
from tzrec.kernels import concat_2d_jagged
from tzrec.protos import module_pb2

UIH = "uih"
CONTEXTUAL = "contextual"
UIH_ACTION = "uih_action"
UIH_WATCHTIME = "uih_watchtime"
UIH_TIMESTAMP = "uih_timestamp"


@dataclass
class PreprocessedSequence:
    """The token sequence of every row: contextual tokens first, then the history.

    Attributes:
        values: (N, D) jagged token embeddings.
        offsets: (B + 1,) int64 row offsets.
        timestamps: (N,) int64 seconds (contextual tokens: 0; no timestamps: all 0).
        contextual_len: contextual tokens at the start of every row.
        max_seq_len: the longest a row can be (``contextual_len + max history length``).
    """

    values: torch.Tensor
    offsets: torch.Tensor
    timestamps: torch.Tensor
    contextual_len: int
    max_seq_len: int


class SimpleActionEncoder(nn.Module):
    """Embeds an action bitmask: one learned vector per set bit, concatenated.

    Bits are ``action_weights`` followed by ``watchtime_to_action_weights`` (bit ``w_i`` is
    set when ``watch_time >= watchtime_to_action_thresholds[i]``). Output width is
    ``action_embedding_dim * (len(action_weights) + len(watchtime_to_action_weights))``.
    """

    def __init__(self, config: module_pb2.GRSimpleActionEncoder) -> None:
        super().__init__()
        if config.action_embedding_dim <= 0:
            raise ConfigError("simple_action_encoder.action_embedding_dim must be > 0")
        if len(config.watchtime_to_action_thresholds) != len(config.watchtime_to_action_weights):
            raise ConfigError(
                "simple_action_encoder: watchtime_to_action_thresholds and "
                "watchtime_to_action_weights must have the same length"
            )
        weights = list(config.action_weights) + list(config.watchtime_to_action_weights)
        if not weights:
            raise ConfigError("simple_action_encoder: set action_weights")
        self.action_embedding_dim = int(config.action_embedding_dim)
        self.uses_watchtime = len(config.watchtime_to_action_thresholds) > 0
        self.register_buffer("bits", torch.tensor(weights, dtype=torch.int64), persistent=False)
        self.register_buffer(
            "watch_thresholds",
            torch.tensor(list(config.watchtime_to_action_thresholds), dtype=torch.float32),
            persistent=False,
        )
        self.register_buffer(
            "watch_bits",
            torch.tensor(list(config.watchtime_to_action_weights), dtype=torch.int64),
            persistent=False,
        )
        self.table = nn.Parameter(
            torch.empty(len(weights), self.action_embedding_dim).normal_(
                0.0, float(config.embedding_init_std)
            )
        )

    def output_dim(self) -> int:
        """Width of the encoding."""
        return self.table.numel()

    def forward(
        self, actions: torch.Tensor, watchtimes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N,) action bitmasks (and (N,) watch times) to (N, output_dim)."""
        actions = actions.reshape(-1).to(torch.int64)
        if self.uses_watchtime and watchtimes is not None:
            hit = watchtimes.reshape(-1, 1).to(torch.float32) >= self.watch_thresholds
            actions = actions | (hit.to(torch.int64) * self.watch_bits).sum(dim=1)
        exploded = (actions.unsqueeze(1) & self.bits) > 0
        out = exploded.unsqueeze(2).to(self.table.dtype) * self.table.unsqueeze(0)
        return out.reshape(actions.shape[0], self.table.numel())


class ContextualizedMLP(nn.Module):
    """``simple_mlp``: Linear → SiLU → Linear → LayerNorm, ``in_dim`` to ``out_dim``."""

    def __init__(self, config: module_pb2.GRContextualizedMLP, in_dim: int, out_dim: int) -> None:
        super().__init__()
        chosen = which_oneof(config, "contextualized_mlp")
        if chosen is None or chosen[0] != "simple_mlp":
            name = chosen[0] if chosen else "nothing"
            raise ConfigError(f"uih_preprocessor.action_mlp: supports simple_mlp, not {name}")
        hidden = int(chosen[1].hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, out_dim),
            nn.LayerNorm(out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) to (N, out_dim)."""
        return self.mlp(x)


class UIHPreprocessor(nn.Module):
    """The ``uih_preprocessor``: history tokens (+ actions) behind contextual tokens.

    Args:
        config: a ``GRUIHPreprocessor`` message.
        embedding_dim: STU width D.
        input_dims: width of each available input by group role (``uih`` required;
            ``contextual``, ``uih_action``, ``uih_watchtime``, ``uih_timestamp`` optional).
        num_contextual: contextual tokens (features of the contextual group).
        max_uih_len: the longest history a row can have.

    Raises:
        ConfigError: when the config needs a group that is not there (an action encoder
            without ``uih_action``, watch-time thresholds without ``uih_watchtime``).
    """

    def __init__(
        self,
        config: module_pb2.GRUIHPreprocessor,
        embedding_dim: int,
        input_dims: dict[str, int],
        num_contextual: int = 0,
        max_uih_len: int = 0,
    ) -> None:
        super().__init__()
        if UIH not in input_dims:
            raise ConfigError("uih_preprocessor needs the user history group")
        self.embedding_dim = embedding_dim
        self.max_uih_len = max_uih_len
        uih_dim = input_dims[UIH]
        self.content = (
            nn.Identity() if uih_dim == embedding_dim else nn.Linear(uih_dim, embedding_dim)
        )
        self.action_encoder: SimpleActionEncoder | None = None
        self.action_mlp: nn.Module | None = None
        if config.HasField("action_encoder"):
            chosen = which_oneof(config.action_encoder, "action_encoder")
            if chosen is None or chosen[0] != "simple_action_encoder":
                raise ConfigError("uih_preprocessor.action_encoder: set simple_action_encoder")
            if UIH_ACTION not in input_dims:
                raise ConfigError(
                    "uih_preprocessor.action_encoder needs a JAGGED_SEQUENCE feature group "
                    f"named '{UIH_ACTION}' (the history's action bitmasks); add it to "
                    "model_config.feature_groups"
                )
            self.action_encoder = SimpleActionEncoder(chosen[1])
            if self.action_encoder.uses_watchtime and UIH_WATCHTIME not in input_dims:
                raise ConfigError(
                    "simple_action_encoder.watchtime_to_action_thresholds needs a "
                    f"JAGGED_SEQUENCE feature group named '{UIH_WATCHTIME}'"
                )
            action_dim = self.action_encoder.output_dim()
            self.action_mlp = (
                ContextualizedMLP(config.action_mlp, action_dim, embedding_dim)
                if config.HasField("action_mlp")
                else nn.Linear(action_dim, embedding_dim)
            )
        elif config.HasField("action_mlp"):
            raise ConfigError("uih_preprocessor.action_mlp is set without an action_encoder")
        self.num_contextual = num_contextual if CONTEXTUAL in input_dims else 0
        self.contextual = (
            nn.Linear(input_dims[CONTEXTUAL], self.num_contextual * embedding_dim)
            if self.num_contextual
            else None
        )
        self.uses_timestamps = UIH_TIMESTAMP in input_dims

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        uih_lengths: torch.Tensor,
    ) -> PreprocessedSequence:
        """Build the token sequence.

        Args:
            inputs: by role: ``uih`` (N, Ds) jagged; ``uih_action`` / ``uih_watchtime`` /
                ``uih_timestamp`` (N,) or (N, 1) jagged; ``contextual`` (B, Dc).
            uih_lengths: (B,) history length of every row (may be 0).
        """
        uih = inputs[UIH]
        x = self.content(uih.to(torch.float32))
        if self.action_encoder is not None and self.action_mlp is not None:
            actions = self.action_encoder(inputs[UIH_ACTION], inputs.get(UIH_WATCHTIME))
            x = x + self.action_mlp(actions)
        lengths = uih_lengths.to(torch.int64)
        offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=x.device)
        offsets[1:] = torch.cumsum(lengths, dim=0)
        if self.uses_timestamps:
            timestamps = inputs[UIH_TIMESTAMP].reshape(-1).to(torch.int64)
        else:
            timestamps = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        c = self.num_contextual
        if self.contextual is not None and c:
            batch = lengths.numel()
            ctx = self.contextual(inputs[CONTEXTUAL].to(torch.float32))
            ctx = ctx.reshape(batch * c, self.embedding_dim)
            ctx_offsets = torch.arange(batch + 1, dtype=torch.int64, device=x.device) * c
            values, new_offsets = concat_2d_jagged(ctx, ctx_offsets, x, offsets)
            ctx_ts = torch.zeros(batch * c, 1, dtype=torch.int64, device=x.device)
            timestamps, _ = concat_2d_jagged(ctx_ts, ctx_offsets, timestamps.unsqueeze(1), offsets)
            x, offsets, timestamps = values, new_offsets, timestamps.reshape(-1)
        return PreprocessedSequence(x, offsets, timestamps, c, c + self.max_uih_len)
