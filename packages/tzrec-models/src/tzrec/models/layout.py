"""The embedding layout of a model: output keys, widths and tables of its feature groups.

:class:`GroupLayout` is derived from the features and the ``feature_groups`` alone (no
torch modules). Training's :class:`~tzrec.models.embedding.EmbeddingGroup` builds its
torchrec tables from it and serving's
:class:`~tzrec.models.inference.InferenceEmbeddingGroup` builds its plain lookups from it,
so both produce the same keys, in the same feature order, from the same tables.

Output keys (the only place they are spelled; use the helpers below):

- a DEEP or WIDE group ``g``: ``g``;
- a SEQUENCE / JAGGED_SEQUENCE group ``g``, and each ``sequence_groups`` entry ``g`` of a
  DEEP group: ``g.sequence``, ``g.sequence_length`` and, when it has non-sequence features,
  ``g.query``.

Tables: a feature's table is its ``embedding_name`` (``<name>_emb`` by default), plus
``_wide`` in WIDE groups and ``_<embedding_name_suffix>`` when its group sets one, as
upstream. A table that any sequence position reads is a *sequence* table (looked up
per item); the others are pooled (``pooling`` of the feature: sum or mean). A sequence id
feature listed in a DEEP (or WIDE) group's ``feature_names`` is pooled over all of its
items, as upstream's EmbeddingBag lookup does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tzrec.core.errors import ConfigError
from tzrec.data import BASE_DATA_GROUP, BaseFeature
from tzrec.protos import feature_pb2, model_pb2, seq_encoder_pb2

SEQUENCE_TYPES = (model_pb2.SEQUENCE, model_pb2.JAGGED_SEQUENCE)
WIDE_SUFFIX = "_wide"

#: the parts of a sequence group's output (``split_key``'s second value)
PART_QUERY, PART_SEQUENCE, PART_LENGTH = "query", "sequence", "sequence_length"
_PARTS = (PART_QUERY, PART_SEQUENCE, PART_LENGTH)


def query_key(group: str) -> str:
    """Output key of a sequence group's pooled (non-sequence) features: ``<g>.query``."""
    return f"{group}.{PART_QUERY}"


def sequence_key(group: str) -> str:
    """Output key of a sequence group's per-item embeddings: ``<g>.sequence``."""
    return f"{group}.{PART_SEQUENCE}"


def sequence_length_key(group: str) -> str:
    """Output key of a sequence group's row lengths: ``<g>.sequence_length``."""
    return f"{group}.{PART_LENGTH}"


def split_key(key: str) -> tuple[str, str]:
    """``(group, part)`` of an output key; part is ``""`` for a flat (DEEP/WIDE) output."""
    group, dot, part = key.rpartition(".")
    if dot and part in _PARTS:
        return group, part
    return key, ""


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


def sequence_groups(
    feature_groups: Sequence[model_pb2.FeatureGroupConfig],
) -> list[tuple[str, list[str], bool]]:
    """``(name, feature names, jagged)`` of every group with a sequence output.

    SEQUENCE / JAGGED_SEQUENCE groups and the ``sequence_groups`` entries of DEEP groups
    (padded; an unnamed single entry takes its DEEP group's name, as upstream).
    """
    out = []
    for g in feature_groups:
        if g.group_type in SEQUENCE_TYPES:
            out.append(
                (g.group_name, list(g.feature_names), g.group_type == model_pb2.JAGGED_SEQUENCE)
            )
        elif g.group_type == model_pb2.DEEP:
            for sg in g.sequence_groups:
                out.append((sg.group_name or g.group_name, list(sg.feature_names), False))
    return out


#: embedding storage types tzrec trains (upstream's feature.py accepts the same two)
DATA_TYPES = ("FP32", "FP16")


def storage_type(feature: BaseFeature) -> str:
    """A feature's table ``data_type`` (``FP32`` unless set).

    Raises:
        ConfigError: a type other than FP32/FP16 (upstream refuses them too; torchrec's
            unsharded tables would silently store BF16 as FP16).
    """
    data_type = (getattr(feature.config, "data_type", "") or "FP32").upper()
    if data_type not in DATA_TYPES:
        raise ConfigError(
            f"feature '{feature.name}': data_type {data_type} is not supported; "
            f"use one of {', '.join(DATA_TYPES)}"
        )
    return data_type


def is_trainable(feature: BaseFeature) -> bool:
    """A feature's ``trainable`` (proto default true): false freezes its embedding table."""
    cfg = feature.config
    return bool(getattr(cfg, "trainable", True))


ZCH_POLICIES = ("lfu", "lru", "distance_lfu")


def zero_collision_hash(feature: BaseFeature) -> feature_pb2.ZeroCollisionHash | None:
    """A feature's checked ``zch`` config, None when it has none.

    Raises:
        ConfigError: no eviction policy (upstream needs one), ``threshold_filtering_func``
            (upstream's experimental Python lambda, not evaluated by tzrec) or weighted ids.
    """
    cfg = feature.config
    if not (hasattr(cfg, "zch") and cfg.HasField("zch")):
        return None
    zch = cfg.zch
    if zch.WhichOneof("eviction_policy") is None:
        raise ConfigError(
            f"feature '{feature.name}': zch needs an eviction policy ({', '.join(ZCH_POLICIES)})"
        )
    if zch.HasField("threshold_filtering_func"):
        raise ConfigError(
            f"feature '{feature.name}': zch.threshold_filtering_func is not supported "
            "(tzrec does not evaluate Python lambdas from configs); remove it"
        )
    if feature.is_weighted:
        raise ConfigError(f"feature '{feature.name}': weighted ids with zch are not supported")
    return zch


def feature_width(feature: BaseFeature) -> int:
    """Width of one feature in a group output: ``embedding_dim`` for ids, else ``value_dim``."""
    return feature.embedding_dim if feature.is_sparse else feature.value_dim


def lookup_key(feature: str, table: str) -> str:
    """Key of one feature's lookup in one table (``<feature>@<table>``)."""
    return f"{feature}@{table}"


@dataclass
class Table:
    """One embedding table and the features that read it."""

    name: str
    dim: int
    num_embeddings: int
    pooling: str
    data_group: str
    features: list[BaseFeature] = field(default_factory=list)
    #: looked up per item (some sequence position reads it), else pooled
    sequence: bool = False
    wide: bool = False
    #: storage precision (the features' ``data_type``): ``FP32`` or ``FP16``
    data_type: str = "FP32"
    #: the features' ``zch`` (zero-collision hashing: a torchrec managed-collision
    #: module remaps raw int64 ids to ``zch_size`` rows), None for plain tables
    zch: feature_pb2.ZeroCollisionHash | None = None
    #: the features' ``trainable`` (default true): a frozen table keeps its weights in
    #: training (the engine gives it SGD with lr 0 instead of the sparse optimizer)
    trainable: bool = True


@dataclass
class Slot:
    """One feature's place in a group output: the feature and the table it reads."""

    feature: BaseFeature
    table: str | None  # None for raw (dense) values
    #: the looked-up value: ``<feature>@<table>`` for ids (a feature may read several
    #: tables: DEEP, WIDE, suffixed), the feature name for raw values
    key: str
    width: int


@dataclass
class GroupSpec:
    """A feature group as the layout sees it."""

    name: str
    group_type: int
    data_group: str
    query: list[Slot]
    sequence: list[Slot]
    #: a DEEP group's ``sequence_groups`` entry: the DEEP group it belongs to
    parent: str | None = None
    #: a DEEP group's ``sequence_groups`` (their layout names) and ``sequence_encoders``
    #: (each with ``input`` filled in), applied in config order after its own features
    sub_groups: list[str] = field(default_factory=list)
    encoders: list[seq_encoder_pb2.SeqEncoderConfig] = field(default_factory=list)

    @property
    def is_sequence(self) -> bool:
        """Whether the group outputs ``.sequence`` / ``.sequence_length`` keys."""
        return self.group_type in SEQUENCE_TYPES

    @property
    def jagged(self) -> bool:
        """Whether ``.sequence`` is jagged ``(items, D)`` rather than padded ``(B, L, D)``."""
        return self.group_type == model_pb2.JAGGED_SEQUENCE

    @property
    def query_dim(self) -> int:
        """Width of the pooled part."""
        return sum(s.width for s in self.query)

    @property
    def sequence_dim(self) -> int:
        """Width of one sequence item."""
        return sum(s.width for s in self.sequence)

    def output_keys(self) -> list[str]:
        """The keys this group contributes to the grouped output."""
        if not self.is_sequence:
            return [self.name] if self.query or self.encoders else []
        keys = [query_key(self.name)] if self.query else []
        if self.sequence:
            keys += [sequence_key(self.name), sequence_length_key(self.name)]
        return keys


class GroupLayout:
    """Groups, output keys, widths and tables of a model's ``feature_groups``.

    Args:
        features: the features (``data_group`` resolved).
        feature_groups: the groups to embed.
        wide_embedding_dim: width of WIDE groups' per-feature tables.
        serving_view: accept sequence-type groups without a sequence feature (a scalar
            serving view, e.g. HSTUMatch's item tower: only ``<g>.query``).
    """

    def __init__(
        self,
        features: Sequence[BaseFeature],
        feature_groups: Sequence[model_pb2.FeatureGroupConfig],
        wide_embedding_dim: int = 4,
        serving_view: bool = False,
    ) -> None:
        self.wide_dim = int(wide_embedding_dim)
        self._serving_view = serving_view
        by_name = {f.name: f for f in features}
        self.tables: dict[str, Table] = {}
        #: the feature groups, in config order
        self.groups: dict[str, GroupSpec] = {}
        #: DEEP groups' ``sequence_groups`` entries by layout name (an unnamed single entry
        #: takes its DEEP group's name, so the two share a name but not output keys)
        self.subgroups: dict[str, GroupSpec] = {}
        for group in feature_groups:
            subs = self._sub_groups(group)
            spec = self._make_group(
                group.group_name,
                list(group.feature_names),
                int(group.group_type),
                group.embedding_name_suffix,
                by_name,
                allow_empty=bool(subs),
            )
            if spec.name in self.groups:
                raise ConfigError(f"feature group name '{spec.name}' is used twice")
            self.groups[spec.name] = spec
            for sub_name, sub in subs:
                sub_spec = self._make_group(
                    sub_name,
                    list(sub.feature_names),
                    int(model_pb2.SEQUENCE),
                    sub.embedding_name_suffix or group.embedding_name_suffix,
                    by_name,
                )
                sub_spec.parent = group.group_name
                spec.sub_groups.append(sub_name)
                if sub_name in self.subgroups:
                    raise ConfigError(
                        f"sequence_groups name '{sub_name}' is used twice; names must be unique"
                    )
                self.subgroups[sub_name] = sub_spec
            spec.encoders = self._encoders(group, [n for n, _ in subs])
            data_groups = {self.subgroups[n].data_group for n in spec.sub_groups}
            if spec.query:
                data_groups.add(spec.data_group)
            if len(data_groups) > 1:
                raise ConfigError(
                    f"feature group '{group.group_name}' mixes batch features and "
                    "sampled-item features in its sequence_groups; split it"
                )
            if data_groups:
                spec.data_group = data_groups.pop()
        self._check_tables()

    @staticmethod
    def _sub_groups(
        group: model_pb2.FeatureGroupConfig,
    ) -> list[tuple[str, model_pb2.SeqGroupConfig]]:
        """A DEEP group's ``sequence_groups`` with their names, checked as upstream does."""
        gname = group.group_name
        subs, encoders = list(group.sequence_groups), list(group.sequence_encoders)
        if group.group_type != model_pb2.DEEP:
            if subs or encoders:
                type_name = model_pb2.FeatureGroupType.Name(group.group_type)
                raise ConfigError(
                    f"feature group '{gname}' is {type_name}: sequence_groups and "
                    "sequence_encoders are only read in DEEP groups"
                )
            return []
        if bool(subs) != bool(encoders):
            have, lack = (
                ("sequence_groups", "sequence_encoders")
                if subs
                else ("sequence_encoders", "sequence_groups")
            )
            raise ConfigError(f"feature group '{gname}' has {have} but no {lack}")
        if len(subs) > 1 and not all(sg.group_name for sg in subs):
            raise ConfigError(
                f"feature group '{gname}' has {len(subs)} sequence_groups: every one needs "
                "a group_name"
            )
        return [(sg.group_name or gname, sg) for sg in subs]

    @staticmethod
    def _encoders(
        group: model_pb2.FeatureGroupConfig, sub_names: list[str]
    ) -> list[seq_encoder_pb2.SeqEncoderConfig]:
        """``sequence_encoders`` with ``input`` defaulted to the only sequence group."""
        out = []
        covered: set[str] = set()
        for i, enc in enumerate(group.sequence_encoders):
            kind = enc.WhichOneof("seq_module")
            if kind is None:
                raise ConfigError(
                    f"feature group '{group.group_name}': sequence_encoders[{i}] sets no encoder"
                )
            cfg = seq_encoder_pb2.SeqEncoderConfig()
            cfg.CopyFrom(enc)
            sub = getattr(cfg, kind)
            if not sub.input and len(sub_names) == 1:
                sub.input = sub_names[0]
            if sub.input not in sub_names:
                raise ConfigError(
                    f"feature group '{group.group_name}': sequence_encoders[{i}] "
                    f"{kind}.input '{sub.input}' is not one of its sequence_groups "
                    f"({', '.join(sub_names)})"
                )
            covered.add(sub.input)
            out.append(cfg)
        bare = [n for n in sub_names if n not in covered]
        if bare:
            raise ConfigError(
                f"feature group '{group.group_name}': sequence_groups {', '.join(bare)} have "
                "no sequence_encoders entry"
            )
        return out

    # -- construction --------------------------------------------------------------------

    def _make_group(
        self,
        gname: str,
        names: list[str],
        gtype: int,
        suffix: str,
        by_name: dict[str, BaseFeature],
        allow_empty: bool = False,
    ) -> GroupSpec:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ConfigError(
                f"feature group '{gname}': feature(s) {', '.join(missing)} are not "
                "defined in feature_configs"
            )
        feats = [by_name[n] for n in names]
        if not feats and allow_empty:
            return GroupSpec(gname, gtype, BASE_DATA_GROUP, [], [])
        if not feats:
            raise ConfigError(f"feature group '{gname}' has no features")
        data_groups = {f.data_group for f in feats}
        if len(data_groups) > 1:
            raise ConfigError(
                f"feature group '{gname}' mixes batch features and sampled-item "
                "features; split it into a user group and an item group"
            )
        data_group = data_groups.pop()
        type_name = model_pb2.FeatureGroupType.Name(gtype)
        is_seq_group = gtype in SEQUENCE_TYPES
        raw_seq = [f for f in feats if f.is_sequence and not f.is_sparse]
        if not is_seq_group and raw_seq:
            raise ConfigError(
                f"feature group '{gname}' is {type_name} but has sequence feature(s) "
                f"{', '.join(f.name for f in raw_seq)} without ids; a {type_name} group pools "
                "sequence id features only, use group_type SEQUENCE or JAGGED_SEQUENCE"
            )
        seq_feats = [f for f in feats if f.is_sequence] if is_seq_group else []
        if is_seq_group and not seq_feats and not self._serving_view:
            raise ConfigError(f"feature group '{gname}' is {type_name} but has no sequence feature")
        seq_names = {f.sequence_name or f.name for f in seq_feats}
        if len(seq_names) > 1 and any(f.is_grouped_sequence for f in seq_feats):
            raise ConfigError(
                f"feature group '{gname}' mixes sequences "
                f"{', '.join(sorted(seq_names))}; their lengths differ, use one group each"
            )
        wide = gtype == model_pb2.WIDE
        query, sequence = [], []
        for f in feats:
            in_sequence = f in seq_feats
            if wide and not f.is_sparse:
                raise ConfigError(
                    f"feature '{f.name}' is in a WIDE group but has no ids; WIDE groups take "
                    "id features (or raw features with boundaries)"
                )
            slot = self._slot(f, data_group, wide, suffix, in_sequence)
            (sequence if in_sequence else query).append(slot)
        return GroupSpec(gname, gtype, data_group, query, sequence)

    def _slot(
        self, f: BaseFeature, data_group: str, wide: bool, suffix: str, in_sequence: bool
    ) -> Slot:
        if not f.is_sparse:
            return Slot(f, None, f.name, feature_width(f))
        if f.is_weighted and f.pooling.lower() != "sum":
            raise ConfigError(
                f"feature '{f.name}': weighted ids are pooled as a weighted sum; set pooling "
                f'"sum" (got "{f.pooling}")'
            )
        name = f.embedding_name + (WIDE_SUFFIX if wide else "")
        if suffix:
            name = f"{name}_{suffix}"
        dim = self.wide_dim if wide else f.embedding_dim
        data_type = storage_type(f)
        zch = zero_collision_hash(f)
        trainable = is_trainable(f)
        table = self.tables.get(name)
        if table is None:
            table = self.tables[name] = Table(
                name,
                dim,
                f.num_embeddings,
                f.pooling,
                data_group,
                wide=wide,
                data_type=data_type,
                zch=zch,
                trainable=trainable,
            )
        elif table.trainable != trainable:
            first = table.features[0].name
            raise ConfigError(
                f"embedding '{name}' is shared by '{first}' (trainable {table.trainable}) and "
                f"'{f.name}' (trainable {trainable}); shared tables need one trainable"
            )
        elif table.zch != zch:
            first = table.features[0].name
            raise ConfigError(
                f"embedding '{name}' is shared by '{first}' and '{f.name}' with different "
                "zch settings; shared tables need one zch (or none)"
            )
        elif table.data_type != data_type:
            first = table.features[0].name
            raise ConfigError(
                f"embedding '{name}' is shared by '{first}' (data_type {table.data_type}) and "
                f"'{f.name}' (data_type {data_type}); shared tables need one data_type"
            )
        elif table.dim != dim:
            first = table.features[0].name
            raise ConfigError(
                f"embedding '{name}' is shared by '{first}' (embedding_dim {table.dim}) and "
                f"'{f.name}' (embedding_dim {dim}); shared tables need one dim"
            )
        elif table.data_group != data_group:
            users = ", ".join(dict.fromkeys([*(t.name for t in table.features), f.name]))
            raise ConfigError(
                f"embedding '{name}' is shared by features of the batch rows and of "
                f"sampled negatives ({users}); give them different embedding_name values"
            )
        else:
            table.num_embeddings = max(table.num_embeddings, f.num_embeddings)
        # zch tables are always looked up per item (a managed-collision EmbeddingCollection)
        # and pooled by the group: torchrec's managed-collision EmbeddingBagCollection has no
        # sharding on CPU (its MCH sharder is row-wise only, pooled row-wise is GPU-only)
        table.sequence = table.sequence or in_sequence or table.zch is not None
        if table.zch is not None and f.is_weighted:
            raise ConfigError(
                f"feature '{f.name}': zch tables cannot be read by weighted features "
                "(weights are not applied to managed-collision lookups); remove zch or the "
                "weights"
            )
        if f not in table.features:
            table.features.append(f)
        return Slot(f, name, lookup_key(f.name, name), dim)

    def _check_tables(self) -> None:
        for table in self.tables.values():
            if table.num_embeddings <= 0:
                raise ConfigError(
                    f"embedding '{table.name}' has no size: set num_buckets, hash_bucket_size, "
                    "vocab_list or vocab_dict on its features"
                )
            poolings = {f.pooling.lower() for f in table.features}
            if not table.sequence and len(poolings) > 1:
                # a pooled table pools in the lookup (one pooling per table), as upstream
                raise ConfigError(
                    f"embedding '{table.name}' is shared by features with different pooling "
                    f"({', '.join(f'{f.name}: {f.pooling}' for f in table.features)}); "
                    "shared pooled tables need one pooling"
                )

    # -- queries ---------------------------------------------------------------------------

    def group(self, name: str) -> GroupSpec:
        """The spec of group ``name``.

        Raises:
            ConfigError: an undefined group (the message lists the defined ones).
        """
        if name not in self.groups:
            raise ConfigError(
                f"feature group '{name}' is not defined (groups: {', '.join(self.groups)})"
            )
        return self.groups[name]

    def group_names(self) -> list[str]:
        """Feature group names, in config order (``sequence_groups`` entries left out)."""
        return list(self.groups)

    def specs(self) -> list[GroupSpec]:
        """Every group that outputs lookups: each feature group, then its sequence_groups."""
        out = []
        for spec in self.groups.values():
            out.append(spec)
            out.extend(self.subgroups[n] for n in spec.sub_groups)
        return out

    def output_keys(self) -> list[str]:
        """Every key of the grouped lookups, group by group."""
        return [k for g in self.specs() for k in g.output_keys()]

    def tables_of(self, data_group: str) -> list[Table]:
        """The tables read by the features of one data group, in first-use order."""
        return [t for t in self.tables.values() if t.data_group == data_group]

    def data_groups(self) -> list[str]:
        """The data groups (``__BASE__``, ``__NEG__``) some table or group reads, sorted."""
        return sorted({g.data_group for g in self.specs()})

    def slots(self, kinds: Iterable[str] = ("query", "sequence")) -> list[Slot]:
        """Every slot of every group (``query`` and/or ``sequence`` positions)."""
        return [s for g in self.specs() for k in kinds for s in getattr(g, k)]
