"""Input preprocessors: turn grouped embeddings into the jagged token sequence STU reads.

``uih_preprocessor`` (:class:`UIHPreprocessor`) handles the user interaction history (UIH)
only, for retrieval: item embeddings (projected to the STU width), plus an action encoding
(``simple_action_encoder`` over the ``uih_action`` group, watch-time thresholds over
``uih_watchtime``) passed through ``action_mlp``, with contextual tokens (one per feature
of the DEEP ``contextual`` group) prepended to every row. Candidates are not appended.

``contextual_preprocessor`` (:class:`ContextualPreprocessor`) is the ranking variant
(DlrmHSTU): a content encoder (``slice_content_encoder`` and friends,
:mod:`tzrec.hstu.content_encoders`) turns history and candidate embeddings into one width,
``content_mlp`` maps them to the STU width, the action encoding is added (candidates, whose
actions are unknown, get one learned action vector), and every row becomes
``[contextual tokens, history, candidates]`` with ``num_targets`` = its candidate count.

Inputs are keyed by the upstream feature-group names (:data:`UIH`, :data:`CONTEXTUAL`,
:data:`UIH_ACTION`, :data:`UIH_WATCHTIME`, :data:`UIH_TIMESTAMP`, :data:`CANDIDATE`,
:data:`CANDIDATE_TIMESTAMP`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tzrec.core.config import which_oneof
from tzrec.core.errors import ConfigError
from tzrec.hstu.content_encoders import create_content_encoder
from tzrec.kernels import concat_2d_jagged
from tzrec.protos import module_pb2

UIH = "uih"
CONTEXTUAL = "contextual"
UIH_ACTION = "uih_action"
UIH_WATCHTIME = "uih_watchtime"
UIH_TIMESTAMP = "uih_timestamp"
CANDIDATE = "candidate"
CANDIDATE_TIMESTAMP = "candidate_timestamp"


@dataclass
class PreprocessedSequence:
    """The token sequence of every row: contextual tokens first, then the history.

    Attributes:
        values: (N, D) jagged token embeddings.
        offsets: (B + 1,) int64 row offsets.
        timestamps: (N,) int64 seconds (contextual tokens: 0; no timestamps: all 0).
        contextual_len: contextual tokens at the start of every row.
        max_seq_len: the longest a row can be (``contextual_len + max history length``,
            plus the most candidates for ranking).
        num_targets: (B,) candidates at the end of every row (ranking), or None.
    """

    values: torch.Tensor
    offsets: torch.Tensor
    timestamps: torch.Tensor
    contextual_len: int
    max_seq_len: int
    num_targets: torch.Tensor | None = None


def lengths_to_offsets(lengths: torch.Tensor) -> torch.Tensor:
    """(B,) lengths to (B + 1,) int64 offsets starting at 0 (no data-dependent sizes)."""
    lengths = lengths.to(torch.int64)
    return torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, dim=0)])


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
    """``simple_mlp``: Linear → SiLU → Linear → LayerNorm, ``in_dim`` to ``out_dim``.

    Args:
        config: a ``GRContextualizedMLP`` message.
        in_dim: input width.
        out_dim: output width.
        field: the config field it came from, for error messages.
    """

    def __init__(
        self,
        config: module_pb2.GRContextualizedMLP,
        in_dim: int,
        out_dim: int,
        field: str = "uih_preprocessor.action_mlp",
    ) -> None:
        super().__init__()
        chosen = which_oneof(config, "contextualized_mlp")
        if chosen is None or chosen[0] != "simple_mlp":
            name = chosen[0] if chosen else "nothing"
            raise ConfigError(f"{field}: supports simple_mlp, not {name}")
        hidden = int(chosen[1].hidden_dim)
        if hidden <= 0:
            raise ConfigError(f"{field}.simple_mlp.hidden_dim must be > 0")
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, out_dim),
            nn.LayerNorm(out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) to (N, out_dim)."""
        return self.mlp(x)


def build_action_encoding(
    config: module_pb2.GRUIHPreprocessor | module_pb2.GRContextualPreprocessor,
    field: str,
    input_dims: dict[str, int],
    embedding_dim: int,
) -> tuple[SimpleActionEncoder | None, nn.Module | None]:
    """The action encoder and its MLP a preprocessor config asks for (or ``(None, None)``).

    Raises:
        ConfigError: an encoder other than ``simple_action_encoder``, an ``action_mlp``
            without an encoder, or a group the encoder needs that is missing.
    """
    if not config.HasField("action_encoder"):
        if config.HasField("action_mlp"):
            raise ConfigError(f"{field}.action_mlp is set without an action_encoder")
        return None, None
    chosen = which_oneof(config.action_encoder, "action_encoder")
    if chosen is None or chosen[0] != "simple_action_encoder":
        raise ConfigError(f"{field}.action_encoder: set simple_action_encoder")
    if UIH_ACTION not in input_dims:
        raise ConfigError(
            f"{field}.action_encoder needs a JAGGED_SEQUENCE feature group named "
            f"'{UIH_ACTION}' (the history's action bitmasks); add it to "
            "model_config.feature_groups"
        )
    encoder = SimpleActionEncoder(chosen[1])
    if encoder.uses_watchtime and UIH_WATCHTIME not in input_dims:
        raise ConfigError(
            "simple_action_encoder.watchtime_to_action_thresholds needs a "
            f"JAGGED_SEQUENCE feature group named '{UIH_WATCHTIME}'"
        )
    action_dim = encoder.output_dim()
    mlp = (
        ContextualizedMLP(config.action_mlp, action_dim, embedding_dim, f"{field}.action_mlp")
        if config.HasField("action_mlp")
        else nn.Linear(action_dim, embedding_dim)
    )
    return encoder, mlp


def contextual_projection(
    input_dims: dict[str, int], num_contextual: int, embedding_dim: int
) -> nn.Linear | None:
    """Linear map of the DEEP contextual group to ``num_contextual`` tokens of width D."""
    if CONTEXTUAL not in input_dims or num_contextual <= 0:
        return None
    return nn.Linear(input_dims[CONTEXTUAL], num_contextual * embedding_dim)


def prepend_contextual(
    projection: nn.Linear,
    num_contextual: int,
    contextual: torch.Tensor,
    values: torch.Tensor,
    offsets: torch.Tensor,
    timestamps: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Put ``num_contextual`` tokens (timestamp 0) in front of every jagged row.

    Returns:
        (values, offsets, timestamps) of the longer rows.
    """
    batch = offsets.shape[0] - 1
    dim = values.shape[1]
    ctx = projection(contextual.to(values.dtype)).reshape(batch * num_contextual, dim)
    ctx_offsets = torch.arange(batch + 1, dtype=torch.int64, device=values.device) * num_contextual
    values, new_offsets = concat_2d_jagged(ctx, ctx_offsets, values, offsets)
    ctx_ts = timestamps.new_zeros(batch * num_contextual, 1)
    timestamps, _ = concat_2d_jagged(ctx_ts, ctx_offsets, timestamps.unsqueeze(1), offsets)
    return values, new_offsets, timestamps.reshape(-1)


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
        self.action_encoder, self.action_mlp = build_action_encoding(
            config, "uih_preprocessor", input_dims, embedding_dim
        )
        self.num_contextual = num_contextual if CONTEXTUAL in input_dims else 0
        self.contextual = contextual_projection(input_dims, self.num_contextual, embedding_dim)
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
        offsets = lengths_to_offsets(uih_lengths)
        if self.uses_timestamps:
            timestamps = inputs[UIH_TIMESTAMP].reshape(-1).to(torch.int64)
        else:
            timestamps = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        c = self.num_contextual
        if self.contextual is not None and c:
            x, offsets, timestamps = prepend_contextual(
                self.contextual, c, inputs[CONTEXTUAL], x, offsets, timestamps
            )
        return PreprocessedSequence(x, offsets, timestamps, c, c + self.max_uih_len)


class ContextualPreprocessor(nn.Module):
    """The ``contextual_preprocessor``: ``[contextual, history, candidates]`` rows for ranking.

    History item ``i`` becomes ``content_mlp(content(uih_i)) + action_mlp(actions_i)`` and
    candidate ``j`` becomes ``content_mlp(content(cand_j)) + action_mlp(a*)`` where ``a*`` is
    a learned action encoding standing for "not yet acted on" (see the module doc). Without
    a candidate input (retrieval) the rows hold contextual tokens and history only.

    Args:
        config: a ``GRContextualPreprocessor`` message.
        embedding_dim: STU width D.
        input_dims: width of each available input by group role (``uih`` required;
            ``candidate``, ``contextual``, ``uih_action``, ``uih_watchtime`` optional; the
            timestamp roles are width 1 and only their presence matters).
        num_contextual: contextual tokens.
        max_uih_len: the longest history a row can have.
        max_candidates: the most candidates a row can have.

    Raises:
        ConfigError: a missing ``content_encoder`` / ``content_mlp``, or a group the config
            needs that is not there.
    """

    handles_candidates = True

    def __init__(
        self,
        config: module_pb2.GRContextualPreprocessor,
        embedding_dim: int,
        input_dims: dict[str, int],
        num_contextual: int = 0,
        max_uih_len: int = 0,
        max_candidates: int = 0,
    ) -> None:
        super().__init__()
        field = "contextual_preprocessor"
        if UIH not in input_dims:
            raise ConfigError(f"{field} needs the user history group '{UIH}'")
        for name in ("content_encoder", "content_mlp"):
            if not config.HasField(name):
                raise ConfigError(f"{field}.{name} is required")
        self.embedding_dim = embedding_dim
        self.max_uih_len = max_uih_len
        self.max_candidates = max_candidates
        self.uih_dim = input_dims[UIH]
        self.candidate_dim = input_dims.get(CANDIDATE, 0)
        self.content_encoder = create_content_encoder(
            config.content_encoder, self.uih_dim, self.candidate_dim
        )
        self.content_mlp = ContextualizedMLP(
            config.content_mlp,
            self.content_encoder.output_dim(),
            embedding_dim,
            f"{field}.content_mlp",
        )
        self.action_encoder, self.action_mlp = build_action_encoding(
            config, field, input_dims, embedding_dim
        )
        self.candidate_action = (
            nn.Parameter(torch.empty(self.action_encoder.output_dim()).normal_(0.0, 0.1))
            if self.action_encoder is not None
            else None
        )
        self.num_contextual = num_contextual if CONTEXTUAL in input_dims else 0
        self.contextual = contextual_projection(input_dims, self.num_contextual, embedding_dim)
        self.uses_timestamps = UIH_TIMESTAMP in input_dims
        self.uses_candidate_timestamps = CANDIDATE_TIMESTAMP in input_dims

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        uih_lengths: torch.Tensor,
        candidate_lengths: torch.Tensor | None = None,
    ) -> PreprocessedSequence:
        """Build the token sequence.

        Args:
            inputs: by role: ``uih`` (Nh, Du) and ``candidate`` (Nc, Dt) jagged;
                ``uih_action`` / ``uih_watchtime`` / ``uih_timestamp`` (Nh,) or (Nh, 1);
                ``candidate_timestamp`` (Nc,) or (Nc, 1); ``contextual`` (B, Dc).
            uih_lengths: (B,) history length of every row (may be 0).
            candidate_lengths: (B,) candidates of every row (may be 0); None: no candidates.
        """
        uih = inputs[UIH].to(torch.float32)
        candidates = inputs.get(CANDIDATE)
        with_candidates = candidates is not None and candidate_lengths is not None
        if candidates is None or candidate_lengths is None:
            candidates = uih.new_zeros(0, self.candidate_dim or self.uih_dim)
            candidate_lengths = torch.zeros_like(uih_lengths)
        candidates = candidates.to(torch.float32)
        hist, cand = self.content_encoder(uih, candidates)
        hist = self.content_mlp(hist)
        cand = self.content_mlp(cand)
        if (
            self.action_encoder is not None
            and self.action_mlp is not None
            and self.candidate_action is not None
        ):
            actions = self.action_encoder(inputs[UIH_ACTION], inputs.get(UIH_WATCHTIME))
            hist = hist + self.action_mlp(actions)
            unknown = self.candidate_action.unsqueeze(0).expand(cand.shape[0], -1)
            cand = cand + self.action_mlp(unknown)
        uih_offsets = lengths_to_offsets(uih_lengths)
        cand_offsets = lengths_to_offsets(candidate_lengths)
        hist_ts = (
            inputs[UIH_TIMESTAMP].reshape(-1).to(torch.int64)
            if self.uses_timestamps
            else torch.zeros(hist.shape[0], dtype=torch.int64, device=hist.device)
        )
        cand_ts = (
            inputs[CANDIDATE_TIMESTAMP].reshape(-1).to(torch.int64)
            if with_candidates and self.uses_candidate_timestamps and CANDIDATE_TIMESTAMP in inputs
            else torch.zeros(cand.shape[0], dtype=torch.int64, device=cand.device)
        )
        x, offsets = concat_2d_jagged(hist, uih_offsets, cand, cand_offsets)
        timestamps, _ = concat_2d_jagged(
            hist_ts.unsqueeze(1), uih_offsets, cand_ts.unsqueeze(1), cand_offsets
        )
        timestamps = timestamps.reshape(-1)
        c = self.num_contextual
        if self.contextual is not None and c:
            x, offsets, timestamps = prepend_contextual(
                self.contextual, c, inputs[CONTEXTUAL], x, offsets, timestamps
            )
        return PreprocessedSequence(
            x,
            offsets,
            timestamps,
            c,
            c + self.max_uih_len + self.max_candidates,
            candidate_lengths.to(torch.int64),
        )
