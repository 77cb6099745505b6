"""WuKong (``wukong``): stacked FM + linear-compress layers over equal-width feature embeddings.

The ``sparse`` group (or the only group) gives ``X (B, F, D)``, one row per feature (every
feature of the group must have width ``D``); with a ``dense`` group, ``dense_mlp`` (last
width ``D``) turns it into one more row, placed first. Each
:class:`~tzrec.models.modules.wukong.WuKongLayer` maps ``F`` rows to
``fmb_feature_num + lcb_feature_num``; the last layer's rows, flattened, feed ``final`` and
a linear output layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import MLP, Batch, ConfigError, EmbeddingGroup, RankModel, WuKongLayer
from tzrec.protos import model_pb2
from tzrec.rank.fields import uniform_field_dim

_SPARSE = "sparse"
_DENSE = "dense"


class WuKong(RankModel):
    """WuKong layers over a ``sparse`` group (plus an MLP-embedded ``dense`` group)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        groups = [g.group_name for g in self.base_model_config.feature_groups]
        self._sparse_group = groups[0] if len(groups) == 1 else _SPARSE
        self._dense_group = _DENSE if len(groups) > 1 else ""
        extra = sorted(set(groups) - {self._sparse_group, self._dense_group})
        if extra or self._sparse_group not in groups:
            raise ConfigError(
                "model_config.feature_groups: wukong reads one group, or groups 'sparse' and "
                f"'dense'; got {', '.join(groups)}"
            )
        for name in groups:
            if self.group(name).group_type != model_pb2.DEEP:
                raise ConfigError(
                    f"model_config.feature_groups: wukong group '{name}' must be DEEP"
                )
        if self._dense_group and not cfg.HasField("dense_mlp"):
            raise ConfigError("model_config.wukong.dense_mlp: required with a 'dense' group")
        if cfg.HasField("dense_mlp") and not self._dense_group:
            raise ConfigError("model_config.wukong.dense_mlp: needs a 'dense' feature group")
        if not cfg.wukong_layers:
            raise ConfigError("model_config.wukong.wukong_layers: set at least one layer")
        self.embedding_group = EmbeddingGroup(self.features, self.base_model_config.feature_groups)
        self._refuse_sequences(self._sparse_group)
        self._num_sparse, self._dim = uniform_field_dim(
            self.embedding_group, self._sparse_group, "model_config.wukong"
        )
        feature_num = self._num_sparse
        self.dense_mlp: nn.Module | None = None
        if self._dense_group:
            self._refuse_sequences(self._dense_group)
            dense_dim = self.embedding_group.group_total_dim(self._dense_group)
            self.dense_mlp = MLP.from_config(dense_dim, cfg.dense_mlp)
            if self.dense_mlp.output_dim() != self._dim:
                raise ConfigError(
                    f"model_config.wukong.dense_mlp: last hidden unit "
                    f"{self.dense_mlp.output_dim()} must equal the sparse feature width {self._dim}"
                )
            feature_num += 1
        # upstream's attribute name, so checkpoints' keys match
        self._wukong_layers = nn.ModuleList()
        for layer_cfg in cfg.wukong_layers:
            layer = WuKongLayer.from_config(self._dim, feature_num, layer_cfg)
            self._wukong_layers.append(layer)
            feature_num = layer.output_feature_num()
        self.final_mlp = MLP.from_config(feature_num * self._dim, cfg.final)
        self.output_mlp = nn.Linear(self.final_mlp.output_dim(), self._num_class)

    def _refuse_sequences(self, group: str) -> None:
        """Upstream refuses sequence inputs (and their encoders) in either group."""
        spec = self.embedding_group.layout.group(group)
        if spec.sequence or spec.encoders:
            raise ConfigError(
                f"model_config.feature_groups: wukong group '{group}' may not hold sequences"
            )

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Embeddings -> WuKong layers -> final MLP -> logits."""
        return self.dense_forward(self.embedding_group(batch))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """WuKong layers -> final MLP -> logits, from grouped embeddings."""
        x = grouped[self._sparse_group].reshape(-1, self._num_sparse, self._dim)
        if self.dense_mlp is not None:
            x = torch.cat([self.dense_mlp(grouped[self._dense_group]).unsqueeze(1), x], dim=1)
        for layer in self._wukong_layers:
            x = layer(x)
        return self.output(self.output_mlp(self.final_mlp(x.flatten(1))))
