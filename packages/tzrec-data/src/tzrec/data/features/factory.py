"""Build feature objects from ``feature_configs``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tzrec.core.config import which_oneof
from tzrec.core.errors import ConfigError
from tzrec.data.features.base import BaseFeature
from tzrec.data.features.fg_features import FG_KINDS, create_fg_feature
from tzrec.data.features.id_feature import IdFeature
from tzrec.data.features.raw_feature import RawFeature
from tzrec.data.fg.hashing import check_hash_env

_CLASSES: dict[str, type[BaseFeature]] = {
    "id_feature": IdFeature,
    "sequence_id_feature": IdFeature,
    "raw_feature": RawFeature,
    "sequence_raw_feature": RawFeature,
}
_SUB_CLASSES: dict[str, type[BaseFeature]] = {
    "id_feature": IdFeature,
    "raw_feature": RawFeature,
}


def create_features(
    feature_configs: Iterable[Any], data_config: Any | None = None
) -> list[BaseFeature]:
    """One feature object per configured feature (sequence groups expand to sub-features).

    Args:
        feature_configs: ``FeatureConfig`` messages (``pipeline_config.feature_configs``).
        data_config: the ``DataConfig``; supplies ``fg_encoded_multival_sep``.

    Raises:
        ConfigError: for feature types tzrec-data does not implement or bad options.
    """
    sep = "\x03"
    if data_config is not None and data_config.HasField("fg_encoded_multival_sep"):
        sep = data_config.fg_encoded_multival_sep
    mode = fg_mode(data_config)
    if mode in ("FG_DAG", "FG_NORMAL"):
        check_hash_env()

    def sep_of(cfg: Any) -> str:
        # FG_NONE cells are fg-encoded (``fg_encoded_multival_sep``); FG_DAG / FG_NORMAL
        # cells are raw fg inputs, whose values each feature joins by its ``separator``
        if mode in ("FG_DAG", "FG_NORMAL") and hasattr(cfg, "separator"):
            return cfg.separator
        return sep

    features: list[BaseFeature] = []
    seen: dict[str, str] = {}
    for i, fc in enumerate(feature_configs):
        where = f"feature_configs[{i}]"
        chosen = which_oneof(fc, "feature")
        if chosen is None:
            raise ConfigError(f"{where}: sets no feature type")
        kind, cfg = chosen
        if kind == "sequence_feature":
            for j, sub in enumerate(cfg.features):
                sub_chosen = which_oneof(sub, "feature")
                if sub_chosen is None or sub_chosen[0] not in _SUB_CLASSES:
                    got = sub_chosen[0] if sub_chosen else "nothing"
                    raise ConfigError(
                        f"{where}.sequence_feature.features[{j}]: {got} is not supported "
                        f"(supported: {', '.join(_SUB_CLASSES)})"
                    )
                sub_kind, sub_cfg = sub_chosen
                feat = _SUB_CLASSES[sub_kind](
                    sub_cfg,
                    sub_kind,
                    multival_sep=sep_of(sub_cfg),
                    fg_mode=mode,
                    sequence_name=cfg.sequence_name,
                    sequence_delim=cfg.sequence_delim,
                    sequence_length=cfg.sequence_length,
                )
                _add(features, seen, feat, f"{where}.sequence_feature.features[{j}]")
        elif kind in _CLASSES:
            feat = _CLASSES[kind](cfg, kind, multival_sep=sep_of(cfg), fg_mode=mode)
            _add(features, seen, feat, where)
        elif kind in FG_KINDS:
            feat = create_fg_feature(kind, cfg, where, multival_sep=sep_of(cfg), fg_mode=mode)
            _add(features, seen, feat, where)
        else:
            raise ConfigError(
                f"{where}: {kind} is not supported by tzrec-data "
                f"(supported: {', '.join(list(_CLASSES) + list(FG_KINDS) + ['sequence_feature'])})"
            )
    by_name = {f.name: f for f in features}
    for feat in features:
        if hasattr(feat, "link"):
            feat.link(by_name)  # ``feature:<name>`` inputs of FG features
    negatives = negative_feature_names(features, data_config)
    for feat in features:
        feat.is_neg = feat.name in negatives
    return features


def fg_mode(data_config: Any | None) -> str:
    """``data_config.fg_mode`` by name (``FG_NONE`` without a data config)."""
    if data_config is None or not hasattr(data_config, "fg_mode"):
        return "FG_NONE"
    return (
        type(data_config)
        .DESCRIPTOR.fields_by_name["fg_mode"]
        .enum_type.values_by_number[data_config.fg_mode]
        .name
    )


def candidate_feature(features: Iterable[BaseFeature], item_id_field: str) -> BaseFeature | None:
    """The sequence feature reading a sampler's ``item_id_field``, if any.

    When the positives are a sequence (generative retrieval), negatives join each row's
    candidate sequence instead of being appended as extra rows.
    """
    for f in features:
        if f.is_sequence and item_id_field in f.input_names:
            return f
    return None


def negative_feature_names(features: list[BaseFeature], data_config: Any | None) -> set[str]:
    """Names of the features whose rows a configured sampler extends with negatives.

    Derived from the config alone, as upstream: a feature reading one of the sampler's
    ``attr_fields`` is a negative (``__NEG__``) feature, unless the sampler's
    ``item_id_field`` is a sequence (negatives then join that candidate sequence).
    """
    if data_config is None:
        return set()
    chosen = which_oneof(data_config, "sampler")
    if chosen is None:
        return set()
    if _expands_rows(data_config, chosen[0]):
        return set()  # as upstream's tdm_sampler: sampled nodes are whole rows, not __NEG__
    cfg = chosen[1]
    attrs = set(getattr(cfg, "attr_fields", []))
    item_field = getattr(cfg, "item_id_field", "")
    if not attrs or (item_field and candidate_feature(features, item_field) is not None):
        return set()
    return {f.name for f in features if attrs & set(f.input_names)}


def _expands_rows(data_config: Any, name: str) -> bool:
    """Whether the registered sampler ``name`` lays out whole rows (``expands_rows``)."""
    from tzrec.core.config import provided_by
    from tzrec.core.errors import PluginError
    from tzrec.core.plugins import get

    try:
        cls = get("samplers", name, provided_by(data_config, name))
    except PluginError:  # reported where the sampler is built
        return False
    return bool(getattr(cls, "expands_rows", False))


def _add(features: list[BaseFeature], seen: dict[str, str], feat: BaseFeature, where: str):
    if feat.name in seen:
        raise ConfigError(
            f"{where}: feature name '{feat.name}' is already used by {seen[feat.name]}"
        )
    seen[feat.name] = where
    features.append(feat)


def project_grouped_sequence_feature_to_scalar(feature: BaseFeature) -> Any:
    """A top-level scalar ``FeatureConfig`` for one sub-feature of a ``sequence_feature``.

    Serving views read one item per row (``video_id``) where training read the item inside
    a sequence (``cand_seq__video_id``). The scalar keeps the sub-feature's bare name and
    materialises what the sub-feature effectively used, so both parse and embed one item
    alike: its embedding table (``embedding_name``, else the sub-feature's default
    ``<sequence>__<name>_emb``), ``value_dim`` (1 for a sequence item unless set) and, for
    ids, ``default_value`` ("0", a sequence item's id when empty, unless set). Values set
    explicitly on the sub-feature are kept.

    Raises:
        ConfigError: ``feature`` is not a sub-feature of a ``sequence_feature``.
    """
    from tzrec.protos import feature_pb2

    if not feature.is_grouped_sequence:
        raise ConfigError(
            f"feature '{feature.name}' is not a sub-feature of a sequence_feature; only "
            "grouped sequence sub-features project to a scalar feature"
        )
    cfg = type(feature.config)()
    cfg.CopyFrom(feature.config)
    if hasattr(cfg, "embedding_name") and not cfg.embedding_name:
        cfg.embedding_name = feature.embedding_name
    if hasattr(cfg, "value_dim") and not cfg.HasField("value_dim"):
        cfg.value_dim = feature.value_dim or 1
    if feature.kind == "id_feature" and not cfg.default_value:
        cfg.default_value = "0"
    out = feature_pb2.FeatureConfig()
    getattr(out, feature.kind).CopyFrom(cfg)
    return out
