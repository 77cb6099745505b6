"""Helpers the multi-task models share: their one input group and their task towers."""

from __future__ import annotations

from tzrec.models.plugin_api import ConfigError, MultiTaskRank
from tzrec.protos import model_pb2


def single_deep_group(model: MultiTaskRank, name: str) -> str:
    """The name of the one DEEP feature group of model ``name`` (upstream reads the first).

    Raises:
        ConfigError: the config has no group, several, or one that is not DEEP.
    """
    groups = list(model.base_model_config.feature_groups)
    where = f"model_config.{name}"
    if len(groups) != 1:
        names = ", ".join(g.group_name for g in groups) or "none"
        raise ConfigError(
            f"model_config.feature_groups: {where} reads one DEEP feature group, got {names}"
        )
    if groups[0].group_type != model_pb2.DEEP:
        raise ConfigError(
            f"model_config.feature_groups: group '{groups[0].group_name}' must be DEEP for {where}"
        )
    return groups[0].group_name
