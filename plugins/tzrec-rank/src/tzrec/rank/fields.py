"""Feature-group helpers of the interaction models: per-feature widths, field tensors."""

from __future__ import annotations

from tzrec.models.plugin_api import ConfigError, EmbeddingGroup, RankModel
from tzrec.protos import model_pb2


def group_feature_dims(embedding_group: EmbeddingGroup, group: str) -> list[int]:
    """Width of each field of a DEEP/WIDE group: its features, then its sequence encoders."""
    dims = [slot.width for slot in embedding_group.layout.group(group).query]
    encoders = embedding_group.sequence_encoders.encoders
    if group in encoders:
        dims += [int(e.output_dim()) for e in encoders[group]]
    return dims


def uniform_field_dim(embedding_group: EmbeddingGroup, group: str, what: str) -> tuple[int, int]:
    """``(fields, width)`` of a group whose fields all have one width (FM, CIN, dot products).

    Raises:
        ConfigError: the group's fields differ in width, or it has none.
    """
    dims = group_feature_dims(embedding_group, group)
    if not dims:
        raise ConfigError(f"{what}: feature group '{group}' has no features")
    if len(set(dims)) != 1:
        raise ConfigError(
            f"{what}: the features of group '{group}' need one embedding_dim, got "
            f"{sorted(set(dims))}"
        )
    return len(dims), dims[0]


def require_group_type(
    embedding_group: EmbeddingGroup, group: str, kinds: int | tuple[int, ...], what: str
) -> None:
    """Refuse a group whose ``group_type`` is not one of ``kinds``, in one line."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    got = embedding_group.group_type(group)
    if got not in kinds:
        names = " or ".join(model_pb2.FeatureGroupType.Name(k) for k in kinds)
        raise ConfigError(
            f"{what}: feature group '{group}' must be group_type {names}, got "
            f"{model_pb2.FeatureGroupType.Name(got)}"
        )


def wide_deep_embedding_group(model: RankModel, wide_embedding_dim: int) -> EmbeddingGroup:
    """The embedding group of a model with a ``wide`` (WIDE) and a ``deep`` (DEEP) group.

    Every feature group of the config is embedded (as upstream); WIDE tables are
    ``wide_embedding_dim`` wide.

    Raises:
        ConfigError: a group is missing or of the wrong type.
    """
    for name in ("wide", "deep"):
        model.group(name)  # a one-line error naming the groups when absent
    groups = list(model.base_model_config.feature_groups)
    embedding_group = EmbeddingGroup(model.features, groups, wide_embedding_dim)
    what = f"model_config.{model.base_model_config.WhichOneof('model')}"
    require_group_type(embedding_group, "wide", model_pb2.WIDE, what)
    require_group_type(embedding_group, "deep", model_pb2.DEEP, what)
    return embedding_group
