"""Embedding groups: turn a ``Batch`` into one tensor (or sequence) per feature group.

Tables live in torchrec modules so ``DistributedModelParallel`` can shard them:
``EmbeddingBagCollection`` for tables only pooled features use, ``EmbeddingCollection``
for tables any sequence feature uses (pooled lookups of such a shared table are pooled
here). Features sharing an ``embedding_name`` share one table. Rows of the batch and rows
of sampled negatives (data groups ``__BASE__`` / ``__NEG__``) have different batch sizes,
so each data group has its own modules.

Outputs, by group type (``B`` rows of the group's data group):

- DEEP: ``out[group]`` ``(B, D)``: pooled embeddings and raw values, concatenated in the
  group's feature order;
- WIDE: ``out[group]`` ``(B, n * wide_embedding_dim)``: each feature looked up in its own
  narrow table ``<embedding_name>_wide`` (separate from its DEEP table);
- SEQUENCE: ``out["<g>.sequence"]`` ``(B, L, Ds)`` zero-padded, ``out["<g>.sequence_length"]``
  ``(B,)`` and, when the group has non-sequence features, ``out["<g>.query"]`` ``(B, Dq)``;
- JAGGED_SEQUENCE: like SEQUENCE but ``"<g>.sequence"`` is jagged ``(sum(lengths), Ds)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    EmbeddingCollection,
    EmbeddingConfig,
    JaggedTensor,
    KeyedJaggedTensor,
    PoolingType,
)

from tzrec.core.errors import ConfigError, DataError
from tzrec.data import BaseFeature, Batch
from tzrec.protos import model_pb2

_SEQUENCE_TYPES = (model_pb2.SEQUENCE, model_pb2.JAGGED_SEQUENCE)


@dataclass
class _Table:
    name: str
    dim: int
    num_embeddings: int
    pooling: str
    features: list[BaseFeature] = field(default_factory=list)
    sequence: bool = False
    wide: bool = False


@dataclass
class _GroupSpec:
    name: str
    group_type: int
    data_group: str
    query: list[BaseFeature]
    sequence: list[BaseFeature]


def group_feature_names(group: model_pb2.FeatureGroupConfig) -> list[str]:
    """A group's feature names, its ``sequence_groups``' included, in config order."""
    names = list(group.feature_names)
    for seq_group in group.sequence_groups:
        names.extend(seq_group.feature_names)
    return names


def group_features(
    group: model_pb2.FeatureGroupConfig, by_name: dict[str, BaseFeature]
) -> list[BaseFeature]:
    """The features of a group, in config order.

    Raises:
        ConfigError: a name that is not a defined feature.
    """
    names = group_feature_names(group)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(
            f"feature group '{group.group_name}': feature(s) {', '.join(missing)} are not "
            "defined in feature_configs"
        )
    return [by_name[n] for n in names]


def _pooling(name: str) -> PoolingType:
    return PoolingType.MEAN if name.upper() == "MEAN" else PoolingType.SUM


WIDE_SUFFIX = "_wide"


def _bag_collection(tables: list[_Table]) -> EmbeddingBagCollection | None:
    if not tables:
        return None
    return EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=t.name,
                embedding_dim=t.dim,
                num_embeddings=t.num_embeddings,
                feature_names=[f.name for f in t.features],
                pooling=_pooling(t.pooling),
            )
            for t in tables
        ]
    )


class _DataGroupEmbedding(nn.Module):
    """The torchrec modules of one data group and how to split its batch KJT between them."""

    def __init__(self, tables: list[_Table]) -> None:
        super().__init__()
        bag_tables = [t for t in tables if not t.sequence and not t.wide]
        wide_tables = [t for t in tables if t.wide]
        seq_tables = [t for t in tables if t.sequence]
        self.bag_keys = [f.name for t in bag_tables for f in t.features]
        self.wide_keys = [f.name for t in wide_tables for f in t.features]
        self.seq_keys = [f.name for t in seq_tables for f in t.features]
        self.ebc = _bag_collection(bag_tables)
        # WIDE groups look the same features up in their own narrow tables
        self.wide_ebc = _bag_collection(wide_tables)
        self.ec = (
            EmbeddingCollection(
                tables=[
                    EmbeddingConfig(
                        name=t.name,
                        embedding_dim=t.dim,
                        num_embeddings=t.num_embeddings,
                        feature_names=[f.name for f in t.features],
                    )
                    for t in seq_tables
                ]
            )
            if seq_tables
            else None
        )

    @staticmethod
    def _select(kjt: KeyedJaggedTensor, keys: list[str]) -> KeyedJaggedTensor:
        if list(kjt.keys()) == keys:
            return kjt
        index = {k: i for i, k in enumerate(kjt.keys())}
        missing = [k for k in keys if k not in index]
        if missing:
            raise ConfigError(f"batch has no ids for feature(s) {', '.join(missing)}")
        return kjt.permute([index[k] for k in keys])

    def forward(
        self, kjt: KeyedJaggedTensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, JaggedTensor]]:
        """Pooled embeddings of bag features and jagged embeddings of the others."""
        pooled: dict[str, torch.Tensor] = {}
        jagged: dict[str, JaggedTensor] = {}
        if self.ebc is not None:
            pooled = self.ebc(self._select(kjt, self.bag_keys)).to_dict()
        if self.wide_ebc is not None:
            wide = self.wide_ebc(self._select(kjt, self.wide_keys)).to_dict()
            pooled.update({f"{k}{WIDE_SUFFIX}": v for k, v in wide.items()})
        if self.ec is not None:
            jagged = self.ec(self._select(kjt, self.seq_keys))
        return pooled, jagged


class EmbeddingGroup(nn.Module):
    """Embeds the features of every feature group of a model config.

    Args:
        features: the features (as resolved by the dataset: ``data_group`` is known).
        feature_groups: the model config's ``feature_groups``.
    """

    def __init__(
        self,
        features: Sequence[BaseFeature],
        feature_groups: Sequence[model_pb2.FeatureGroupConfig],
        wide_embedding_dim: int = 4,
    ) -> None:
        super().__init__()
        self._wide_dim = int(wide_embedding_dim)
        by_name = {f.name: f for f in features}
        self._specs: dict[str, _GroupSpec] = {}
        used: dict[str, BaseFeature] = {}
        sequence_use: set[str] = set()
        for group in feature_groups:
            spec = self._make_spec(group, by_name)
            self._specs[group.group_name] = spec
            if group.group_type == model_pb2.WIDE:
                continue
            for f in spec.query + spec.sequence:
                used[f.name] = f
            if group.group_type in _SEQUENCE_TYPES:
                sequence_use.update(f.embedding_name for f in spec.sequence if f.is_sparse)
        tables = self._make_tables(used.values(), sequence_use)
        wide_features = {
            f.name: f
            for spec in self._specs.values()
            if spec.group_type == model_pb2.WIDE
            for f in spec.query
        }
        for f in wide_features.values():
            if not f.is_sparse:
                raise ConfigError(
                    f"feature '{f.name}' is in a WIDE group but has no ids; WIDE groups take "
                    "id features (or raw features with boundaries)"
                )
            name = f"{f.embedding_name}{WIDE_SUFFIX}"
            table = tables.setdefault(
                name, _Table(name, self._wide_dim, f.num_embeddings, "sum", wide=True)
            )
            table.num_embeddings = max(table.num_embeddings, f.num_embeddings)
            table.features.append(f)
        by_data_group: dict[str, list[_Table]] = defaultdict(list)
        for table in tables.values():
            groups = {f.data_group for f in table.features}
            if len(groups) > 1:
                raise ConfigError(
                    f"embedding '{table.name}' is shared by features of the batch rows and of "
                    f"sampled negatives ({', '.join(f.name for f in table.features)}); give "
                    "them different embedding_name values"
                )
            by_data_group[groups.pop()].append(table)
        self._table_of = {f.name: t for t in tables.values() if not t.wide for f in t.features}
        self.impls = nn.ModuleDict(
            {dg: _DataGroupEmbedding(ts) for dg, ts in sorted(by_data_group.items())}
        )

    # -- construction --------------------------------------------------------------------

    @staticmethod
    def _make_spec(
        group: model_pb2.FeatureGroupConfig, by_name: dict[str, BaseFeature]
    ) -> _GroupSpec:
        feats = group_features(group, by_name)
        if not feats:
            raise ConfigError(f"feature group '{group.group_name}' has no features")
        data_groups = {f.data_group for f in feats}
        if len(data_groups) > 1:
            raise ConfigError(
                f"feature group '{group.group_name}' mixes batch features and sampled-item "
                "features; split it into a user group and an item group"
            )
        query = [f for f in feats if not f.is_sequence]
        sequence = [f for f in feats if f.is_sequence]
        if group.group_type not in _SEQUENCE_TYPES and sequence:
            raise ConfigError(
                f"feature group '{group.group_name}' is "
                f"{model_pb2.FeatureGroupType.Name(group.group_type)} but has sequence feature(s) "
                f"{', '.join(f.name for f in sequence)}; use group_type SEQUENCE or "
                "JAGGED_SEQUENCE"
            )
        if group.group_type in _SEQUENCE_TYPES and not sequence:
            raise ConfigError(
                f"feature group '{group.group_name}' is "
                f"{model_pb2.FeatureGroupType.Name(group.group_type)} but has no sequence feature"
            )
        seq_names = {f.sequence_name or f.name for f in sequence}
        if len(seq_names) > 1 and any(f.is_grouped_sequence for f in sequence):
            raise ConfigError(
                f"feature group '{group.group_name}' mixes sequences "
                f"{', '.join(sorted(seq_names))}; their lengths differ, use one group each"
            )
        return _GroupSpec(group.group_name, group.group_type, data_groups.pop(), query, sequence)

    @staticmethod
    def _make_tables(features, sequence_use: set[str]) -> dict[str, _Table]:
        tables: dict[str, _Table] = {}
        for f in features:
            if not f.is_sparse:
                continue
            name = f.embedding_name
            table = tables.get(name)
            if table is None:
                table = tables[name] = _Table(
                    name,
                    f.embedding_dim,
                    f.num_embeddings,
                    f.pooling,
                    sequence=name in sequence_use,
                )
            elif table.dim != f.embedding_dim:
                first = table.features[0].name
                raise ConfigError(
                    f"embedding '{name}' is shared by '{first}' (embedding_dim {table.dim}) and "
                    f"'{f.name}' (embedding_dim {f.embedding_dim}); shared tables need one dim"
                )
            else:
                table.num_embeddings = max(table.num_embeddings, f.num_embeddings)
            if f.is_sequence:
                table.sequence = True
            table.features.append(f)
        for table in tables.values():
            if table.num_embeddings <= 0:
                raise ConfigError(
                    f"embedding '{table.name}' has no size: set num_buckets, hash_bucket_size, "
                    "vocab_list or vocab_dict on its features"
                )
        return tables

    # -- dimensions ------------------------------------------------------------------------

    def group_names(self) -> list[str]:
        """Feature group names, in config order."""
        return list(self._specs)

    def group_type(self, group: str) -> int:
        """The ``FeatureGroupType`` of a group."""
        return self._spec(group).group_type

    def _spec(self, group: str) -> _GroupSpec:
        if group not in self._specs:
            raise ConfigError(
                f"feature group '{group}' is not defined (groups: {', '.join(self._specs)})"
            )
        return self._specs[group]

    @staticmethod
    def _dim(f: BaseFeature) -> int:
        return f.embedding_dim if f.is_sparse else f.value_dim

    def query_dim(self, group: str) -> int:
        """Width of the pooled part (a DEEP/WIDE group's output; a sequence group's query)."""
        spec = self._spec(group)
        if spec.group_type == model_pb2.WIDE:
            return self._wide_dim * len(spec.query)
        return sum(self._dim(f) for f in spec.query)

    def sequence_dim(self, group: str) -> int:
        """Width of one sequence item of a SEQUENCE/JAGGED_SEQUENCE group."""
        return sum(self._dim(f) for f in self._spec(group).sequence)

    def group_total_dim(self, group: str) -> int:
        """Output width of a DEEP group (query + sequence width for sequence groups)."""
        return self.query_dim(group) + self.sequence_dim(group)

    def data_group(self, group: str) -> str:
        """``__BASE__`` or ``__NEG__``: which rows the group's outputs have."""
        return self._spec(group).data_group

    # -- forward ---------------------------------------------------------------------------

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Embed every group of ``batch``."""
        pooled: dict[str, torch.Tensor] = {}
        jagged: dict[str, JaggedTensor] = {}
        for dg, impl in self.impls.items():
            p, j = impl(batch.sparse_features[dg])
            pooled.update(p)
            jagged.update(j)
        out: dict[str, torch.Tensor] = {}
        for name, spec in self._specs.items():
            query = self._query(spec, batch, pooled, jagged)
            if spec.group_type not in _SEQUENCE_TYPES:
                out[name] = query
                continue
            if spec.query:
                out[f"{name}.query"] = query
            values, lengths = self._sequence(spec, batch, jagged)
            out[f"{name}.sequence_length"] = lengths
            if spec.group_type == model_pb2.JAGGED_SEQUENCE:
                out[f"{name}.sequence"] = values
            else:
                offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
                max_len = int(lengths.max().item()) if lengths.numel() else 0
                out[f"{name}.sequence"] = torch.ops.fbgemm.jagged_to_padded_dense(
                    values, [offsets], [max(max_len, 1)], 0.0
                )
        return out

    def _query(self, spec, batch, pooled, jagged) -> torch.Tensor:
        if spec.group_type == model_pb2.WIDE:
            wide = [pooled[f"{f.name}{WIDE_SUFFIX}"] for f in spec.query]
            return torch.cat(wide, dim=1) if len(wide) > 1 else wide[0]
        parts = []
        for f in spec.query:
            if not f.is_sparse:
                parts.append(batch.dense_features[f.data_group].to_dict()[f.name])
            elif f.name in pooled:
                parts.append(pooled[f.name])
            else:  # a pooled lookup of a table shared with sequences
                jt = jagged[f.name]
                op = "mean" if f.pooling.upper() == "MEAN" else "sum"
                parts.append(
                    torch.segment_reduce(
                        jt.values(), op, lengths=jt.lengths(), unsafe=True, initial=0.0
                    )
                )
        if not parts:
            rows = batch.batch_size
            return torch.zeros(rows, 0)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _sequence(self, spec, batch, jagged) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        lengths = None
        for f in spec.sequence:
            if f.is_sparse:
                jt = jagged[f.name]
                values, seq_lengths = jt.values(), jt.lengths()
                mulval = batch.sequence_mulval_lengths.get(f.data_group)
                if mulval is not None and f.name in mulval.keys():
                    raise ConfigError(
                        f"sequence feature '{f.name}' has multi-value items, which embedding "
                        "groups do not support yet; use one id per item"
                    )
            else:
                jt = batch.sequence_dense_features[f.name]
                values, seq_lengths = jt.values(), jt.lengths()
                if values.dim() == 1:
                    values = values.unsqueeze(1)
            parts.append(values.to(torch.float32))
            if lengths is None:
                lengths, first = seq_lengths, f.name
            elif not torch.equal(lengths, seq_lengths):
                raise DataError(
                    f"feature group '{spec.name}': sequences '{first}' and '{f.name}' have "
                    "different lengths in this batch; a group's sequences must align item by item"
                )
        assert lengths is not None
        values = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return values, lengths.to(torch.int64)
