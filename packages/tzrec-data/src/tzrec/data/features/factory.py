"""Build feature objects from ``feature_configs``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tzrec.core.config import which_oneof
from tzrec.core.errors import ConfigError
from tzrec.data.features.base import BaseFeature
from tzrec.data.features.id_feature import IdFeature
from tzrec.data.features.raw_feature import RawFeature

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
                    multival_sep=sep,
                    sequence_name=cfg.sequence_name,
                    sequence_delim=cfg.sequence_delim,
                    sequence_length=cfg.sequence_length,
                )
                _add(features, seen, feat, f"{where}.sequence_feature.features[{j}]")
        elif kind in _CLASSES:
            _add(features, seen, _CLASSES[kind](cfg, kind, multival_sep=sep), where)
        else:
            raise ConfigError(
                f"{where}: {kind} is not supported by tzrec-data "
                f"(supported: {', '.join(list(_CLASSES) + ['sequence_feature'])})"
            )
    return features


def _add(features: list[BaseFeature], seen: dict[str, str], feat: BaseFeature, where: str):
    if feat.name in seen:
        raise ConfigError(
            f"{where}: feature name '{feat.name}' is already used by {seen[feat.name]}"
        )
    seen[feat.name] = where
    features.append(feat)
