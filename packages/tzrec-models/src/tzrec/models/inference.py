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
``torch.jit.script`` compiles it. A sequence-type group with no sequence feature (a scalar
export view, e.g. HSTUMatch's item tower) outputs only ``<group>.query``.
"""

from collections.abc import Mapping, Sequence
from typing import Dict, List, Optional, Tuple  # TorchScript reads these, not PEP 585/604

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.core.errors import ConfigError
from tzrec.data import BaseFeature, Batch
from tzrec.models.embedding import WIDE_SUFFIX, EmbeddingGroup, group_features
from tzrec.protos import model_pb2

_WIDE, _SEQUENCE, _JAGGED = (
    int(model_pb2.WIDE),
    int(model_pb2.SEQUENCE),
    int(model_pb2.JAGGED_SEQUENCE),
)


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


class InferenceEmbeddingGroup(nn.Module):
    """Plain-torch, TorchScript-compilable twin of an ``EmbeddingGroup`` (module doc).

    Args:
        features: the features of ``feature_groups`` (a scalar view may differ from training).
        feature_groups: the groups to embed.
        tables: trained weights by table name (:meth:`tables_of`).
        wide_embedding_dim: unused beyond validation; WIDE tables carry their own width.
    """

    __jit_ignored_attributes__ = ["input_features"]
    tables: Dict[str, torch.Tensor]
    pooled: List[Tuple[str, str, str, int, bool]]
    jagged: List[Tuple[str, str]]
    dense: List[str]
    seq_dense: List[str]
    groups: List[Tuple[str, int, List[str], List[str]]]

    def __init__(
        self,
        features: Sequence[BaseFeature],
        feature_groups: Sequence[model_pb2.FeatureGroupConfig],
        tables: Mapping[str, torch.Tensor],
    ) -> None:
        super().__init__()
        by_name = {f.name: f for f in features}
        self.input_features: list[BaseFeature] = []
        pooled: dict[str, tuple[str, str, str, int, bool]] = {}
        jagged: dict[str, tuple[str, str]] = {}
        dense: list[str] = []
        seq_dense: list[str] = []
        groups: list[tuple[str, int, list[str], list[str]]] = []
        used: dict[str, torch.Tensor] = {}

        def table(name: str, feature: str) -> str:
            if name not in tables:
                raise ConfigError(
                    f"feature '{feature}': embedding '{name}' is not among the trained tables "
                    f"({', '.join(sorted(tables))})"
                )
            used[name] = tables[name].detach().to(torch.float32).contiguous()
            return name

        seen: set[str] = set()
        for group in feature_groups:
            names = [f.name for f in group_features(group, by_name)]
            query: list[str] = []
            sequence: list[str] = []
            gtype = int(group.group_type)
            for n in names:
                f = by_name[n]
                if n not in seen:
                    seen.add(n)
                    self.input_features.append(f)
                if gtype == _WIDE:
                    key = f"{n}{WIDE_SUFFIX}"
                    pooled[key] = (key, n, table(f"{f.embedding_name}{WIDE_SUFFIX}", n), 0, False)
                    query.append(key)
                elif f.is_sequence and gtype in (_SEQUENCE, _JAGGED):
                    if f.is_sparse:
                        jagged[n] = (n, table(f.embedding_name, n))
                    elif n not in seq_dense:
                        seq_dense.append(n)
                    sequence.append(n)
                elif f.is_sequence:
                    raise ConfigError(
                        f"feature group '{group.group_name}' is "
                        f"{model_pb2.FeatureGroupType.Name(gtype)} but has sequence feature "
                        f"'{n}'; use group_type SEQUENCE or JAGGED_SEQUENCE"
                    )
                else:
                    if f.is_sparse:
                        mode = 1 if f.pooling.upper() == "MEAN" else 0
                        pooled[n] = (n, n, table(f.embedding_name, n), mode, f.is_weighted)
                    elif n not in dense:
                        dense.append(n)
                    query.append(n)
            layout = 2 if gtype == _JAGGED else 1 if gtype == _SEQUENCE else 0
            groups.append((group.group_name, layout, query, sequence))
        self.tables = used
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
            for coll in (impl.ebc, impl.wide_ebc):
                if coll is not None:
                    for name, bag in coll.embedding_bags.items():
                        out[name] = bag.weight
            if impl.ec is not None:
                for name, emb in impl.ec.embeddings.items():
                    out[name] = emb.weight
        return out

    @classmethod
    def from_embedding_group(
        cls,
        embedding_group: EmbeddingGroup,
        features: Sequence[BaseFeature],
        feature_groups: Sequence[model_pb2.FeatureGroupConfig],
    ) -> "InferenceEmbeddingGroup":
        """Serving twin of ``embedding_group`` restricted to ``feature_groups``."""
        return cls(features, feature_groups, cls.tables_of(embedding_group))

    def input_names(self) -> list[str]:
        """The feature tensors ``forward`` reads."""
        return [n for f in self.input_features for n in feature_tensor_names(f)]

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
            out = F.embedding_bag(
                values.to(torch.int64),
                self.tables[name],
                _offsets(lengths),
                mode="mean" if mode == 1 else "sum",
                per_sample_weights=weights,
                include_last_offset=True,
            )
            emb[key] = out
        for feature, name in self.jagged:
            seq[feature] = F.embedding(
                inputs[feature + ".values"].to(torch.int64), self.tables[name]
            )
            seq_len[feature] = inputs[feature + ".lengths"].to(torch.int64)
        for feature in self.dense:
            value = inputs[feature].to(torch.float32)
            emb[feature] = value.unsqueeze(1) if value.dim() == 1 else value
        for feature in self.seq_dense:
            value = inputs[feature + ".values"].to(torch.float32)
            seq[feature] = value.unsqueeze(1) if value.dim() == 1 else value
            seq_len[feature] = inputs[feature + ".lengths"].to(torch.int64)
        result: Dict[str, torch.Tensor] = {}
        # layout: 0 flat (DEEP/WIDE), 1 padded sequence, 2 jagged sequence
        for group, layout, query, sequence in self.groups:
            if layout == 0:
                result[group] = torch.cat([emb[q] for q in query], dim=1)
                continue
            if len(query) > 0:
                result[group + ".query"] = torch.cat([emb[q] for q in query], dim=1)
            if len(sequence) == 0:
                continue
            values = torch.cat([seq[s] for s in sequence], dim=1)
            lengths = seq_len[sequence[0]]
            result[group + ".sequence_length"] = lengths
            if layout == 2:
                result[group + ".sequence"] = values
            else:
                result[group + ".sequence"] = _pad(values, lengths)
        return result
