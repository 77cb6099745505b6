"""How sampled negatives join a batch: appended as ``__NEG__`` rows or into candidate sequences.

The reader builds one :class:`NegativeJoin` from the config and the features and hands it
the columns of every batch; everything sampler-specific (which columns to read, how the
attribute names map to columns, where the negatives go) lives here.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from tzrec.core.config import provided_by, which_oneof
from tzrec.core.errors import ConfigError, DataError
from tzrec.data import arrow_utils as au
from tzrec.data.features.base import BaseFeature
from tzrec.data.features.factory import candidate_feature, negative_feature_names
from tzrec.data.samplers.base import HARD_NEG_INDICES, build_sampler_input
from tzrec.data.samplers.candidates import (
    CAND_POS_LENGTHS,
    append_shared_negatives,
    deal_negatives,
)

logger = logging.getLogger(__name__)


class NegativeJoin:
    """A configured sampler bound to a dataset's features and columns.

    Args:
        sampler: the sampler (its ``attr_fields`` already mapped to column names).
        columns: input columns the sampler needs (item id, user id, attributes).
        candidate: for a sequence ``item_id_field``: the candidate sequence's ``name``,
            ``delim``, ``max_len`` and the ``attrs`` that are sequence columns; else ``None``.
        name: the sampler's ``DataConfig`` oneof name (for messages).
        label_fields: the label columns (for a sampler that lays out whole rows).
    """

    def __init__(
        self,
        sampler: Any,
        columns: list[str],
        candidate: dict | None,
        name: str = "sampler",
        label_fields: list[str] | None = None,
    ) -> None:
        self.name = name
        self.sampler = sampler
        self.columns = columns
        self.candidate = candidate
        self.label_fields = list(label_fields or [])
        self._warned = False

    @property
    def expands_rows(self) -> bool:
        """The sampler lays out whole rows (TDM): every column grows, labels included."""
        return bool(getattr(self.sampler, "expands_rows", False))

    def set_seed(self, seed: int) -> None:
        """Reseed the sampler (each shard and epoch draws its own negatives)."""
        self.sampler.set_seed(seed)

    def apply(self, columns: dict[str, pa.Array]) -> dict[str, torch.Tensor]:
        """Sample negatives for one batch and join them into ``columns`` (in place).

        Returns:
            extra tensors for ``Batch.additional_infos`` (``hard_neg_indices``).
        """
        self._check_positives(columns)
        if self.expands_rows:
            return self.sampler.expand_batch(columns, self.label_fields)
        if self.candidate is not None:
            return self._join_candidates(columns)
        sampler = self.sampler
        inputs, _ = build_sampler_input(
            columns, sampler.item_id_field, sampler.user_id_field, sampler.item_id_delim
        )
        sampled = sampler.get(inputs)
        infos: dict[str, torch.Tensor] = {}
        hard = sampled.pop(HARD_NEG_INDICES, None)
        if hard is not None:
            infos[HARD_NEG_INDICES] = torch.from_numpy(np.asarray(hard, dtype=np.int64))
        for name, neg in sampled.items():
            if name not in columns:
                continue
            base = columns[name]
            columns[name] = pa.concat_arrays([base, _cast_like(neg, base.type)])
        return infos

    def _check_positives(self, columns: dict[str, pa.Array]) -> None:
        """Every row needs its positive item(s): an empty ``item_id_field`` cell is a bad row."""
        field = self.sampler.item_id_field
        arr = au.combine(columns[field])
        if au.is_stringlike(arr.type):
            arr = au.empty_to_null(arr)
        if au.is_listlike(arr.type):
            empty = pc.equal(pc.list_value_length(arr).fill_null(0), 0)
        else:
            empty = arr.is_null()
        if pc.any(empty).as_py():
            rows = np.nonzero(empty.to_numpy(zero_copy_only=False))[0]
            what = "a candidate item" if self.candidate is not None else "an item id"
            raise au.BadRows(
                rows,
                field,
                f"{self.name}.item_id_field",
                f"expected {what} to sample negatives for, got an empty cell",
            )

    def _join_candidates(self, columns: dict[str, pa.Array]) -> dict[str, torch.Tensor]:
        """Upstream's HSTU layout: positives in their rows, the shared negatives after them.

        Every row keeps its (most recent ``sequence_length``) positives; the batch's
        ``num_sample`` simple negatives and then the hard negatives are dealt into the
        rows' free slots in order, so the candidate values are ``[pos(Q), simple(M),
        hard(H)]`` once a model takes the positives (``cand_pos_lengths`` per row) out.

        Returns:
            ``cand_pos_lengths`` (B,) and, for hard-negative samplers, ``hard_neg_indices``
            ((query, offset) of each hard negative; queries are the flattened positives).

        Raises:
            ConfigError: the negatives do not fit in the rows' free ``sequence_length`` slots.
        """
        sampler, cand = self.sampler, self.candidate
        field, max_len = sampler.item_id_field, cand["max_len"] or None
        pos_lists = au.to_list_array(columns[field], cand["delim"])
        off = au.list_offsets(pos_lists)
        idx, pos_len = au.tail_ranges(off, max_len)
        flat = au.list_values(pos_lists)
        if idx is not None:
            flat = flat.take(pa.array(idx))
        inputs = {field: flat}
        if sampler.user_id_field:
            rows = np.repeat(np.arange(len(pos_len), dtype=np.int64), pos_len)
            users = au.combine(columns[sampler.user_id_field])
            inputs[sampler.user_id_field] = users.take(pa.array(rows))
        sampled = sampler.get(inputs)
        hard = sampled.pop(HARD_NEG_INDICES, None)
        num_neg = len(next(iter(sampled.values()))) if sampled else 0
        counts = deal_negatives(pos_len, num_neg, max_len)
        if counts is None:  # a short batch: fewer free slots than negatives
            free = int(np.maximum(max_len - np.minimum(pos_len, max_len), 0).sum())
            n_hard = 0 if hard is None else len(hard)
            if free < n_hard or free == 0:
                raise ConfigError(
                    f"{self.name}: {num_neg} sampled negatives ({n_hard} hard) do not fit in "
                    f"the {free} free candidate slots of this batch ('{cand['name']}' "
                    f"sequence_length {max_len}, {len(pos_len)} rows); raise sequence_length"
                )
            keep = np.r_[np.arange(free - n_hard), np.arange(num_neg - n_hard, num_neg)]
            if not self._warned:
                logger.warning(
                    "%s: a batch of %d rows has %d free slots in '%s' (sequence_length %d) "
                    "for %d negatives; it uses %d simple negatives",
                    self.name,
                    len(pos_len),
                    free,
                    cand["name"],
                    max_len,
                    num_neg,
                    free - n_hard,
                )
                self._warned = True
            sampled = {k: v.take(pa.array(keep)) for k, v in sampled.items()}
            counts = deal_negatives(pos_len, free, max_len)
        for attr in cand["attrs"]:
            if attr not in sampled:
                continue
            columns[attr] = append_shared_negatives(
                columns[attr], sampled[attr], counts, cand["delim"], max_len
            )
        infos = {CAND_POS_LENGTHS: torch.from_numpy(np.asarray(pos_len, dtype=np.int64))}
        if hard is not None:
            infos[HARD_NEG_INDICES] = torch.from_numpy(np.asarray(hard, dtype=np.int64))
        return infos


def build_negative_join(
    data_config: Any,
    features: list[BaseFeature],
    column_names: list[str] | None,
    schema: pa.Schema | None,
    batch_size: int,
    is_training: bool,
) -> NegativeJoin | None:
    """The configured sampler of ``data_config`` joined to ``features`` (``None``: no sampler).

    ``column_names`` are the data's columns, ``schema`` their types when the reader knows
    them (sampled attributes are typed like the columns they extend).

    A bare attribute name (``video_id``) of a candidate-sequence sampler reads the
    sequence's column (``cand_seq__video_id``) when the data has no such bare column.

    Raises:
        ConfigError: the features were not created from this ``data_config`` (their
            ``is_neg`` disagrees with the sampler's ``attr_fields``).
    """
    chosen = which_oneof(data_config, "sampler")
    if chosen is None:
        return None
    name, cfg = chosen
    check_negative_features(features, data_config, name)
    from tzrec.core.plugins import get

    cls = get("samplers", name, provided_by(data_config, name))
    cfg = copy.deepcopy(cfg)
    item_field = cfg.item_id_field
    names = set(column_names or [])
    cand_feat = candidate_feature(features, item_field)
    candidate = None
    bare_names: dict[str, str] = {}
    if cand_feat is not None:
        prefix = cand_feat.grouped_sequence_prefix
        if not item_field.startswith(prefix):
            prefix = ""
        seq_inputs = {
            f.input_name
            for f in features
            if f.is_sequence
            and f.input_name.startswith(prefix)
            and (not prefix or f.sequence_name == cand_feat.sequence_name)
        }
        attrs = []
        for a in cfg.attr_fields:
            if prefix and a not in names and a not in seq_inputs and prefix + a in seq_inputs:
                bare_names[prefix + a] = a
                a = prefix + a
            attrs.append(a)
        del cfg.attr_fields[:]
        cfg.attr_fields.extend(attrs)
        candidate = {
            "max_len": cand_feat.sequence_length,
            "name": cand_feat.sequence_name or cand_feat.name,
            "delim": cand_feat.sequence_delim,
            "attrs": [a for a in attrs if a in seq_inputs],
        }
    fields = [schema.field(a) for a in cfg.attr_fields if schema is not None and a in schema.names]
    sampler = cls(
        cfg,
        fields,
        batch_size,
        is_training=is_training,
        multival_sep=getattr(data_config, "fg_encoded_multival_sep", "\x03"),
    )
    # an item table may store a candidate attribute under its bare name (``video_id``)
    sampler.table_columns.update(bare_names)
    columns = [item_field]
    user_field = getattr(cfg, "user_id_field", "")
    if user_field:
        columns.append(user_field)
    columns += [a for a in cfg.attr_fields if a in names and a not in columns]
    return NegativeJoin(sampler, columns, candidate, name, list(data_config.label_fields))


def check_negative_features(features: list[BaseFeature], data_config: Any, name: str) -> None:
    """Refuse features whose ``is_neg`` was not derived from this sampler config."""
    want = negative_feature_names(features, data_config)
    for f in features:
        if f.is_neg != (f.name in want):
            state = "is" if f.is_neg else "is not"
            raise ConfigError(
                f"feature '{f.name}' {state} marked as a sampled-negative feature, but "
                f"data_config.{name}.attr_fields say otherwise; build the features with "
                "create_features(feature_configs, data_config) from the same data_config"
            )


def _cast_like(neg: pa.Array, t: pa.DataType) -> pa.Array:
    """Sampled attribute values typed like the batch column they extend."""
    if neg.type == t:
        return neg
    if au.is_listlike(t) and au.is_stringlike(neg.type):
        raise DataError(f"sampled attribute of type {neg.type} cannot join a {t} column")
    try:
        return neg.cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise DataError(f"sampled attribute values do not fit column type {t}: {err}") from None


__all__ = ["NegativeJoin", "build_negative_join", "check_negative_features"]
