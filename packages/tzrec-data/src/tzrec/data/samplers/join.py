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
from tzrec.data.samplers.candidates import combine_neg_as_candidate_sequence

logger = logging.getLogger(__name__)


class NegativeJoin:
    """A configured sampler bound to a dataset's features and columns.

    Args:
        sampler: the sampler (its ``attr_fields`` already mapped to column names).
        columns: input columns the sampler needs (item id, user id, attributes).
        candidate: for a sequence ``item_id_field``: the candidate sequence's ``name``,
            ``delim``, ``max_len`` and the ``attrs`` that are sequence columns; else ``None``.
    """

    def __init__(self, sampler: Any, columns: list[str], candidate: dict | None) -> None:
        self.sampler = sampler
        self.columns = columns
        self.candidate = candidate
        self._warned = False

    def set_seed(self, seed: int) -> None:
        """Reseed the sampler (each shard and epoch draws its own negatives)."""
        self.sampler.set_seed(seed)

    def apply(self, columns: dict[str, pa.Array]) -> dict[str, torch.Tensor]:
        """Sample negatives for one batch and join them into ``columns`` (in place).

        Returns:
            extra tensors for ``Batch.additional_infos`` (``hard_neg_indices``).
        """
        if self.candidate is not None:
            self._join_candidates(columns)
            return {}
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

    def _join_candidates(self, columns: dict[str, pa.Array]) -> None:
        """Each positive of a row's candidate sequence is followed by its negatives."""
        sampler, cand = self.sampler, self.candidate
        inputs, pos_lists = build_sampler_input(
            columns, sampler.item_id_field, sampler.user_id_field, cand["delim"]
        )
        num_pos = len(inputs[sampler.item_id_field])
        per_pos = max(1, -(-sampler.num_sample // max(num_pos, 1)))
        max_len = cand["max_len"]
        if max_len and num_pos:
            longest = max(int(pc.max(pc.list_value_length(pos_lists)).as_py() or 0), 1)
            fit = max_len // longest - 1
            if fit < 1:
                raise ConfigError(
                    f"negative_sampler: a row with {longest} positives needs at least "
                    f"{2 * longest} candidate items, but '{cand['name']}' keeps only "
                    f"sequence_length {max_len}; truncation would drop positives"
                )
            if per_pos > fit:
                if not self._warned:
                    logger.warning(
                        "negative_sampler: %d negatives per positive would not fit "
                        "sequence_length %d of '%s' (a small batch spreads num_sample %d "
                        "over %d positives); using %d",
                        per_pos,
                        max_len,
                        cand["name"],
                        sampler.num_sample,
                        num_pos,
                        fit,
                    )
                    self._warned = True
                per_pos = fit
        sampled = sampler.get(inputs, num_sample=num_pos * per_pos, exact=True)
        sampled.pop(HARD_NEG_INDICES, None)
        for attr in cand["attrs"]:
            if attr not in sampled:
                continue
            pos = (
                pos_lists
                if attr == sampler.item_id_field
                else au.to_list_array(columns[attr], cand["delim"])
            )
            columns[attr] = combine_neg_as_candidate_sequence(
                pos, sampled[attr], per_pos, cand["delim"]
            )


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
    return NegativeJoin(sampler, columns, candidate)


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
