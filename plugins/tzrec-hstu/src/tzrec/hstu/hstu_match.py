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

``all_position_loss`` (tzrec-only, off by default) trains autoregressively as the HSTU paper
does: every history token t also predicts history item t+1 (causal attention, so token t
saw items ≤ t), scored against the same shared negatives (or, with ``in_batch_negative``,
against every query's target in the batch); the last token keeps predicting the candidate
positives. One forward per row, no row-per-prefix expansion. Eval and serving score the
last position only (upstream's metric).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.core.errors import ConfigError, DataError
from tzrec.data import (
    BaseFeature,
    Batch,
    create_features,
    project_grouped_sequence_feature_to_scalar,
)
from tzrec.data.samplers import CAND_POS_LENGTHS, HARD_NEG_INDICES
from tzrec.hstu.pipeline import HISTORY_ROLES, QUERY_TIME, HSTUEncoder
from tzrec.hstu.pipeline import role_groups as pipeline_role_groups
from tzrec.hstu.preprocessors import CONTEXTUAL, UIH
from tzrec.kernels import Kernel, jagged_last, jagged_positions
from tzrec.models.embedding import EmbeddingGroup, group_feature_names
from tzrec.models.layout import query_key, sequence_key, sequence_length_key
from tzrec.models.match import MatchModel
from tzrec.models.modules.mlp import MLP
from tzrec.protos import model_pb2, simi_pb2, tower_pb2

FIELD = "model_config.hstu_match"


def gather_last(values: torch.Tensor, offsets: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
    """(B, D): each row's last item; an empty row gets ``default`` (never reads index -1)."""
    return jagged_last(values, offsets, default=default.to(values.dtype))


class HSTUMatchUserTower(nn.Module):
    """HSTU user tower: the :class:`~tzrec.hstu.pipeline.HSTUEncoder`, postprocessor, last token.

    Args:
        tower_config: an ``HSTUUserTower`` message.
        embedding_group: the model's embedding group (for input widths).
        groups: role feature groups by name (the roles present among them are used).
        kernel: PYTORCH or TRITON.
        ascending: histories are oldest-first (``sequence_timestamp_is_ascending``).
    """

    def __init__(
        self,
        tower_config: tower_pb2.HSTUUserTower,
        embedding_group: EmbeddingGroup,
        groups: dict[str, model_pb2.FeatureGroupConfig],
        kernel: Kernel | int | str = Kernel.PYTORCH,
        ascending: bool = True,
    ) -> None:
        super().__init__()
        self.input = tower_config.input
        num_contextual = len(groups[CONTEXTUAL].feature_names) if CONTEXTUAL in groups else 0
        # the attention divisor is the tower's max_seq_len unless stu.scaling_seqlen says
        # otherwise (upstream passes scaling_seqlen=tower_config.max_seq_len)
        self.encoder = HSTUEncoder(
            tower_config.hstu,
            embedding_group,
            groups,
            where=f"{FIELD}.user_tower.hstu",
            uih_group=self.input,
            num_contextual=num_contextual,
            max_uih_len=int(tower_config.max_seq_len),
            scaling_seqlen=int(tower_config.max_seq_len),
            ascending=ascending,
            kernel=kernel,
        )
        self.embedding_dim = self.encoder.embedding_dim
        self.empty_history = nn.Parameter(torch.empty(self.embedding_dim).normal_(0.0, 0.02))

    def forward(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D) user embeddings from the embedding group's outputs."""
        return self.encode(grouped)[0]

    def encode(
        self, grouped: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(B, D) last tokens, all (N, D) tokens, their (B + 1,) offsets, contextual length."""
        x, seq = self.encoder(grouped)
        x = self.encoder.postprocessor(x, seq.timestamps)
        return gather_last(x, seq.offsets, self.empty_history), x, seq.offsets, seq.contextual_len


class HSTUMatchItemTower(nn.Module):
    """Item tower: MLP over item embeddings, (N, Ds) → (N, D), with two views.

    Training view: the candidate JAGGED_SEQUENCE group (``<group>.sequence``, every row's
    positive and sampled negatives, e.g. ``cand_seq__video_id``). Serving view
    (``_is_inference``, set by ``set_is_inference`` before export): one item per row, read
    as ``<group>.query`` from scalar features projected from the sequence sub-features
    (``video_id``, same table and defaults), so the item tower exports against a
    one-row-per-item table. ``features`` / ``feature_groups`` follow the view; the scalar
    projection is built on first use and cached (the training features never change).

    Args:
        tower_config: a ``Tower`` message (``input``, ``mlp``).
        in_dim: width of a candidate's embedding.
        features: the features of the candidate group (training view).
        group: the candidate feature group config (training view).
    """

    def __init__(
        self,
        tower_config: tower_pb2.Tower,
        in_dim: int,
        features: Sequence[BaseFeature] = (),
        group: model_pb2.FeatureGroupConfig | None = None,
    ) -> None:
        super().__init__()
        self.input = tower_config.input
        self.mlp = (
            MLP.from_config(in_dim, tower_config.mlp) if tower_config.HasField("mlp") else None
        )
        self._is_inference = False
        self._features = list(features)
        self._feature_groups = [group] if group is not None else []
        self._features_scalar: list[BaseFeature] | None = None
        self._feature_groups_scalar: list[model_pb2.FeatureGroupConfig] | None = None

    @property
    def features(self) -> list[BaseFeature]:
        """The features the tower reads in the current view."""
        if not self._is_inference:
            return self._features
        self._build_scalar_view()
        assert self._features_scalar is not None
        return self._features_scalar

    @property
    def feature_groups(self) -> list[model_pb2.FeatureGroupConfig]:
        """The feature group the tower reads in the current view."""
        if not self._is_inference:
            return self._feature_groups
        self._build_scalar_view()
        assert self._feature_groups_scalar is not None
        return self._feature_groups_scalar

    def _build_scalar_view(self) -> None:
        if self._features_scalar is not None:
            return
        scalar: list[BaseFeature] = []
        names: list[str] = []
        for f in self._features:
            if f.is_grouped_sequence:
                cfg = project_grouped_sequence_feature_to_scalar(f)
                scalar.extend(create_features([cfg]))
            elif f.is_sequence:
                raise ConfigError(
                    f"hstu_match item tower: feature '{f.name}' is a standalone sequence "
                    "feature; the serving view projects only sub-features of a "
                    "sequence_feature"
                )
            else:
                scalar.append(f)
        names = [f.name for f in scalar]
        group = model_pb2.FeatureGroupConfig(
            group_name=self.input, feature_names=names, group_type=model_pb2.JAGGED_SEQUENCE
        )
        self._features_scalar = scalar
        self._feature_groups_scalar = [group]

    def output_dim(self, in_dim: int) -> int:
        """Width of the output."""
        return self.mlp.output_dim() if self.mlp is not None else in_dim

    def mlp_only(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) item-tower outputs of already embedded items (e.g. history items)."""
        x = x.to(torch.float32)
        return self.mlp(x) if self.mlp is not None else x

    def forward(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """(rows, D) item embeddings: all candidates (training) or one item per row."""
        key = query_key(self.input) if self._is_inference else sequence_key(self.input)
        x = grouped[key].to(torch.float32)
        return self.mlp(x) if self.mlp is not None else x


class _TowerView(nn.Module):
    """One HSTUMatch tower as the exporter sees it: features, groups, ``tower_embedding``.

    Built on demand by :meth:`HSTUMatch.export_towers` from the tower and its output
    projection only (no embedding tables: those stay in the model's ``embedding_group``,
    which :class:`~tzrec.export.wrappers.TowerWoEGWrapper` turns into serving lookups).
    """

    def __init__(
        self,
        tower: nn.Module,
        output: nn.Module | None,
        normalize: bool,
        features: list[BaseFeature] | None = None,
        feature_groups: list[model_pb2.FeatureGroupConfig] | None = None,
        is_inference: bool = False,
    ) -> None:
        super().__init__()
        self._is_inference = is_inference
        self.tower = tower
        self.output = output
        self.normalize = normalize
        self._fixed_features = features
        self._fixed_groups = feature_groups

    @property
    def features(self) -> list[BaseFeature]:
        """What the tower reads (the item tower's follow its view)."""
        if self._fixed_features is not None:
            return self._fixed_features
        return self.tower.features

    @property
    def feature_groups(self) -> list[model_pb2.FeatureGroupConfig]:
        """The groups the tower reads."""
        if self._fixed_groups is not None:
            return self._fixed_groups
        return self.tower.feature_groups

    def tower_embedding(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """(rows, D) embeddings, projected and normalised as in training."""
        return _project(self.tower(grouped), self.output, self.normalize)


def _project(x: torch.Tensor, output: nn.Module | None, normalize: bool) -> torch.Tensor:
    if output is not None:
        x = output(x)
    return F.normalize(x, p=2.0, dim=-1, eps=1e-6) if normalize else x


IN_BATCH_MULTI_POSITIVE = (
    "HSTUMatch does not support in_batch_negative with multi-positive rows (Q queries from "
    "B users make the B×B in-batch path ill-defined); use a negative_sampler / "
    "hard_negative_sampler instead"
)
#: predictions key of ``all_position_loss``: the batch row of every similarity row
QUERY_ROW = "query_row"
#: score of an absent hard negative (upstream subtracts 1e32: it never ranks, softmax ~ 0)
MASKED_SIMILARITY = -1.0e32


def candidate_similarity(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    candidate_lengths: torch.Tensor,
    pos_lengths: torch.Tensor | None = None,
    hard_neg_indices: torch.Tensor | None = None,
    in_batch_negative: bool = False,
) -> torch.Tensor:
    """Upstream HSTUMatch scores: one query per positive, against shared negatives.

    ``item_emb`` holds every row's candidates, row by row: its ``pos_lengths[b]``
    positives, then (in some rows) a slice of the batch's negatives, ``num_sample`` simple
    ones followed by the hard ones. With the user embedding repeated once per positive
    (``Q`` queries), the result is ``(Q, 1 + M + H)``: column 0 the query's own positive,
    then all ``M`` simple negatives, then the hard-negative slots of
    ``hard_neg_indices`` ((query, slot) pairs; unfilled slots score
    :data:`MASKED_SIMILARITY`). ``in_batch_negative`` (one positive per row only) gives the
    ``(B, B)`` scores of every user against every row's positive.

    Raises:
        ConfigError: a row count mismatch.
        DataError: a row without positives; in-batch negatives with multi-positive rows.
    """
    query, positives, simple, hard = split_candidates(
        user_emb, item_emb, candidate_lengths, pos_lengths, hard_neg_indices
    )
    if in_batch_negative:
        if query.shape[0] != user_emb.shape[0]:
            raise DataError(IN_BATCH_MULTI_POSITIVE)
        return query @ positives.T
    own = (query * positives).sum(dim=-1, keepdim=True)
    parts = [own, query @ simple.T]
    if hard_neg_indices is not None and hard.shape[0] > 0:
        idx = hard_neg_indices.to(query.device, torch.int64)
        scores = (query.index_select(0, idx[:, 0]) * hard).sum(dim=-1)
        dense = query.new_full((query.shape[0], int(idx[:, 1].max()) + 1), MASKED_SIMILARITY)
        parts.append(dense.index_put((idx[:, 0], idx[:, 1]), scores))
    return torch.cat(parts, dim=1)


def split_candidates(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    candidate_lengths: torch.Tensor,
    pos_lengths: torch.Tensor | None = None,
    hard_neg_indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(queries, positives, simple negatives, hard negatives) of the candidate layout.

    The queries are ``user_emb`` repeated once per positive (Q rows, aligned with the
    positives); see :func:`candidate_similarity` for the layout.

    Raises:
        ConfigError: a row count mismatch.
        DataError: a row without positives.
    """
    batch = user_emb.shape[0]
    if candidate_lengths.numel() != batch:
        raise ConfigError(
            f"candidate group has {candidate_lengths.numel()} rows but the batch has {batch}"
        )
    lengths = candidate_lengths.to(torch.int64).reshape(-1)
    pos_lengths = lengths if pos_lengths is None else pos_lengths.to(lengths.device, torch.int64)
    if batch and int(pos_lengths.min()) < 1:
        raise DataError("hstu_match: every row needs at least one positive candidate")
    offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])
    rows, within = jagged_positions(offsets, item_emb.shape[0])
    is_pos = within < pos_lengths[rows]
    positives, negatives = item_emb[is_pos], item_emb[~is_pos]
    query = user_emb.repeat_interleave(pos_lengths, dim=0)
    n_hard = 0 if hard_neg_indices is None else int(hard_neg_indices.shape[0])
    simple = negatives[: negatives.shape[0] - n_hard]
    hard = negatives[negatives.shape[0] - n_hard :]
    return query, positives, simple, hard


def next_item_pairs(
    tokens: torch.Tensor,
    offsets: torch.Tensor,
    contextual_len: int,
    history: torch.Tensor,
    history_lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All-position pairs: history token t of every row and history item t + 1.

    ``tokens`` (N, D) are the encoded rows (``contextual_len`` tokens, then the history);
    ``history`` (sum_lengths, D) the history items' item-tower embeddings, oldest first.
    Returns (queries, targets, row of each pair), one pair per history position but each
    row's last (which predicts the candidates instead).
    """
    lengths = history_lengths.to(torch.int64).reshape(-1)
    hist_offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])
    rows, within = jagged_positions(hist_offsets, history.shape[0])
    keep = within + 1 < lengths[rows]
    flat = torch.nonzero(keep).reshape(-1)
    token_idx = offsets.to(torch.int64)[rows[flat]] + contextual_len + within[flat]
    return tokens.index_select(0, token_idx), history.index_select(0, flat + 1), rows[flat]


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
        user_group = self._group(cfg.user_tower.input)
        item_group = self._group(cfg.item_tower.input)
        for what, g in (("user_tower", user_group), ("item_tower", item_group)):
            if g.group_type != model_pb2.JAGGED_SEQUENCE:
                raise ConfigError(
                    f"model_config.hstu_match.{what}.input: group '{g.group_name}' must be "
                    "JAGGED_SEQUENCE"
                )
        role_groups = pipeline_role_groups(
            list(self._base_model_config.feature_groups),
            (CONTEXTUAL, QUERY_TIME, *HISTORY_ROLES),
            "hstu_match",
            exclude=(user_group.group_name, item_group.group_name),
        )
        used = [user_group, item_group, *role_groups.values()]
        self.embedding_group = EmbeddingGroup(self._features, used)
        self.user_tower = HSTUMatchUserTower(
            cfg.user_tower,
            self.embedding_group,
            role_groups,
            kernel,
            ascending=bool(cfg.sequence_timestamp_is_ascending),
        )
        item_in = self.embedding_group.sequence_dim(item_group.group_name)
        item_names = set(group_feature_names(item_group))
        self.item_tower = HSTUMatchItemTower(
            cfg.item_tower,
            item_in,
            [f for f in self._features if f.name in item_names],
            item_group,
        )
        self.user_groups = [user_group, *role_groups.values()]
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
        self.all_position_loss = bool(cfg.all_position_loss)
        if self.all_position_loss:
            self._check_all_position(cfg, user_group, item_in)

    def _check_all_position(
        self, cfg: Any, user_group: model_pb2.FeatureGroupConfig, item_in: int
    ) -> None:
        """Refuse all_position_loss where history tokens cannot line up with their next item."""
        where = f"{FIELD}.all_position_loss"
        uih_dim = self.embedding_group.sequence_dim(user_group.group_name)
        if uih_dim != item_in:
            raise ConfigError(
                f"{where}: the history group '{user_group.group_name}' is {uih_dim} wide but "
                f"the item tower's group {item_in}; history items are scored by the item "
                "tower, so the two groups need the same features (shared embeddings)"
            )
        hstu = cfg.user_tower.hstu
        if int(hstu.attn_truncation_split_layer) > 0:
            raise ConfigError(
                f"{where}: not supported with attn_truncation_split_layer (truncation drops "
                "the history tokens it would train)"
            )

    def user_embedding(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D) user embeddings."""
        return _project(self.user_tower(grouped), self.user_output, self.normalize)

    def item_embedding(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """(sum_candidates, D) item embeddings (L2-normalised only for COSINE)."""
        return _project(self.item_tower(grouped), self.item_output, self.normalize)

    def _sample_weight(self, batch: Batch) -> torch.Tensor | None:
        """Row weights repeated once per positive (one query per positive)."""
        weight = super()._sample_weight(batch)
        pos = batch.additional_infos.get(CAND_POS_LENGTHS)
        if weight is None or pos is None:
            return weight
        return weight.reshape(-1).repeat_interleave(pos.to(weight.device, torch.int64))

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Softmax cross entropy; all-position queries take their row's sample weight."""
        if QUERY_ROW not in predictions or not self._sample_weights:
            return super().loss(predictions, batch)
        sim = predictions["similarity"]
        row_weight = super()._sample_weight(batch)
        assert row_weight is not None
        weight = row_weight.reshape(-1).index_select(0, predictions[QUERY_ROW])
        target = self._target(sim)
        return {
            name: loss(sim, target, sample_weight=weight)
            for name, loss in self._loss_modules.items()
        }

    def export_towers(self) -> dict[str, nn.Module]:
        """``user_tower`` and ``item_tower`` (scalar view), reading ``embedding_group``."""
        user_names = {n for g in self.user_groups for n in group_feature_names(g)}
        user = _TowerView(
            self.user_tower,
            self.user_output,
            self.normalize,
            [f for f in self._features if f.name in user_names],
            list(self.user_groups),
            is_inference=self._is_inference,
        )
        item = _TowerView(
            self.item_tower, self.item_output, self.normalize, is_inference=self._is_inference
        )
        return {"user_tower": user, "item_tower": item}

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """User/item embeddings and the (Q, 1 + M + H) similarity / temperature (see above)."""
        grouped = self.user_tower.encoder.exact_timestamps(self.embedding_group(batch), batch)
        if self.all_position_loss and self.training and not self._is_inference:
            return self._predict_all_positions(grouped, batch)
        user_emb = self.user_embedding(grouped)
        if self._is_inference:  # serving view: users only (items export via the item tower)
            return {"user_emb": user_emb}
        item_emb = self.item_embedding(grouped)
        sim = candidate_similarity(
            user_emb,
            item_emb,
            grouped[sequence_length_key(self.item_tower.input)],
            batch.additional_infos.get(CAND_POS_LENGTHS),
            batch.additional_infos.get(HARD_NEG_INDICES),
            self._in_batch_negative,
        )
        return {"similarity": sim / self._temperature, "user_emb": user_emb, "item_emb": item_emb}

    def _predict_all_positions(
        self, grouped: dict[str, torch.Tensor], batch: Batch
    ) -> dict[str, torch.Tensor]:
        """Training scores of ``all_position_loss``: last-position queries, then history ones.

        Rows of ``similarity``: the upstream (Q, 1 + M + H) block first, then one row per
        (history token t, item t + 1) pair scored against the same M simple negatives (hard
        slots masked); with ``in_batch_negative`` the (P, P) scores of every query against
        every query's target. ``query_row`` maps each row to its batch row.
        """
        last, tokens, offsets, contextual_len = self.user_tower.encode(grouped)
        user_emb = _project(last, self.user_output, self.normalize)
        item_emb = self.item_embedding(grouped)
        pos_lengths = batch.additional_infos.get(CAND_POS_LENGTHS)
        hard_idx = batch.additional_infos.get(HARD_NEG_INDICES)
        lengths = grouped[sequence_length_key(self.item_tower.input)]
        query, positives, simple, _ = split_candidates(
            user_emb, item_emb, lengths, pos_lengths, hard_idx
        )
        encoder = self.user_tower.encoder
        inputs, uih_lengths, _ = encoder.gather_inputs(grouped, check=False)
        history = _project(self.item_tower.mlp_only(inputs[UIH]), self.item_output, self.normalize)
        hist_q, hist_t, hist_rows = next_item_pairs(
            tokens, offsets, contextual_len, history, uih_lengths
        )
        hist_q = _project(hist_q, self.user_output, self.normalize)
        counts = lengths.to(torch.int64).reshape(-1) if pos_lengths is None else pos_lengths
        last_rows = torch.arange(user_emb.shape[0], device=user_emb.device).repeat_interleave(
            counts.to(user_emb.device, torch.int64)
        )
        rows = torch.cat([last_rows, hist_rows.to(last_rows.device)])
        if self._in_batch_negative:
            if query.shape[0] != user_emb.shape[0]:
                raise DataError(IN_BATCH_MULTI_POSITIVE)
            sim = torch.cat([query, hist_q]) @ torch.cat([positives, hist_t]).T
        else:
            head = candidate_similarity(user_emb, item_emb, lengths, pos_lengths, hard_idx)
            own = (hist_q * hist_t).sum(dim=-1, keepdim=True)
            tail = [own, hist_q @ simple.T]
            pad = head.shape[1] - 1 - simple.shape[0]
            if pad > 0:
                tail.append(hist_q.new_full((hist_q.shape[0], pad), MASKED_SIMILARITY))
            sim = torch.cat([head, torch.cat(tail, dim=1)])
        return {
            "similarity": sim / self._temperature,
            "user_emb": user_emb,
            "item_emb": item_emb,
            QUERY_ROW: rows,
        }
