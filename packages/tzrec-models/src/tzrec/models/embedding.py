"""Embedding groups: turn a ``Batch`` into one tensor (or sequence) per feature group.

The layout (output keys, widths, which table each feature reads) is a
:class:`~tzrec.models.layout.GroupLayout`; this module builds its tables as torchrec
modules so ``DistributedModelParallel`` can shard them: ``EmbeddingBagCollection`` for
tables only pooled lookups read, one ``EmbeddingCollection`` per embedding dim for tables a
sequence position reads (torchrec needs one dim per collection; pooled lookups of such a
table are pooled here). Rows of the batch and rows of sampled negatives (data groups
``__BASE__`` / ``__NEG__``) have different batch sizes, so each data group has its own
modules.

Outputs, by group type (``B`` rows of the group's data group):

- DEEP: ``out[group]`` ``(B, D)``: pooled embeddings and raw values, concatenated in the
  group's feature order (a sequence id feature is pooled over its items);
- WIDE: ``out[group]`` ``(B, n * wide_embedding_dim)``: each feature looked up in its own
  narrow table ``<embedding_name>_wide`` (separate from its DEEP table);
- SEQUENCE: ``sequence_key(g)`` ``(B, L, Ds)`` zero-padded, ``sequence_length_key(g)``
  ``(B,)`` and, when the group has non-sequence features, ``query_key(g)`` ``(B, Dq)``;
- JAGGED_SEQUENCE: like SEQUENCE but the sequence is jagged ``(sum(lengths), Ds)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import nn
from torchrec import (
    DataType,
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    EmbeddingCollection,
    EmbeddingConfig,
    JaggedTensor,
    KeyedJaggedTensor,
    KeyedTensor,
    PoolingType,
)
from torchrec.modules.embedding_modules import get_embedding_names_by_table
from torchrec.modules.mc_embedding_modules import (
    ManagedCollisionEmbeddingBagCollection,
    ManagedCollisionEmbeddingCollection,
)
from torchrec.modules.mc_modules import (
    DistanceLFU_EvictionPolicy,
    LFU_EvictionPolicy,
    LRU_EvictionPolicy,
    ManagedCollisionCollection,
    MCHManagedCollisionModule,
)

from tzrec.core.amp import unscale_sparse_gradients
from tzrec.core.errors import ConfigError, DataError
from tzrec.data import BaseFeature, Batch
from tzrec.models.layout import (
    WIDE_SUFFIX,
    GroupLayout,
    GroupSpec,
    Table,
    group_feature_names,
    group_features,
    lookup_key,
    query_key,
    sequence_key,
    sequence_length_key,
)
from tzrec.models.modules.sequence import create_sequence_encoder
from tzrec.protos import model_pb2

__all__ = [
    "WIDE_SUFFIX",
    "EmbeddingGroup",
    "GroupSequenceEncoders",
    "GroupLayout",
    "group_feature_names",
    "group_features",
]


_DATA_TYPES = {"FP32": DataType.FP32, "FP16": DataType.FP16}


def _pooling(name: str) -> PoolingType:
    return PoolingType.MEAN if name.upper() == "MEAN" else PoolingType.SUM


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _float32(value: torch.Tensor | JaggedTensor) -> torch.Tensor | JaggedTensor:
    """FP16-stored tables look up in float32 (upstream's tables output FP32)."""
    if isinstance(value, JaggedTensor):
        if value.values().dtype == torch.float32:
            return value
        return JaggedTensor(values=value.values().float(), lengths=value.lengths())
    return value if value.dtype == torch.float32 else value.float()


class _KeyMap:
    """Which KJT keys a torchrec collection reads and its output keys as layout lookup keys."""

    def __init__(self, tables: list[Table]) -> None:
        self.keys = _unique([f.name for t in tables for f in t.features])
        names = get_embedding_names_by_table(
            [
                EmbeddingConfig(
                    name=t.name,
                    embedding_dim=t.dim,
                    num_embeddings=1,
                    feature_names=[f.name for f in t.features],
                )
                for t in tables
            ]
        )
        self.out_keys = [
            (out, lookup_key(f.name, t.name))
            for t, outs in zip(tables, names, strict=True)
            for f, out in zip(t.features, outs, strict=True)
        ]

    def __call__(self, collection: nn.Module, kjt: KeyedJaggedTensor) -> dict:
        """Run ``collection`` on ``kjt``; its lookups by layout lookup key."""
        got = collection(_select(kjt, self.keys))
        if isinstance(got, tuple):  # managed-collision collections: (lookups, remapped)
            got = got[0]
        if not isinstance(got, (dict, KeyedTensor)) and hasattr(got, "wait"):
            got = got.wait()  # a sharded collection's LazyAwaitable
        if isinstance(got, KeyedTensor):
            got = got.to_dict()
        return {key: _float32(got[out]) for out, key in self.out_keys}


def _select(kjt: KeyedJaggedTensor, keys: list[str]) -> KeyedJaggedTensor:
    if list(kjt.keys()) == keys:
        return kjt
    index = {k: i for i, k in enumerate(kjt.keys())}
    missing = [k for k in keys if k not in index]
    if missing:
        raise ConfigError(f"batch has no ids for feature(s) {', '.join(missing)}")
    return kjt.permute([index[k] for k in keys])


_Cfg = TypeVar("_Cfg", EmbeddingConfig, EmbeddingBagConfig)


def _frozen(config: _Cfg, table: Table) -> _Cfg:
    """Mark a table config with its ``trainable`` (read by the engine's sparse optimizer)."""
    config.trainable = table.trainable  # type: ignore[attr-defined]
    return config


def _bag_collection(tables: list[Table]) -> EmbeddingBagCollection:
    return EmbeddingBagCollection(
        tables=[
            _frozen(
                EmbeddingBagConfig(
                    name=t.name,
                    embedding_dim=t.dim,
                    num_embeddings=t.num_embeddings,
                    feature_names=[f.name for f in t.features],
                    pooling=_pooling(t.pooling),
                    data_type=_DATA_TYPES[t.data_type],
                ),
                t,
            )
            for t in tables
        ],
        # weighted ids: the batch carries weights for every key (ones when unweighted)
        is_weighted=any(f.is_weighted for t in tables for f in t.features),
    )


def _collection(tables: list[Table]) -> EmbeddingCollection:
    return EmbeddingCollection(
        tables=[
            _frozen(
                EmbeddingConfig(
                    name=t.name,
                    embedding_dim=t.dim,
                    num_embeddings=t.num_embeddings,
                    feature_names=[f.name for f in t.features],
                    data_type=_DATA_TYPES[t.data_type],
                ),
                t,
            )
            for t in tables
        ]
    )


def _mch_module(table: Table) -> MCHManagedCollisionModule:
    """The managed-collision module of one zch table, as upstream builds it."""
    zch = table.zch
    assert zch is not None
    kind = zch.WhichOneof("eviction_policy")
    if kind == "lfu":
        policy = LFU_EvictionPolicy()
    elif kind == "lru":
        policy = LRU_EvictionPolicy(decay_exponent=zch.lru.decay_exponent)
    else:
        policy = DistanceLFU_EvictionPolicy(decay_exponent=zch.distance_lfu.decay_exponent)
    return MCHManagedCollisionModule(
        zch_size=int(zch.zch_size),
        device=torch.device("cpu"),
        eviction_policy=policy,
        eviction_interval=int(zch.eviction_interval),
    )


def _mc_collection(tables: list[Table], pooled: bool) -> nn.Module:
    """A managed-collision EmbeddingBagCollection (pooled) or EmbeddingCollection."""
    inner = _bag_collection(tables) if pooled else _collection(tables)
    configs = inner.embedding_bag_configs() if pooled else inner.embedding_configs()
    mcc = ManagedCollisionCollection({t.name: _mch_module(t) for t in tables}, configs)
    cls = ManagedCollisionEmbeddingBagCollection if pooled else ManagedCollisionEmbeddingCollection
    return cls(inner, mcc, return_remapped_features=False)


def mch_modules(embedding_group: EmbeddingGroup) -> dict[str, MCHManagedCollisionModule]:
    """The managed-collision module of every zch table of an (unsharded) group, by table."""
    out: dict[str, MCHManagedCollisionModule] = {}
    for impl in embedding_group.impls.values():
        colls = ([impl.mc_ebc] if impl.mc_ebc is not None else []) + list(impl.mc_ec.values())
        for coll in colls:
            out.update(coll._managed_collision_collection._managed_collision_modules.items())
    return out


class _DataGroupEmbedding(nn.Module):
    """The torchrec modules of one data group.

    ``ebc`` (pooled tables), ``wide_ebc`` (WIDE groups' narrow tables), ``weighted_ebc``
    (pooled tables a weighted feature reads: weighted sums) and ``ec`` (``dim<d>``: one
    ``EmbeddingCollection`` per embedding dim); zch tables in ``mc_ebc`` / ``mc_ec``
    (torchrec managed-collision collections).
    """

    def __init__(self, tables: list[Table]) -> None:
        super().__init__()
        mc = [t for t in tables if t.zch is not None]
        tables = [t for t in tables if t.zch is None]
        weighted = [t for t in tables if not t.sequence and any(f.is_weighted for f in t.features)]
        bag = [t for t in tables if not t.sequence and not t.wide and t not in weighted]
        wide = [t for t in tables if t.wide and t not in weighted]
        by_dim: dict[int, list[Table]] = defaultdict(list)
        for t in tables:
            if t.sequence:
                by_dim[t.dim].append(t)
        mc_bag = [t for t in mc if not t.sequence]
        mc_by_dim: dict[int, list[Table]] = defaultdict(list)
        for t in mc:
            if t.sequence:
                mc_by_dim[t.dim].append(t)
        self.ebc = _bag_collection(bag) if bag else None
        self.wide_ebc = _bag_collection(wide) if wide else None
        self.weighted_ebc = _bag_collection(weighted) if weighted else None
        self.ec = nn.ModuleDict({f"dim{d}": _collection(ts) for d, ts in sorted(by_dim.items())})
        self._maps: dict[str, _KeyMap] = {}
        if bag:
            self._maps["ebc"] = _KeyMap(bag)
        if wide:
            self._maps["wide_ebc"] = _KeyMap(wide)
        if weighted:
            self._maps["weighted_ebc"] = _KeyMap(weighted)
        for d, ts in sorted(by_dim.items()):
            self._maps[f"ec.dim{d}"] = _KeyMap(ts)
        # zero-collision hashing: torchrec managed-collision collections (one MCH module
        # per table remaps raw ids to its zch_size rows, evicting as its policy says)
        self.mc_ebc = _mc_collection(mc_bag, pooled=True) if mc_bag else None
        self.mc_ec = nn.ModuleDict(
            {f"dim{d}": _mc_collection(ts, pooled=False) for d, ts in sorted(mc_by_dim.items())}
        )
        if mc_bag:
            self._maps["mc_ebc"] = _KeyMap(mc_bag)
        for d, ts in sorted(mc_by_dim.items()):
            self._maps[f"mc_ec.dim{d}"] = _KeyMap(ts)

    def forward(self, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor | JaggedTensor]:
        """Pooled ``(B, D)`` and jagged lookups, by layout lookup key."""
        out: dict[str, torch.Tensor | JaggedTensor] = {}
        for path, key_map in self._maps.items():
            out.update(key_map(self.get_submodule(path), kjt))
        # FP16 loss scaling: the fused table optimizers must see unscaled gradients
        unscale_sparse_gradients(out.values())
        return out


class GroupSequenceEncoders(nn.Module):
    """The ``sequence_encoders`` of DEEP groups: grouped lookups in, final DEEP groups out.

    A DEEP group's output is its own features' embeddings followed by each encoder's
    output over its ``sequence_groups`` entry, in config order (as upstream). It runs at
    the end of :class:`EmbeddingGroup` in training and at the start of an export's dense
    part (the serving lookups stop before it); a group whose sequence keys are absent
    (another tower's view) is passed through.
    """

    def __init__(self, layout: GroupLayout) -> None:
        super().__init__()
        dims: dict[str, int] = {}
        for spec in layout.subgroups.values():
            dims[sequence_key(spec.name)] = spec.sequence_dim
            if spec.query:
                dims[query_key(spec.name)] = spec.query_dim
        self.encoders = nn.ModuleDict(
            {
                name: nn.ModuleList([create_sequence_encoder(c, dims) for c in spec.encoders])
                for name, spec in layout.groups.items()
                if spec.encoders
            }
        )

    def output_dim(self, group: str) -> int:
        """Total width the encoders add to ``group`` (0 without encoders)."""
        if group not in self.encoders:
            return 0
        return sum(e.output_dim() for e in self.encoders[group])

    def forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``grouped`` with each DEEP group extended by its encoders' outputs."""
        if len(self.encoders) == 0:
            return grouped
        out = dict(grouped)
        for name, encoders in self.encoders.items():
            if not all(sequence_key(e.input()) in grouped for e in encoders):
                continue
            parts = [grouped[name]] if name in grouped else []
            parts += [e(grouped) for e in encoders]
            out[name] = torch.cat(parts, dim=-1)
        return out


class EmbeddingGroup(nn.Module):
    """Embeds the features of every feature group of a model config.

    Args:
        features: the features (as resolved by the dataset: ``data_group`` is known).
        feature_groups: the model config's ``feature_groups``.
        wide_embedding_dim: width of WIDE groups' per-feature tables.
    """

    def __init__(
        self,
        features: Sequence[BaseFeature],
        feature_groups: Sequence[model_pb2.FeatureGroupConfig],
        wide_embedding_dim: int = 4,
    ) -> None:
        super().__init__()
        self.layout = GroupLayout(features, feature_groups, wide_embedding_dim)
        data_groups = sorted({t.data_group for t in self.layout.tables.values()})
        self.impls = nn.ModuleDict(
            {dg: _DataGroupEmbedding(self.layout.tables_of(dg)) for dg in data_groups}
        )
        #: DEEP groups' sequence_encoders (an export runs them in its dense part)
        self.sequence_encoders = GroupSequenceEncoders(self.layout)

    # -- dimensions ------------------------------------------------------------------------

    def group_names(self) -> list[str]:
        """Feature group names, in config order."""
        return self.layout.group_names()

    def group_type(self, group: str) -> int:
        """The ``FeatureGroupType`` of a group."""
        return self.layout.group(group).group_type

    def query_dim(self, group: str) -> int:
        """Width of the pooled part (a DEEP/WIDE group's output; a sequence group's query)."""
        return self.layout.group(group).query_dim

    def sequence_dim(self, group: str) -> int:
        """Width of one sequence item of a SEQUENCE/JAGGED_SEQUENCE group."""
        return self.layout.group(group).sequence_dim

    def group_total_dim(self, group: str) -> int:
        """Output width of a DEEP group (query + sequence width for sequence groups)."""
        spec = self.layout.group(group)
        return spec.query_dim + spec.sequence_dim + self.sequence_encoders.output_dim(group)

    def data_group(self, group: str) -> str:
        """``__BASE__`` or ``__NEG__``: which rows the group's outputs have."""
        return self.layout.group(group).data_group

    # -- forward ---------------------------------------------------------------------------

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Embed every group of ``batch`` (DEEP groups' sequence encoders applied)."""
        return self.sequence_encoders(self.lookup(batch))

    def lookup(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The grouped lookups, before any DEEP group's sequence encoders (= serving's)."""
        looked: dict[str, torch.Tensor | JaggedTensor] = {}
        for dg, impl in self.impls.items():
            looked.update(impl(batch.sparse_features[dg]))
        out: dict[str, torch.Tensor] = {}
        for spec in self.layout.specs():
            name = spec.name
            if not spec.is_sequence and not spec.query:
                continue  # a DEEP group of sequence_groups only: its encoders make it
            query = self._query(spec, batch, looked)
            if not spec.is_sequence:
                out[name] = query
                continue
            if spec.query:
                out[query_key(name)] = query
            values, lengths = self._sequence(spec, batch, looked)
            out[sequence_length_key(name)] = lengths
            if spec.jagged:
                out[sequence_key(name)] = values
            else:
                offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
                max_len = int(lengths.max().item()) if lengths.numel() else 0
                out[sequence_key(name)] = torch.ops.fbgemm.jagged_to_padded_dense(
                    values, [offsets], [max(max_len, 1)], 0.0
                )
        return out

    @staticmethod
    def _query(spec: GroupSpec, batch: Batch, looked) -> torch.Tensor:
        parts = []
        for slot in spec.query:
            f = slot.feature
            if slot.table is None:
                parts.append(batch.dense_features[f.data_group].to_dict()[f.name])
                continue
            got = looked[slot.key]
            if isinstance(got, JaggedTensor):  # a pooled lookup of a sequence table
                op = "mean" if f.pooling.upper() == "MEAN" else "sum"
                values = got.values()
                if f.is_weighted:
                    weights = batch.sparse_features[f.data_group][f.name].weights()
                    values = values * weights.unsqueeze(1).to(values.dtype)
                got = torch.segment_reduce(
                    values, op, lengths=got.lengths(), unsafe=True, initial=0.0
                )
            parts.append(got)
        if not parts:
            return torch.zeros(batch.batch_size, 0)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    @staticmethod
    def _sequence(spec: GroupSpec, batch: Batch, looked) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        lengths = None
        for slot in spec.sequence:
            f = slot.feature
            if slot.table is not None:
                jt = looked[slot.key]
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
