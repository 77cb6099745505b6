"""The HSTU encoder both HSTU models run, written once.

:class:`HSTUEncoder` turns the embedding group's output into encoded tokens::

    role inputs (length-checked, history reversed when newest-first)
      → input preprocessor  ([contextual tokens, history(, candidates)] per row)
      → positional encoder  (position and time embeddings; anchored at query_time if given)
      → dropout(input_dropout_ratio) → STU stack → (postprocessor, on the tokens a model picks)

HSTUMatch encodes the history and takes each row's last token; DlrmHSTU appends the
candidates and takes theirs. Feature groups are found by role name (:data:`ROLE_TYPES`,
type-checked by :func:`role_groups`); two groups of one sequence with different lengths are
a :class:`~tzrec.core.errors.DataError` (:func:`check_same_lengths`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.core import plugins
from tzrec.core.config import provided_by, which_oneof
from tzrec.core.errors import ConfigError, DataError
from tzrec.data import Batch
from tzrec.hstu.positional import HSTUPositionalEncoder
from tzrec.hstu.preprocessors import (
    CANDIDATE,
    CANDIDATE_TIMESTAMP,
    CONTEXTUAL,
    UIH,
    UIH_ACTION,
    UIH_TIMESTAMP,
    UIH_WATCHTIME,
    PreprocessedSequence,
)
from tzrec.hstu.stu import STUStack
from tzrec.kernels import Kernel, is_tracing, jagged_reverse_index
from tzrec.models.embedding import EmbeddingGroup
from tzrec.models.layout import sequence_key, sequence_length_key
from tzrec.protos import model_pb2, module_pb2

QUERY_TIME = "query_time"
HISTORY_ROLES = (UIH_ACTION, UIH_WATCHTIME, UIH_TIMESTAMP)

#: feature groups read by role name, and the type each must have
ROLE_TYPES = {
    UIH: model_pb2.JAGGED_SEQUENCE,
    CANDIDATE: model_pb2.JAGGED_SEQUENCE,
    CONTEXTUAL: model_pb2.DEEP,
    QUERY_TIME: model_pb2.DEEP,
    UIH_ACTION: model_pb2.JAGGED_SEQUENCE,
    UIH_WATCHTIME: model_pb2.JAGGED_SEQUENCE,
    UIH_TIMESTAMP: model_pb2.JAGGED_SEQUENCE,
    CANDIDATE_TIMESTAMP: model_pb2.JAGGED_SEQUENCE,
}


def role_groups(
    feature_groups: list[model_pb2.FeatureGroupConfig],
    roles: tuple[str, ...],
    model: str,
    exclude: tuple[str, ...] = (),
) -> dict[str, model_pb2.FeatureGroupConfig]:
    """The groups named after ``roles`` (except ``exclude``), each checked against its type.

    Raises:
        ConfigError: a role group of the wrong type (names the group and the type).
    """
    by_name = {g.group_name: g for g in feature_groups}
    out: dict[str, model_pb2.FeatureGroupConfig] = {}
    for role in roles:
        if role not in by_name or role in exclude:
            continue
        want = ROLE_TYPES[role]
        if by_name[role].group_type != want:
            raise ConfigError(
                f"feature group '{role}' must be {model_pb2.FeatureGroupType.Name(want)} "
                f"for {model}"
            )
        out[role] = by_name[role]
    return out


def check_same_lengths(grouped: Mapping[str, torch.Tensor], pairs: list[tuple[str, str]]) -> None:
    """Every (group, owner) pair has the same per-row sequence lengths.

    Raises:
        DataError: naming both groups.
    """
    for role, owner in pairs:
        got = grouped[sequence_length_key(role)]
        want = grouped[sequence_length_key(owner)]
        if got.shape != want.shape or not torch.equal(got, want):
            raise DataError(
                f"feature group '{role}' and '{owner}' have different sequence lengths; "
                "take both from the same sequence_feature"
            )


class HSTUEncoder(nn.Module):
    """Preprocessor → positional encoder → dropout → STU stack, plus the postprocessor.

    Args:
        hstu: the ``HSTU`` message.
        embedding_group: the model's embedding group (input widths).
        groups: the role groups present (:func:`role_groups`).
        where: config path for messages (``model_config.dlrm_hstu.hstu``).
        uih_group: the history group's name (``uih`` or ``user_tower.input``).
        candidate_group: the candidate group's name when candidates join the rows
            (ranking), else None.
        num_contextual: contextual tokens per row.
        max_uih_len: the longest history; max_candidates: the most candidates.
        scaling_seqlen: the model's ``max_seq_len`` (attention divisor, see STULayer).
        ascending: histories are oldest-first (else reversed before encoding).
        kernel: PYTORCH or TRITON.

    Raises:
        ConfigError: an unset preprocessor/postprocessor oneof, time encoding without the
            timestamp groups, a preprocessor that cannot take candidates.
    """

    def __init__(
        self,
        hstu: module_pb2.HSTU,
        embedding_group: EmbeddingGroup,
        groups: Mapping[str, model_pb2.FeatureGroupConfig],
        *,
        where: str,
        uih_group: str,
        candidate_group: str | None = None,
        num_contextual: int = 0,
        max_uih_len: int = 0,
        max_candidates: int = 0,
        scaling_seqlen: int = -1,
        ascending: bool = True,
        kernel: Kernel | int | str = Kernel.PYTORCH,
    ) -> None:
        super().__init__()
        self.embedding_dim = int(hstu.stu.embedding_dim)
        if self.embedding_dim <= 0:
            raise ConfigError(f"{where}.stu.embedding_dim must be > 0")
        if hstu.name and hstu.name != uih_group:
            raise ConfigError(
                f"{where}.name '{hstu.name}' names a mixture-of-transducers channel, which only "
                "ultra_hstu reads; leave it empty"
            )
        self.uih_group = uih_group
        # role → the group's name in the embedding output (an ULTRA-HSTU channel renames
        # the history roles: uih_action → <channel>_action, ...)
        self.group_names = {role: g.group_name for role, g in groups.items()}
        self.candidate_group = candidate_group
        self.history_roles = [r for r in HISTORY_ROLES if r in groups]
        self.has_contextual = CONTEXTUAL in groups
        self.has_query_time = QUERY_TIME in groups
        self.has_candidate_timestamp = candidate_group is not None and CANDIDATE_TIMESTAMP in groups
        # timestamp groups of one raw feature: the batch carries their exact int64 values
        self.timestamp_features = {
            role: groups[role].feature_names[0]
            for role in (UIH_TIMESTAMP, CANDIDATE_TIMESTAMP, QUERY_TIME)
            if role in groups
            and len(groups[role].feature_names) == 1
            and (role != CANDIDATE_TIMESTAMP or self.has_candidate_timestamp)
        }
        self.ascending = ascending
        input_dims = {UIH: embedding_group.sequence_dim(uih_group)}
        if candidate_group is not None:
            input_dims[CANDIDATE] = embedding_group.sequence_dim(candidate_group)
        for role in self.history_roles:
            input_dims[role] = embedding_group.sequence_dim(self.group_names[role])
        if self.has_candidate_timestamp:
            input_dims[CANDIDATE_TIMESTAMP] = embedding_group.sequence_dim(
                self.group_names[CANDIDATE_TIMESTAMP]
            )
        if self.has_contextual:
            input_dims[CONTEXTUAL] = embedding_group.group_total_dim(self.group_names[CONTEXTUAL])
        self.input_dims = input_dims
        pe = hstu.positional_encoder
        if pe.use_time_encoding:
            needed = [UIH_TIMESTAMP] + ([CANDIDATE_TIMESTAMP] if candidate_group else [])
            for role in needed:
                if role not in groups:
                    raise ConfigError(
                        f"{where}.positional_encoder.use_time_encoding needs a "
                        f"JAGGED_SEQUENCE feature group named '{role}'"
                    )
        chosen = which_oneof(hstu.input_preprocessor, "input_preprocessor")
        if chosen is None:
            want = "contextual_preprocessor" if candidate_group else "uih_preprocessor"
            raise ConfigError(f"{where}.input_preprocessor: set {want}")
        cls = plugins.get(
            "input_preprocessors", chosen[0], provided_by(hstu.input_preprocessor, chosen[0])
        )
        extra = {}
        if candidate_group is not None:
            if not getattr(cls, "handles_candidates", False):
                raise ConfigError(
                    f"{where}.input_preprocessor: {chosen[0]} does not append candidates; "
                    "use contextual_preprocessor"
                )
            extra["max_candidates"] = max_candidates
        self.preprocessor = cls(
            chosen[1],
            self.embedding_dim,
            input_dims,
            num_contextual=num_contextual,
            max_uih_len=max_uih_len,
            **extra,
        )
        self.positional_encoder = HSTUPositionalEncoder(pe, self.embedding_dim, kernel)
        self.input_dropout_ratio = float(hstu.input_dropout_ratio)
        self.stu = STUStack(
            hstu.stu,
            int(hstu.attn_num_layers),
            kernel,
            scaling_seqlen,
            truncate_split_layer=int(hstu.attn_truncation_split_layer),
            truncate_tail_len=int(hstu.attn_truncation_tail_len),
            where=where,
        )
        chosen = which_oneof(hstu.output_postprocessor, "output_postprocessor")
        if chosen is None:
            raise ConfigError(f"{where}.output_postprocessor: set l2norm_postprocessor or another")
        cls = plugins.get(
            "output_postprocessors",
            chosen[0],
            provided_by(hstu.output_postprocessor, chosen[0]),
        )
        self.postprocessor = cls(chosen[1], self.embedding_dim, kernel)

    def exact_timestamps(
        self, grouped: Mapping[str, torch.Tensor], batch: Batch
    ) -> dict[str, torch.Tensor]:
        """``grouped`` with the timestamp groups' float32 values replaced by exact int64 ones.

        float32 keeps 24 bits (seconds at 1.7e9 round to 128 s); the batch keeps integer raw
        features exactly in ``Batch.int64_features``, so time deltas, time buckets and the
        postprocessor's time features are computed on int64 (and float64) values.

        Raises:
            DataError: the exact values do not line up with the embedded ones.
        """
        out = dict(grouped)
        for role, name in self.timestamp_features.items():
            exact = batch.int64_features.get(name)
            if exact is None:
                continue
            key = role if role == QUERY_TIME else sequence_key(self.group_names[role])
            values = exact if isinstance(exact, torch.Tensor) else exact.values()
            if values.numel() != grouped[key].numel():
                raise DataError(
                    f"feature '{name}' (group '{role}'): {values.numel()} exact timestamps "
                    f"but {grouped[key].numel()} embedded ones"
                )
            values = values.reshape(grouped[key].shape)
            out[key] = values
        return out

    def gather_inputs(
        self, grouped: Mapping[str, torch.Tensor], check: bool = True
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """Role inputs, history lengths and candidate counts from the embedding group's output.

        ``check``: compare the lengths of groups of one sequence (skipped while tracing:
        exported graphs take aligned groups). Histories are reversed when newest-first.
        """
        uih_lengths = grouped[sequence_length_key(self.uih_group)]
        inputs = {UIH: grouped[sequence_key(self.uih_group)]}
        for role in self.history_roles:
            inputs[role] = grouped[sequence_key(self.group_names[role])]
        num_targets = None
        if self.candidate_group is not None:
            num_targets = grouped[sequence_length_key(self.candidate_group)]
            inputs[CANDIDATE] = grouped[sequence_key(self.candidate_group)]
            if self.has_candidate_timestamp:
                inputs[CANDIDATE_TIMESTAMP] = grouped[
                    sequence_key(self.group_names[CANDIDATE_TIMESTAMP])
                ]
        if check and not is_tracing():
            pairs = [(self.group_names[role], self.uih_group) for role in self.history_roles]
            if self.has_candidate_timestamp and self.candidate_group is not None:
                pairs.append((self.group_names[CANDIDATE_TIMESTAMP], self.candidate_group))
            check_same_lengths(grouped, pairs)
        if not self.ascending:
            offsets = torch.cat([uih_lengths.new_zeros(1), torch.cumsum(uih_lengths, 0)])
            index = jagged_reverse_index(offsets, inputs[UIH].shape[0])
            for role in (UIH, *self.history_roles):
                inputs[role] = inputs[role].index_select(0, index)
        if self.has_contextual:
            inputs[CONTEXTUAL] = grouped[self.group_names[CONTEXTUAL]]
        return inputs, uih_lengths, num_targets

    def forward(
        self,
        grouped: Mapping[str, torch.Tensor],
        check: bool = True,
        max_seq_len: int | None = None,
    ) -> tuple[torch.Tensor, PreprocessedSequence]:
        """Encoded tokens (N, D) (before the postprocessor) and the token sequence.

        With mid-stack truncation the returned sequence is the truncated one (its offsets
        and timestamps match the returned tokens; values are the STU input's kept rows).

        Args:
            grouped: the embedding group's output.
            check: validate lengths (training / eager); False in the inference view.
            max_seq_len: when given, the longest a row may be (else a DataError) and the
                ``max_seq_len`` the attention sees; default: the preprocessor's bound.
        """
        inputs, uih_lengths, num_targets = self.gather_inputs(grouped, check)
        if num_targets is None:
            seq = self.preprocessor(inputs, uih_lengths)
        else:
            seq = self.preprocessor(inputs, uih_lengths, num_targets)
        if check and max_seq_len is not None:
            _check_max_seq_len(seq.offsets, max_seq_len)
        query_time = (
            grouped[QUERY_TIME].reshape(-1).to(torch.int64) if self.has_query_time else None
        )
        x = self.positional_encoder(
            seq.values, seq.offsets, seq.timestamps, query_time, num_targets=seq.num_targets
        )
        x = F.dropout(x, p=self.input_dropout_ratio, training=self.training)
        longest = max_seq_len if max_seq_len is not None else seq.max_seq_len
        x, offsets, kept = self.stu.encode(
            x, seq.offsets, longest, seq.contextual_len, seq.num_targets
        )
        if kept is not None:
            seq = replace(
                seq,
                values=seq.values.index_select(0, kept),
                offsets=offsets,
                timestamps=seq.timestamps.index_select(0, kept),
            )
        return x, seq


def _check_max_seq_len(offsets: torch.Tensor, max_seq_len: int) -> None:
    longest = int((offsets[1:] - offsets[:-1]).max()) if offsets.numel() > 1 else 0
    if longest > max_seq_len:
        raise DataError(
            f"max_seq_len is {max_seq_len} but a row has {longest} tokens "
            "(contextual + history + candidates); raise max_seq_len or shorten the "
            "sequences' sequence_length"
        )
