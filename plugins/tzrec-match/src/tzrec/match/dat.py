"""DAT: Dual Augmented Two-tower model with the Adaptive-Mimic Mechanism (AMM) loss.

As upstream's ``DAT`` (``model_config.dat``). Each tower reads its ``input`` group ``x``
and its ``augment_input`` group ``a`` (the augmented vector, an embedding of e.g. the user
or item id) from one embedding group of its own:

- ``u = f_u([x_u ; a_u])``, ``v = f_i([x_i ; a_i])`` with ``f = MLP → Linear(output_dim)``
  (when ``output_dim > 0``) → L2 normalisation (COSINE);
- ``similarity = sim(u, v) / temperature`` and softmax cross entropy, as every match model;
- in training, the AMM losses make each augmented vector mimic the other tower's detached
  output on the positive pairs (B rows; ``v_b`` is row b's positive item):
  ``amm_loss_u = amm_u_weight · Σ_b Σ_d (â_u,b − sg(v_b))²`` and
  ``amm_loss_i = amm_i_weight · Σ_b Σ_d (â_i,b − sg(u_b))²`` with ``â = a / |a|``
  (summed over rows and dims, not averaged, as upstream); with a sample weight ``w``:
  ``mean_b(w_b · Σ_d (…)²) / mean_b(w_b)``.

So the augment group's width must equal the tower output width. Only the towers'
embeddings are exported (the augmented vector is one of the tower's inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.data import BaseFeature, Batch
from tzrec.models.embedding import EmbeddingGroup, group_feature_names
from tzrec.models.match import MatchModel
from tzrec.models.modules.mlp import MLP
from tzrec.models.modules.variational_dropout import (
    apply_group_variational_dropouts,
    build_group_variational_dropouts,
)
from tzrec.models.plugin_api import ConfigError
from tzrec.protos import model_pb2, simi_pb2, tower_pb2


class DATTower(nn.Module):
    """One DAT tower over its input and augment groups (its own embedding group).

    Args:
        tower_config: a ``DATTower`` message (``input``, ``augment_input``, ``mlp``).
        groups: the input group and the augment group.
        features: the model's features.
        output_dim: width of the final linear layer (0: none).
        similarity: COSINE L2-normalises the output.
        model_config: the whole ``ModelConfig`` (``variational_dropout``).
    """

    def __init__(
        self,
        tower_config: tower_pb2.DATTower,
        groups: Sequence[model_pb2.FeatureGroupConfig],
        features: Sequence[BaseFeature],
        output_dim: int,
        similarity: int,
        model_config: model_pb2.ModelConfig,
    ) -> None:
        super().__init__()
        self._is_inference = False
        self.group_name = tower_config.input
        self.augment_group_name = tower_config.augment_input
        names = {n for g in groups for n in group_feature_names(g)}
        self.features = [f for f in features if f.name in names]
        self.feature_groups = list(groups)
        self.embedding_group = EmbeddingGroup(features, groups)
        self.group_variational_dropouts = build_group_variational_dropouts(
            model_config, self.embedding_group, [self.group_name, self.augment_group_name]
        )
        self.variational_dropout_losses: dict[str, torch.Tensor] = {}
        self.augment_dim = self.embedding_group.group_total_dim(self.augment_group_name)
        width = self.embedding_group.group_total_dim(self.group_name) + self.augment_dim
        self.mlp = MLP.from_config(width, tower_config.mlp)
        self.output = nn.Linear(self.mlp.output_dim(), output_dim) if output_dim > 0 else None
        self.normalize = similarity == simi_pb2.COSINE

    def output_dim(self) -> int:
        """Width of the tower embedding."""
        return self.output.out_features if self.output is not None else self.mlp.output_dim()

    def encode(self, grouped: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The tower embedding and the (dropout-applied) augmented vector of each row."""
        grouped, vd_losses = apply_group_variational_dropouts(
            self.group_variational_dropouts, grouped
        )
        self.variational_dropout_losses = vd_losses if self.training else {}
        augment = grouped[self.augment_group_name]
        x = self.mlp(torch.cat([grouped[self.group_name], augment], dim=1))
        if self.output is not None:
            x = self.output(x)
        if self.normalize:
            x = F.normalize(x, p=2.0, dim=1)
        return x, augment

    def tower_embedding(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """The tower embedding (the exported part)."""
        return self.encode(grouped)[0]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding and augmented vector of each row of the tower's data group."""
        return self.encode(self.embedding_group(batch))


class DAT(MatchModel):
    """Dual Augmented Two-tower (``model_config.dat``), module doc for the formulas."""

    #: applies ``model_config.variational_dropout`` to each tower's two groups, as upstream
    honours_variational_dropout = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self._model_config
        towers = {}
        for side in ("user_tower", "item_tower"):
            tower_cfg = getattr(cfg, side)
            groups = [self._group(tower_cfg.input), self._group(tower_cfg.augment_input)]
            towers[side] = DATTower(
                tower_cfg,
                groups,
                self._features,
                cfg.output_dim,
                cfg.similarity,
                self._base_model_config,
            )
        self.user_tower = towers["user_tower"]
        self.item_tower = towers["item_tower"]
        out = self.user_tower.output_dim()
        if self.item_tower.output_dim() != out:
            raise ConfigError(
                f"model_config.dat: user tower outputs {out} dims but item tower "
                f"{self.item_tower.output_dim()}; set output_dim or make the last hidden_units "
                "equal"
            )
        for side, tower in towers.items():
            if tower.augment_dim != out:
                raise ConfigError(
                    f"model_config.dat.{side}.augment_input: group "
                    f"'{tower.augment_group_name}' is {tower.augment_dim} wide but the towers "
                    f"output {out}; the AMM loss compares them"
                )
        self.amm_u_weight = float(cfg.amm_u_weight)
        self.amm_i_weight = float(cfg.amm_i_weight)

    def export_towers(self) -> dict[str, nn.Module]:
        """``user_tower`` and ``item_tower``, each with its own tables."""
        return {"user_tower": self.user_tower, "item_tower": self.item_tower}

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Tower embeddings, their scaled similarity and (training) the augmented vectors."""
        user_emb, user_augment = self.user_tower(batch)
        item_emb, item_augment = self.item_tower(batch)
        if self._is_inference:
            return {"user_emb": user_emb, "item_emb": item_emb}
        out = {
            "similarity": self.sim(user_emb, item_emb) / self._temperature,
            "user_emb": user_emb,
            "item_emb": item_emb,
        }
        if self.training:
            out["user_augment"] = user_augment
            out["item_augment"] = item_augment
        return out

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Softmax cross entropy plus, in training, ``amm_loss_u`` and ``amm_loss_i``."""
        losses = super().loss(predictions, batch)
        if "user_augment" not in predictions:
            return losses
        rows = predictions["similarity"].size(0)
        user_emb = predictions["user_emb"].detach()
        item_emb = predictions["item_emb"][:rows].detach()
        user_aug = F.normalize(predictions["user_augment"], p=2.0, dim=1)
        item_aug = F.normalize(predictions["item_augment"][:rows], p=2.0, dim=1)
        per_row = {
            "amm_loss_u": self.amm_u_weight * (user_aug - item_emb).square().sum(dim=1),
            "amm_loss_i": self.amm_i_weight * (item_aug - user_emb).square().sum(dim=1),
        }
        weight = self._sample_weight(batch)
        for name, value in per_row.items():
            if weight is None:
                losses[name] = value.sum()
            else:
                w = weight.reshape(-1).to(value.dtype)
                mean_w = w.mean()
                losses[name] = torch.where(
                    mean_w != 0, (value * w).mean() / mean_w, torch.zeros_like(mean_w)
                )
        return losses
