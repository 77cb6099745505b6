"""HSTUMatch: generative retrieval with an HSTU user tower (registered as ``hstu_match``).

The user tower reads the user interaction history (UIH) group named by
``user_tower.input``, turns it into tokens with the configured input preprocessor
(``uih_preprocessor``: contextual tokens from the DEEP ``contextual`` group, actions from
``uih_action``/``uih_watchtime``, timestamps from ``uih_timestamp``), adds position and time
embeddings (anchored at the DEEP ``query_time`` group, else each row's last timestamp), runs
an :class:`~tzrec.hstu.stu.STUStack`, applies the output postprocessor and returns the
embedding at each row's last position, (B, D). A row without history or contextual tokens
gets a learned "empty history" embedding (never index -1, never NaN).

The item tower is an MLP over the candidate JAGGED_SEQUENCE group named by
``item_tower.input``: every row carries ``1 + num_neg`` candidates (the positive, then the
negatives a candidate-sequence negative sampler joined to it), so the item embeddings are
(sum_candidates, D) and score against users as (B, 1 + num_neg, D). Similarities are divided
by ``temperature``; the loss is softmax cross entropy with the positive at column 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.core import plugins
from tzrec.core.config import provided_by, which_oneof
from tzrec.core.errors import ConfigError
from tzrec.data import BaseFeature, Batch
from tzrec.hstu.positional import HSTUPositionalEncoder
from tzrec.hstu.preprocessors import (
    CONTEXTUAL,
    UIH,
    UIH_ACTION,
    UIH_TIMESTAMP,
    UIH_WATCHTIME,
)
from tzrec.hstu.stu import STUStack
from tzrec.kernels import Kernel, jagged_last
from tzrec.models.embedding import EmbeddingGroup
from tzrec.models.models.match import MatchModel
from tzrec.models.modules.mlp import MLP
from tzrec.protos import model_pb2, simi_pb2, tower_pb2

QUERY_TIME = "query_time"
_JAGGED_ROLES = (UIH_ACTION, UIH_WATCHTIME, UIH_TIMESTAMP)


def reverse_jagged_rows(lengths: torch.Tensor) -> torch.Tensor:
    """Index that reverses the items of every jagged row (for newest-first histories)."""
    lengths = lengths.to(torch.int64)
    offsets = torch.cumsum(lengths, 0) - lengths
    total = int(lengths.sum())
    rows = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=lengths.device), lengths, output_size=total
    )
    pos = torch.arange(total, device=lengths.device) - offsets[rows]
    return offsets[rows] + lengths[rows] - 1 - pos


def gather_last(values: torch.Tensor, offsets: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
    """(B, D): each row's last item; an empty row gets ``default`` (never reads index -1)."""
    return jagged_last(values, offsets, default=default.to(values.dtype))


class HSTUMatchUserTower(nn.Module):
    """HSTU user tower: preprocessor → positional encoder → STU stack → postprocessor.

    Args:
        tower_config: an ``HSTUUserTower`` message.
        embedding_group: the model's embedding group (for input widths).
        groups: feature groups by name (the roles present among them are used).
        kernel: PYTORCH or TRITON.
    """

    def __init__(
        self,
        tower_config: tower_pb2.HSTUUserTower,
        embedding_group: EmbeddingGroup,
        groups: dict[str, model_pb2.FeatureGroupConfig],
        kernel: Kernel | int | str = Kernel.PYTORCH,
    ) -> None:
        super().__init__()
        hstu = tower_config.hstu
        self.input = tower_config.input
        self.embedding_dim = int(hstu.stu.embedding_dim)
        self.roles = [r for r in _JAGGED_ROLES if r in groups]
        self.has_contextual = CONTEXTUAL in groups
        self.has_query_time = QUERY_TIME in groups
        input_dims = {UIH: embedding_group.sequence_dim(self.input)}
        for role in self.roles:
            input_dims[role] = embedding_group.sequence_dim(role)
        num_contextual = 0
        if self.has_contextual:
            input_dims[CONTEXTUAL] = embedding_group.group_total_dim(CONTEXTUAL)
            num_contextual = len(groups[CONTEXTUAL].feature_names)
        pe = hstu.positional_encoder
        if pe.use_time_encoding and UIH_TIMESTAMP not in groups:
            raise ConfigError(
                "hstu.positional_encoder.use_time_encoding needs a JAGGED_SEQUENCE feature "
                f"group named '{UIH_TIMESTAMP}' (the history's timestamps)"
            )
        chosen = which_oneof(hstu.input_preprocessor, "input_preprocessor")
        if chosen is None:
            raise ConfigError("hstu.input_preprocessor: set uih_preprocessor")
        cls = plugins.get(
            "input_preprocessors", chosen[0], provided_by(hstu.input_preprocessor, chosen[0])
        )
        self.preprocessor = cls(
            chosen[1],
            self.embedding_dim,
            input_dims,
            num_contextual=num_contextual,
            max_uih_len=int(tower_config.max_seq_len),
        )
        self.positional_encoder = HSTUPositionalEncoder(pe, self.embedding_dim, kernel)
        self.input_dropout_ratio = float(hstu.input_dropout_ratio)
        self.stu = STUStack(hstu.stu, int(hstu.attn_num_layers), kernel)
        chosen = which_oneof(hstu.output_postprocessor, "output_postprocessor")
        if chosen is None:
            raise ConfigError("hstu.output_postprocessor: set l2norm_postprocessor or another")
        cls = plugins.get(
            "output_postprocessors",
            chosen[0],
            provided_by(hstu.output_postprocessor, chosen[0]),
        )
        self.postprocessor = cls(chosen[1], self.embedding_dim, kernel)
        self.empty_history = nn.Parameter(torch.empty(self.embedding_dim).normal_(0.0, 0.02))
        self.ascending = True

    def forward(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D) user embeddings from the embedding group's outputs."""
        lengths = grouped[f"{self.input}.sequence_length"]
        inputs = {UIH: grouped[f"{self.input}.sequence"]}
        for role in self.roles:
            inputs[role] = grouped[f"{role}.sequence"]
            if grouped[f"{role}.sequence_length"].shape != lengths.shape or not torch.equal(
                grouped[f"{role}.sequence_length"], lengths
            ):
                raise ConfigError(
                    f"feature group '{role}' and '{self.input}' have different sequence "
                    "lengths; take both from the same sequence_feature"
                )
        if not self.ascending:
            index = reverse_jagged_rows(lengths)
            inputs = {k: v.index_select(0, index) for k, v in inputs.items()}
        if self.has_contextual:
            inputs[CONTEXTUAL] = grouped[CONTEXTUAL]
        seq = self.preprocessor(inputs, lengths)
        query_time = (
            grouped[QUERY_TIME].reshape(-1).to(torch.int64) if self.has_query_time else None
        )
        x = self.positional_encoder(seq.values, seq.offsets, seq.timestamps, query_time)
        x = F.dropout(x, p=self.input_dropout_ratio, training=self.training)
        x = self.stu(x, seq.offsets, seq.max_seq_len, seq.contextual_len)
        x = self.postprocessor(x)
        return gather_last(x, seq.offsets, self.empty_history)


class HSTUMatchItemTower(nn.Module):
    """Item tower: MLP over the candidate sequence's item embeddings, (N, Ds) → (N, D).

    Args:
        tower_config: a ``Tower`` message (``input``, ``mlp``).
        in_dim: width of a candidate's embedding.
    """

    def __init__(self, tower_config: tower_pb2.Tower, in_dim: int) -> None:
        super().__init__()
        self.input = tower_config.input
        self.mlp = (
            MLP.from_config(in_dim, tower_config.mlp) if tower_config.HasField("mlp") else None
        )

    def output_dim(self, in_dim: int) -> int:
        """Width of the output."""
        return self.mlp.output_dim() if self.mlp is not None else in_dim

    def forward(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """(sum_candidates, D) candidate embeddings."""
        x = grouped[f"{self.input}.sequence"].to(torch.float32)
        return self.mlp(x) if self.mlp is not None else x


def candidate_similarity(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    candidate_lengths: torch.Tensor,
    in_batch_negative: bool = False,
) -> torch.Tensor:
    """Score (sum_candidates, D) items against (B, D) users as (B, 1 + num_neg).

    Every row must carry the same number of candidates (its positive first). With
    ``in_batch_negative`` only each row's positive is used and the result is (B, B).

    Raises:
        ConfigError: rows with differing (or zero) candidate counts.
    """
    batch = user_emb.shape[0]
    if candidate_lengths.numel() != batch:
        raise ConfigError(
            f"candidate group has {candidate_lengths.numel()} rows but the batch has {batch}"
        )
    counts = torch.unique(candidate_lengths)
    if counts.numel() != 1 or int(counts[0]) < 1:
        raise ConfigError(
            "hstu_match needs the same number of candidates in every row (the positive "
            f"followed by num_neg negatives), got counts {sorted(counts.tolist())}; give every "
            "row exactly one positive in its candidate sequence and use a negative sampler "
            "with item_id_field set to that sequence"
        )
    num = int(counts[0])
    items = item_emb.reshape(batch, num, -1)
    if in_batch_negative:
        return user_emb @ items[:, 0].T
    return torch.einsum("bd,bkd->bk", user_emb, items)


class HSTUMatch(MatchModel):
    """HSTUMatch (``model_config.hstu_match``): HSTU user tower, MLP item tower."""

    def __init__(
        self,
        model_config: model_pb2.ModelConfig,
        features: Sequence[BaseFeature],
        labels: Sequence[str],
        sample_weights: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_config, features, labels, sample_weights, **kwargs)
        cfg = self._model_config
        kernel = int(self._base_model_config.kernel)
        groups = {g.group_name: g for g in self._base_model_config.feature_groups}
        user_group = self._group(cfg.user_tower.input)
        item_group = self._group(cfg.item_tower.input)
        for what, g in (("user_tower", user_group), ("item_tower", item_group)):
            if g.group_type != model_pb2.JAGGED_SEQUENCE:
                raise ConfigError(
                    f"model_config.hstu_match.{what}.input: group '{g.group_name}' must be "
                    "JAGGED_SEQUENCE"
                )
        expected_types = {
            CONTEXTUAL: (model_pb2.DEEP,),
            QUERY_TIME: (model_pb2.DEEP,),
            UIH_ACTION: (model_pb2.JAGGED_SEQUENCE,),
            UIH_WATCHTIME: (model_pb2.JAGGED_SEQUENCE,),
            UIH_TIMESTAMP: (model_pb2.JAGGED_SEQUENCE,),
        }
        role_groups = {}
        for role, types in expected_types.items():
            if role in groups and role not in (user_group.group_name, item_group.group_name):
                if groups[role].group_type not in types:
                    want = "/".join(model_pb2.FeatureGroupType.Name(t) for t in types)
                    raise ConfigError(f"feature group '{role}' must be {want}")
                role_groups[role] = groups[role]
        used = [user_group, item_group, *role_groups.values()]
        self.embedding_group = EmbeddingGroup(self._features, used)
        self.user_tower = HSTUMatchUserTower(
            cfg.user_tower, self.embedding_group, role_groups, kernel
        )
        self.user_tower.ascending = bool(cfg.sequence_timestamp_is_ascending)
        item_in = self.embedding_group.sequence_dim(item_group.group_name)
        self.item_tower = HSTUMatchItemTower(cfg.item_tower, item_in)
        user_dim = self.user_tower.embedding_dim
        item_dim = self.item_tower.output_dim(item_in)
        self.output_dim = int(cfg.output_dim)
        if self.output_dim > 0:
            self.user_output = nn.Linear(user_dim, self.output_dim)
            self.item_output = nn.Linear(item_dim, self.output_dim)
        elif user_dim != item_dim:
            raise ConfigError(
                f"model_config.hstu_match: the user tower outputs {user_dim} dims "
                f"(stu.embedding_dim) but the item tower {item_dim}; make item_tower.mlp's "
                "last hidden_units equal or set output_dim"
            )
        else:
            self.user_output = None
            self.item_output = None
        self.normalize = cfg.similarity == simi_pb2.COSINE

    def user_embedding(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D) user embeddings."""
        x = self.user_tower(grouped)
        if self.user_output is not None:
            x = self.user_output(x)
        return F.normalize(x, p=2.0, dim=-1, eps=1e-6) if self.normalize else x

    def item_embedding(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """(sum_candidates, D) item embeddings (L2-normalised only for COSINE)."""
        x = self.item_tower(grouped)
        if self.item_output is not None:
            x = self.item_output(x)
        return F.normalize(x, p=2.0, dim=-1, eps=1e-6) if self.normalize else x

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """User/item embeddings and the (B, 1 + num_neg) similarity / temperature."""
        grouped = self.embedding_group(batch)
        user_emb = self.user_embedding(grouped)
        item_emb = self.item_embedding(grouped)
        if self._is_inference:
            return {"user_emb": user_emb, "item_emb": item_emb}
        sim = candidate_similarity(
            user_emb,
            item_emb,
            grouped[f"{self.item_tower.input}.sequence_length"],
            self._in_batch_negative,
        )
        return {"similarity": sim / self._temperature, "user_emb": user_emb, "item_emb": item_emb}
