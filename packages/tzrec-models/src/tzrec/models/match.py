"""Two-tower retrieval: :class:`MatchModel` (similarity, losses, metrics) and DSSM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.core.errors import ConfigError
from tzrec.data import BaseFeature, Batch
from tzrec.models.base import BaseModel
from tzrec.models.embedding import EmbeddingGroup, group_feature_names
from tzrec.models.modules.mlp import MLP
from tzrec.models.modules.variational_dropout import (
    apply_group_variational_dropouts,
    build_group_variational_dropouts,
)
from tzrec.protos import model_pb2, simi_pb2, tower_pb2


class MatchModel(BaseModel):
    """Scores users against items: the positive is column 0, sampled negatives follow.

    With ``in_batch_negative`` every other row's item is a negative (positive on the
    diagonal). Similarities are divided by ``temperature``; the loss is softmax cross
    entropy and ``recall_at_k`` metrics read the same similarity matrix.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self._model_config
        self._in_batch_negative = bool(getattr(cfg, "in_batch_negative", False))
        self._temperature = float(getattr(cfg, "temperature", 1.0)) or 1.0
        self._init_losses(allowed=["softmax_cross_entropy"])
        if len(self._loss_modules) != 1:
            raise ConfigError("model_config.losses: match models take exactly one loss")
        self._init_metrics()
        self._init_train_metrics(allowed=("recall_at_k",))

    def sim(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + N)`` similarities (``(B, B)`` with in-batch negatives)."""
        if self._in_batch_negative:
            return user_emb @ item_emb[: user_emb.size(0)].T
        batch_size = user_emb.size(0)
        pos = (user_emb * item_emb[:batch_size]).sum(dim=-1, keepdim=True)
        neg = user_emb @ item_emb[batch_size:].T
        return torch.cat([pos, neg], dim=-1)

    def _target(self, sim: torch.Tensor) -> torch.Tensor:
        if self._in_batch_negative:
            return torch.arange(sim.size(0), device=sim.device)
        return torch.zeros(sim.size(0), dtype=torch.long, device=sim.device)

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Softmax cross entropy of the positive among its negatives."""
        sim = predictions["similarity"]
        target = self._target(sim)
        losses = {
            name: loss(sim, target, sample_weight=self._sample_weight(batch))
            for name, loss in self._loss_modules.items()
        }
        # each tower's variational dropout penalties of the last training forward
        for tower in self.children():
            losses.update(getattr(tower, "variational_dropout_losses", {}))
        return losses

    def update_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Recall@k of the positive among the scored candidates."""
        sim = predictions["similarity"]
        target = self._target(sim)
        for metric in self._metric_modules.values():
            metric.update(sim, target)

    def update_train_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Recall@k of the positive in a training batch's similarities."""
        sim = predictions["similarity"]
        target = self._target(sim)
        for metric in self._train_metric_modules.values():
            metric.update(sim, target)


class MatchTower(nn.Module):
    """One tower: embedding group over its input group, MLP, optional output projection.

    Args:
        tower_config: a ``Tower`` message (``input`` group, ``mlp``).
        group: the feature group the tower reads.
        features: the model's features.
        output_dim: width of a final linear layer (0: none).
        similarity: COSINE L2-normalises the output.
        model_config: the whole ``ModelConfig`` (its ``variational_dropout`` applies to the
            tower's group).
        embedding_group: a model-level group the tower reads (DSSMv2); the tower then owns
            no tables (no ``embedding_group`` attribute; ``tower_embedding`` only).
    """

    def __init__(
        self,
        tower_config: tower_pb2.Tower,
        group: model_pb2.FeatureGroupConfig,
        features: Sequence[BaseFeature],
        output_dim: int,
        similarity: int,
        model_config: model_pb2.ModelConfig | None = None,
        embedding_group: EmbeddingGroup | None = None,
    ) -> None:
        super().__init__()
        self.group_name = group.group_name
        self._is_inference = False
        self.features = [f for f in features if f.name in set(group_feature_names(group))]
        self.feature_groups = [group]
        if embedding_group is None:
            self.embedding_group = embedding_group = EmbeddingGroup(features, [group])
        self.group_variational_dropouts = (
            build_group_variational_dropouts(model_config, embedding_group, [self.group_name])
            if model_config is not None
            else None
        )
        #: ``<group>_feature_p_loss`` of the last training forward (MatchModel.loss adds it)
        self.variational_dropout_losses: dict[str, torch.Tensor] = {}
        width = embedding_group.group_total_dim(self.group_name)
        self.mlp = (
            MLP.from_config(width, tower_config.mlp) if tower_config.HasField("mlp") else None
        )
        width = self.mlp.output_dim() if self.mlp is not None else width
        self.output = nn.Linear(width, output_dim) if output_dim > 0 else None
        self.normalize = similarity == simi_pb2.COSINE

    def forward(self, batch: Batch) -> torch.Tensor:
        """The tower's embedding of each row of its data group."""
        return self.tower_embedding(self.embedding_group(batch))

    def tower_embedding(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """The tower's embedding from its embedding group's output (the exported part)."""
        grouped, vd_losses = apply_group_variational_dropouts(
            self.group_variational_dropouts, grouped
        )
        self.variational_dropout_losses = vd_losses if self.training else {}
        x = grouped[self.group_name]
        if self.mlp is not None:
            x = self.mlp(x)
        if self.output is not None:
            x = self.output(x)
        if self.normalize:
            x = F.normalize(x, p=2.0, dim=1)
        return x


class DSSM(MatchModel):
    """DSSM: a user tower and an item tower over DEEP groups (``model_config.dssm``)."""

    #: applies ``model_config.variational_dropout`` to each tower's group
    honours_variational_dropout = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self._model_config
        self.user_tower = MatchTower(
            cfg.user_tower,
            self._group(cfg.user_tower.input),
            self._features,
            cfg.output_dim,
            cfg.similarity,
            self._base_model_config,
        )
        self.item_tower = MatchTower(
            cfg.item_tower,
            self._group(cfg.item_tower.input),
            self._features,
            cfg.output_dim,
            cfg.similarity,
            self._base_model_config,
        )
        dims = (self.user_tower_dim(), self.item_tower_dim())
        if dims[0] != dims[1]:
            raise ConfigError(
                f"model_config.dssm: user tower outputs {dims[0]} dims but item tower {dims[1]}; "
                "set output_dim or make the last hidden_units equal"
            )

    def _tower_dim(self, tower: MatchTower) -> int:
        if tower.output is not None:
            return tower.output.out_features
        if tower.mlp is not None:
            return tower.mlp.output_dim()
        return tower.embedding_group.group_total_dim(tower.group_name)

    def export_towers(self) -> dict[str, nn.Module]:
        """``user_tower`` and ``item_tower``, each exported with its own tables."""
        return {"user_tower": self.user_tower, "item_tower": self.item_tower}

    def user_tower_dim(self) -> int:
        """Width of the user embedding."""
        return self._tower_dim(self.user_tower)

    def item_tower_dim(self) -> int:
        """Width of the item embedding."""
        return self._tower_dim(self.item_tower)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """User/item embeddings and their (temperature-scaled) similarity."""
        user_emb = self.user_tower(batch)
        item_emb = self.item_tower(batch)
        if self._is_inference:
            return {"user_emb": user_emb, "item_emb": item_emb}
        return {
            "similarity": self.sim(user_emb, item_emb) / self._temperature,
            "user_emb": user_emb,
            "item_emb": item_emb,
        }
