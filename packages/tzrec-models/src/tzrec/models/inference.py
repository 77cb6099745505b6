"""Serving-side embedding lookups: flat feature tensors in, grouped embeddings out.

An exported model reads one flat ``dict[str, Tensor]`` ("feature tensors") instead of a
``Batch`` of torchrec containers, so it can be TorchScript-saved and served without tzrec:

- id feature ``f``: ``f.values`` int64 ``(nnz,)`` and ``f.lengths`` int64 ``(B,)`` (ids per
  row; for sequence features, items per row), plus ``f.weights`` float ``(nnz,)`` when the
  feature is weighted;
- raw feature ``f``: ``f`` float32 ``(B, value_dim)``;
- raw sequence feature ``f``: ``f.values`` float32 ``(N, value_dim)`` and ``f.lengths``.

:class:`InferenceEmbeddingGroup` computes exactly what
:class:`~tzrec.models.embedding.EmbeddingGroup` computes for the same rows (same output
keys and shapes), with plain ``torch`` lookups over the trained tables, and is written so
``torch.jit.script`` compiles it. Both read one
:class:`~tzrec.models.layout.GroupLayout` (keys, widths, which table each feature reads).
A sequence-type group with no sequence feature (a scalar
export view, e.g. HSTUMatch's item tower) outputs only ``<group>.query``.
"""

from collections.abc import Mapping, Sequence
from typing import Dict, List, Optional, Tuple  # TorchScript reads these, not PEP 585/604

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.core.errors import ConfigError
from tzrec.data import BaseFeature, Batch
from tzrec.models.embedding import EmbeddingGroup, mch_modules
from tzrec.models.layout import (
    GroupLayout,
    group_features,
    query_key,
    sequence_key,
    sequence_length_key,
)
from tzrec.protos import model_pb2


def feature_tensor_names(feature: BaseFeature) -> list[str]:
    """The input tensor names one feature contributes (see module doc)."""
    if feature.is_sparse:
        names = [f"{feature.name}.values", f"{feature.name}.lengths"]
        if feature.is_weighted:
            names.append(f"{feature.name}.weights")
        return names
    if feature.is_sequence:
        return [f"{feature.name}.values", f"{feature.name}.lengths"]
    return [feature.name]


def inputs_from_batch(batch: Batch, features: Sequence[BaseFeature]) -> dict[str, torch.Tensor]:
    """The feature tensors of ``features`` taken from a reader's ``Batch``.

    Raises:
        ConfigError: a feature the batch does not carry.
    """
    out: dict[str, torch.Tensor] = {}
    sparse = {dg: kjt.to_dict() for dg, kjt in batch.sparse_features.items()}
    dense = {dg: kt.to_dict() for dg, kt in batch.dense_features.items()}
    for f in features:
        if f.is_sparse:
            jt = sparse.get(f.data_group, {}).get(f.name)
            if jt is None:
                raise ConfigError(f"the batch has no ids for feature '{f.name}'")
            out[f"{f.name}.values"] = jt.values().to(torch.int64)
            out[f"{f.name}.lengths"] = jt.lengths().to(torch.int64)
            if f.is_weighted:
                weights = jt.weights_or_none()
                out[f"{f.name}.weights"] = (
                    weights.to(torch.float32)
                    if weights is not None
                    else torch.ones(jt.values().numel())
                )
        elif f.is_sequence:
            jt = batch.sequence_dense_features.get(f.name)
            if jt is None:
                raise ConfigError(f"the batch has no values for sequence feature '{f.name}'")
            values = jt.values().to(torch.float32)
            out[f"{f.name}.values"] = values.unsqueeze(1) if values.dim() == 1 else values
            out[f"{f.name}.lengths"] = jt.lengths().to(torch.int64)
        else:
            value = dense.get(f.data_group, {}).get(f.name)
            if value is None:
                raise ConfigError(f"the batch has no values for feature '{f.name}'")
            out[f.name] = value.to(torch.float32)
    return out


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros(1, dtype=torch.int64, device=lengths.device)
    return torch.cat([zero, torch.cumsum(lengths.to(torch.int64), 0)])


def _pad(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N, D) jagged -> (B, max(1, max length), D) zero-padded."""
    batch = lengths.shape[0]
    max_len = 1
    if batch > 0:
        max_len = max(int(lengths.max()), 1)
    offsets = _offsets(lengths)
    rows = torch.repeat_interleave(torch.arange(batch, device=values.device), lengths)
    pos = torch.arange(values.shape[0], device=values.device) - offsets[rows]
    out = torch.zeros(batch, max_len, values.shape[1], dtype=values.dtype, device=values.device)
    out[rows, pos] = values
    return out


#: serving table storage (upstream's QUANT_EMB / QUANT_EC_EMB values we implement)
QUANT_TYPES = ("FP32", "FP16", "INT8")


def quant_types_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(pooled, sequence)`` table storage for serving, from ``QUANT_EMB`` / ``QUANT_EC_EMB``.

    As upstream: ``QUANT_EMB`` unset or ``1`` means INT8, a value starting with ``0`` keeps
    FP32, else it names the type; ``QUANT_EC_EMB`` (tables read per sequence item) is off
    unless set. INT8 is row-wise: each row stored as uint8 with its own float32 scale and
    bias (``scale = (max - min) / 255``), so a looked-up value is within ``scale / 2`` of
    the trained one.

    Raises:
        ConfigError: a type other than FP32, FP16, INT8 (upstream's INT4/INT2 included).
    """
    import os

    env = os.environ if environ is None else environ

    def parse(name: str, default: str) -> str:
        value = env.get(name, default).strip().upper() or default
        if value.startswith("0"):
            return "FP32"
        value = "INT8" if value == "1" else value
        if value not in QUANT_TYPES:
            raise ConfigError(
                f"{name}={env.get(name)!r} is not supported; use one of "
                f"{', '.join(QUANT_TYPES)} (or 0 to keep FP32)"
            )
        return value

    return parse("QUANT_EMB", "INT8"), parse("QUANT_EC_EMB", "0")


def _quantize(weight: torch.Tensor, quant: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(stored rows, scale, bias)`` of a float32 table (scale/bias empty unless INT8)."""
    empty = torch.zeros(0)
    if quant == "FP16":
        return weight.to(torch.float16).contiguous(), empty, empty
    if quant != "INT8":
        return weight, empty, empty
    low = weight.min(dim=1, keepdim=True).values
    high = weight.max(dim=1, keepdim=True).values
    scale = ((high - low) / 255.0).clamp_min(1e-12)
    q = torch.round((weight - low) / scale).clamp(0, 255).to(torch.uint8)
    return q.contiguous(), scale.squeeze(1).contiguous(), low.squeeze(1).contiguous()


class InferenceEmbeddingGroup(nn.Module):
    """Plain-torch, TorchScript-compilable twin of an ``EmbeddingGroup`` (module doc).

    Args:
        features: the features of ``feature_groups`` (a scalar view may differ from training).
        feature_groups: the groups to embed.
        tables: trained weights by table name (:meth:`tables_of`).
        wide_embedding_dim: the training group's WIDE width (the layout's widths).
    """

    __jit_ignored_attributes__ = ["input_features", "layout"]
    tables: Dict[str, torch.Tensor]
    scales: Dict[str, torch.Tensor]
    biases: Dict[str, torch.Tensor]
    quant: Dict[str, str]
    mc_sorted: Dict[str, torch.Tensor]
    mc_rows: Dict[str, torch.Tensor]
    pooled: List[Tuple[str, str, str, int, bool]]
    jagged: List[Tuple[str, str, str]]
    dense: List[str]
    seq_dense: List[str]
    groups: List[Tuple[int, List[str], List[str], List[str]]]

    def __init__(
        self,
        features: Sequence[BaseFeature],
        feature_groups: Sequence[model_pb2.FeatureGroupConfig],
        tables: Mapping[str, torch.Tensor],
        wide_embedding_dim: int = 4,
        remaps: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        quant: tuple[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.layout = GroupLayout(features, feature_groups, wide_embedding_dim, serving_view=True)
        by_name = {f.name: f for f in features}
        self.input_features: list[BaseFeature] = list(
            {f.name: f for g in feature_groups for f in group_features(g, by_name)}.values()
        )
        missing = sorted(set(self.layout.tables) - set(tables))
        if missing:
            users = self.layout.tables[missing[0]].features
            raise ConfigError(
                f"feature '{users[0].name}': embedding '{missing[0]}' is not among the trained "
                f"tables ({', '.join(sorted(tables))})"
            )
        # serving storage per table: QUANT_EMB for pooled tables, QUANT_EC_EMB for tables
        # a sequence position reads (see quant_types_from_env)
        quant_pooled, quant_seq = quant if quant is not None else ("FP32", "FP32")
        self.quant: Dict[str, str] = {}
        self.tables = {}
        self.scales: Dict[str, torch.Tensor] = {}
        self.biases: Dict[str, torch.Tensor] = {}
        for n, t in self.layout.tables.items():
            kind = quant_seq if t.sequence else quant_pooled
            stored, scale, bias = _quantize(tables[n].detach().to(torch.float32), kind)
            self.quant[n] = kind
            self.tables[n] = stored.contiguous()
            self.scales[n] = scale
            self.biases[n] = bias
        # zch tables: ids remapped exactly as torchrec's MCH module remaps them (a raw id
        # found in the sorted table gets its row, any other id the last row)
        remaps = remaps or {}
        zch = [n for n, t in self.layout.tables.items() if t.zch is not None]
        lacking = [n for n in zch if n not in remaps]
        if lacking:
            raise ConfigError(
                f"embedding '{lacking[0]}' uses zch but its managed-collision state was not "
                "given (build the serving lookups with from_embedding_group)"
            )
        self.mc_sorted = {n: remaps[n][0].detach().to(torch.int64).contiguous() for n in zch}
        self.mc_rows = {n: remaps[n][1].detach().to(torch.int64).contiguous() for n in zch}
        pooled: dict[str, tuple[str, str, str, int, bool]] = {}
        jagged: dict[str, tuple[str, str, str]] = {}
        dense: list[str] = []
        seq_dense: list[str] = []
        for slot in self.layout.slots(("query",)):
            f = slot.feature
            if slot.table is None:
                if f.name not in dense:
                    dense.append(f.name)
                continue
            mode = 1 if f.pooling.upper() == "MEAN" else 0
            pooled[slot.key] = (slot.key, f.name, slot.table, mode, f.is_weighted)
        for slot in self.layout.slots(("sequence",)):
            f = slot.feature
            if slot.table is None:
                if f.name not in seq_dense:
                    seq_dense.append(f.name)
            else:
                jagged[slot.key] = (slot.key, f.name, slot.table)
        # per group: layout (0 flat, 1 padded sequence, 2 jagged sequence), output keys
        # (flat or query, sequence, sequence_length), query and sequence lookup keys
        groups: list[tuple[int, list[str], list[str], list[str]]] = []
        for spec in self.layout.specs():
            kind = 2 if spec.jagged else 1 if spec.is_sequence else 0
            keys = (
                [query_key(spec.name), sequence_key(spec.name), sequence_length_key(spec.name)]
                if spec.is_sequence
                else [spec.name]
            )
            groups.append((kind, keys, [s.key for s in spec.query], [s.key for s in spec.sequence]))
        self.pooled = list(pooled.values())
        self.jagged = list(jagged.values())
        self.dense = dense
        self.seq_dense = seq_dense
        self.groups = groups

    @staticmethod
    def tables_of(embedding_group: EmbeddingGroup) -> dict[str, torch.Tensor]:
        """Trained weights of every table of an (unsharded) ``EmbeddingGroup``, by name."""
        out: dict[str, torch.Tensor] = {}
        for impl in embedding_group.impls.values():
            for coll in (impl.ebc, impl.wide_ebc, impl.weighted_ebc):
                if coll is not None:
                    for name, bag in coll.embedding_bags.items():
                        out[name] = bag.weight
            for coll in impl.ec.values():
                for name, emb in coll.embeddings.items():
                    out[name] = emb.weight
            if impl.mc_ebc is not None:
                for name, bag in impl.mc_ebc._embedding_module.embedding_bags.items():
                    out[name] = bag.weight
            for coll in impl.mc_ec.values():
                for name, emb in coll._embedding_module.embeddings.items():
                    out[name] = emb.weight
        return out

    @staticmethod
    def remaps_of(embedding_group: EmbeddingGroup) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``(sorted raw ids, row of each)`` of every zch table's managed-collision module."""
        return {
            name: (m._mch_sorted_raw_ids, m._mch_remapped_ids_mapping)
            for name, m in mch_modules(embedding_group).items()
        }

    @classmethod
    def from_embedding_group(
        cls,
        embedding_group: EmbeddingGroup,
        features: Sequence[BaseFeature],
        feature_groups: Sequence[model_pb2.FeatureGroupConfig],
        quant: tuple[str, str] | None = None,
    ) -> "InferenceEmbeddingGroup":
        """Serving twin of ``embedding_group`` restricted to ``feature_groups``.

        ``quant``: ``(pooled, sequence)`` table storage (``quant_types_from_env()`` reads
        upstream's QUANT_EMB / QUANT_EC_EMB); None keeps FP32 (exact parity).
        """
        return cls(
            features,
            feature_groups,
            cls.tables_of(embedding_group),
            embedding_group.layout.wide_dim,
            cls.remaps_of(embedding_group),
            quant,
        )

    def input_names(self) -> list[str]:
        """The feature tensors ``forward`` reads."""
        return [n for f in self.input_features for n in feature_tensor_names(f)]

    def _rows(self, ids: torch.Tensor, table: str) -> torch.Tensor:
        """Float32 rows ``ids`` of ``table`` (dequantized when stored FP16 / INT8)."""
        rows = F.embedding(ids, self.tables[table])
        kind = self.quant[table]
        if kind == "INT8":
            scale = F.embedding(ids, self.scales[table].unsqueeze(1))
            bias = F.embedding(ids, self.biases[table].unsqueeze(1))
            return rows.to(torch.float32) * scale + bias
        return rows.to(torch.float32)

    def _ids(self, values: torch.Tensor, table: str) -> torch.Tensor:
        """Table rows of ``values``: the ids, or their zch remapping."""
        ids = values.to(torch.int64)
        if table not in self.mc_sorted:
            return ids
        sorted_raw = self.mc_sorted[table]
        rows = self.mc_rows[table]
        pos = torch.searchsorted(sorted_raw[:-1], ids)
        found = sorted_raw[pos] == ids
        return torch.where(found, rows[pos], torch.full_like(ids, rows.shape[0] - 1))

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Grouped embeddings, keyed like ``EmbeddingGroup``'s output."""
        emb: Dict[str, torch.Tensor] = {}
        seq: Dict[str, torch.Tensor] = {}
        seq_len: Dict[str, torch.Tensor] = {}
        for key, feature, name, mode, weighted in self.pooled:
            values = inputs[feature + ".values"]
            lengths = inputs[feature + ".lengths"]
            weights: Optional[torch.Tensor] = None
            if weighted:
                weights = inputs[feature + ".weights"].to(torch.float32)
            ids = self._ids(values, name)
            if self.quant[name] != "FP32":  # dequantize the rows read, then pool them
                table = self._rows(ids, name)
                ids = torch.arange(ids.shape[0], device=ids.device)
            else:
                table = self.tables[name]
            out = F.embedding_bag(
                ids,
                table,
                _offsets(lengths),
                mode="mean" if mode == 1 else "sum",
                per_sample_weights=weights,
                include_last_offset=True,
            )
            emb[key] = out
        for key, feature, name in self.jagged:
            seq[key] = self._rows(self._ids(inputs[feature + ".values"], name), name)
            seq_len[key] = inputs[feature + ".lengths"].to(torch.int64)
        for feature in self.dense:
            value = inputs[feature].to(torch.float32)
            emb[feature] = value.unsqueeze(1) if value.dim() == 1 else value
        for feature in self.seq_dense:
            value = inputs[feature + ".values"].to(torch.float32)
            seq[feature] = value.unsqueeze(1) if value.dim() == 1 else value
            seq_len[feature] = inputs[feature + ".lengths"].to(torch.int64)
        result: Dict[str, torch.Tensor] = {}
        for kind, keys, query, sequence in self.groups:
            if kind == 0:
                if len(query) > 0:  # else: sequence_groups only (the encoders make it)
                    result[keys[0]] = torch.cat([emb[q] for q in query], dim=1)
                continue
            if len(query) > 0:
                result[keys[0]] = torch.cat([emb[q] for q in query], dim=1)
            if len(sequence) == 0:
                continue
            values = torch.cat([seq[s] for s in sequence], dim=1)
            lengths = seq_len[sequence[0]]
            result[keys[2]] = lengths
            result[keys[1]] = values if kind == 2 else _pad(values, lengths)
        return result
