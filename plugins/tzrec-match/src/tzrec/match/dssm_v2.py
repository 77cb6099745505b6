"""DSSMv2: DSSM over one model-level embedding group, so the towers can share tables.

As upstream's ``DSSMV2``: the model owns one ``EmbeddingGroup`` over all its
``feature_groups``; each tower reads its ``input`` group from it (its own tables are not
separate as in DSSM, so a user-side feature and an item-side feature with one
``embedding_name`` read one table). A tower is ``MLP`` → ``Linear(output_dim)`` (when
``output_dim > 0``) → L2 normalisation (COSINE); similarity, temperature, in-batch negatives,
loss and recall metrics are :class:`MatchModel`'s. Each tower is exported with the shared
group's trained tables for its own features (``TowerWoEGWrapper``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.data import Batch
from tzrec.models.embedding import EmbeddingGroup
from tzrec.models.match import MatchModel, MatchTower
from tzrec.models.plugin_api import ConfigError


def tower_output_dim(tower: MatchTower, input_dim: int) -> int:
    """Width of a :class:`MatchTower`'s embedding given the width of its input group."""
    if tower.output is not None:
        return tower.output.out_features
    if tower.mlp is not None:
        return tower.mlp.output_dim()
    return input_dim


class DSSMV2(MatchModel):
    """DSSMv2 (``model_config.dssm_v2``): two towers over one shared embedding group."""

    #: applies ``model_config.variational_dropout`` to each tower's group, as upstream
    honours_variational_dropout = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self._model_config
        groups = [self._group(cfg.user_tower.input), self._group(cfg.item_tower.input)]
        self.embedding_group = EmbeddingGroup(self._features, groups)
        self.user_tower, self.item_tower = (
            MatchTower(
                tower,
                group,
                self._features,
                cfg.output_dim,
                cfg.similarity,
                self._base_model_config,
                embedding_group=self.embedding_group,
            )
            for tower, group in zip((cfg.user_tower, cfg.item_tower), groups, strict=True)
        )
        dims = [
            tower_output_dim(t, self.embedding_group.group_total_dim(g.group_name))
            for t, g in zip((self.user_tower, self.item_tower), groups, strict=True)
        ]
        if dims[0] != dims[1]:
            raise ConfigError(
                f"model_config.dssm_v2: user tower outputs {dims[0]} dims but item tower "
                f"{dims[1]}; set output_dim or make the last hidden_units equal"
            )

    def export_towers(self) -> dict[str, nn.Module]:
        """``user_tower`` and ``item_tower``; both read the model's ``embedding_group``."""
        return {"user_tower": self.user_tower, "item_tower": self.item_tower}

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """User/item embeddings from the shared lookups and their scaled similarity."""
        grouped = self.embedding_group(batch)
        user_emb = self.user_tower.tower_embedding(grouped)
        item_emb = self.item_tower.tower_embedding(grouped)
        if self._is_inference:
            return {"user_emb": user_emb, "item_emb": item_emb}
        user_emb = user_emb[: batch.batch_size]
        return {
            "similarity": self.sim(user_emb, item_emb) / self._temperature,
            "user_emb": user_emb,
            "item_emb": item_emb,
        }
