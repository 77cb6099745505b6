"""MaskNet (``mask_net``): instance-guided mask blocks over one DEEP feature group.

``logits = W_o MaskNetModule(e)`` (no bias) with ``e`` the group's concatenated embeddings;
:class:`tzrec.models.modules.mask_net.MaskNetModule` holds the blocks (parallel or serial)
and the optional top MLP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import Batch, ConfigError, EmbeddingGroup, MaskNetModule, RankModel
from tzrec.protos import model_pb2


def single_deep_group(model: RankModel) -> str:
    """The name of a model's only feature group, which must be DEEP (MaskNet, RocketLaunching).

    Raises:
        ConfigError: more than one group, or a group of another type.
    """
    groups = model.base_model_config.feature_groups
    name = model.base_model_config.WhichOneof("model")
    if len(groups) != 1:
        names = ", ".join(g.group_name for g in groups)
        raise ConfigError(
            f"model_config.feature_groups: {name} reads one DEEP feature group, "
            f"got {len(groups)} ({names})"
        )
    group = groups[0]
    if group.group_type != model_pb2.DEEP:
        raise ConfigError(
            f"model_config.feature_groups: {name} needs group '{group.group_name}' "
            f"to be DEEP, got {model_pb2.FeatureGroupType.Name(group.group_type)}"
        )
    return group.group_name


class MaskNet(RankModel):
    """Mask blocks over the embeddings of one DEEP group, then a bias-free output layer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._group_name = single_deep_group(self)
        self.embedding_group = EmbeddingGroup(self.features, self.base_model_config.feature_groups)
        feature_dim = self.embedding_group.group_total_dim(self._group_name)
        self.mask_net_layer = MaskNetModule.from_config(
            feature_dim, self.model_config.mask_net_module
        )
        self.output_linear = nn.Linear(
            self.mask_net_layer.output_dim(), self._num_class, bias=False
        )

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Embeddings -> mask blocks -> logits."""
        return self.dense_forward(self.embedding_group(batch))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mask blocks -> logits, from grouped embeddings."""
        return self.output(self.output_linear(self.mask_net_layer(grouped[self._group_name])))
