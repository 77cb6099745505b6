"""MIND: multi-interest retrieval with B2I capsule routing and label-aware attention.

As upstream's ``MIND`` (``model_config.mind``). The user tower reads a DEEP ``input``
group ``x_u`` and a SEQUENCE ``history_input`` group (items ``e_s``, lengths ``n``):

- ``p = user_mlp(x_u)``: ``MLP(hidden_units[:-1])`` (one dropout ratio, the first, for all
  its layers) then a ``Linear(hidden_units[-1])``; one hidden unit: only the Linear;
- ``h_s = hist_seq_mlp(e_s)`` likewise but without biases (none when unset);
- ``c_1..c_K, mask = CapsuleLayer(h, n)`` (:mod:`tzrec.models.modules.capsule`: up to
  ``max_k`` interests, ``K_b`` of them valid);
- interests ``r_k = mask_k · concat_mlp(mask_k · [p ; c_k])``, then ``Linear(output_dim,
  bias=False)`` when ``output_dim > 0`` and L2 normalisation for COSINE (the default).

The item tower is an ``MLP`` → ``Linear(output_dim)`` → L2 normalisation (COSINE) over
the ``item_tower.input`` group. Training and evaluation score a user by label-aware
attention over its valid interests with the row's positive item ``v⁺``:
``α = softmax_k(simi_pow · <r_k, v⁺>)`` (invalid interests get 0),
``u = Σ_k α_k r_k``, then ``similarity = sim(u, v) / temperature`` with softmax cross
entropy, as every match model. Serving exports all interests: the user tower's
``user_tower_emb`` is ``(B, max_k, D)`` (invalid interests are zero vectors), and
retrieval ranks an item by its best interest (``tzrec hitrate --num_interests max_k``,
``tzrec eval-retrieval``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.data import BaseFeature, Batch
from tzrec.match.dssm_v2 import tower_output_dim
from tzrec.models.embedding import EmbeddingGroup, group_feature_names
from tzrec.models.layout import sequence_key, sequence_length_key
from tzrec.models.match import MatchModel, MatchTower
from tzrec.models.modules.capsule import CapsuleLayer
from tzrec.models.modules.mlp import MLP
from tzrec.models.plugin_api import ConfigError
from tzrec.protos import model_pb2, module_pb2, simi_pb2, tower_pb2


def _mlp_then_linear(
    in_dim: int, config: module_pb2.MLP, field: str, bias: bool
) -> tuple[nn.Module, int]:
    """``MLP(hidden_units[:-1]) → Linear(hidden_units[-1])`` (upstream's user/history MLP)."""
    units = list(config.hidden_units)
    if not units:
        raise ConfigError(f"{field}.hidden_units: set at least one layer")
    if len(units) == 1:
        return nn.Linear(in_dim, units[0], bias=bias), units[0]
    hidden = MLP(
        in_dim,
        units[:-1],
        bias=bias,
        activation=config.activation,
        use_bn=config.use_bn,
        dropout_ratio=float(config.dropout_ratio[0]) if config.dropout_ratio else None,
        use_ln=config.use_ln,
    )
    return nn.Sequential(hidden, nn.Linear(hidden.output_dim(), units[-1], bias=bias)), units[-1]


class MINDUserTower(nn.Module):
    """MIND's user tower: user MLP, history MLP, capsule routing, concat MLP (module doc).

    Args:
        tower_config: a ``MINDUserTower`` message.
        user_group: the DEEP ``input`` group.
        hist_group: the SEQUENCE ``history_input`` group.
        features: the model's features.
        output_dim: width of the final linear layer (0: none).
        similarity: COSINE L2-normalises each interest.
    """

    def __init__(
        self,
        tower_config: tower_pb2.MINDUserTower,
        user_group: model_pb2.FeatureGroupConfig,
        hist_group: model_pb2.FeatureGroupConfig,
        features: Sequence[BaseFeature],
        output_dim: int,
        similarity: int,
    ) -> None:
        super().__init__()
        field = "model_config.mind.user_tower"
        self._is_inference = False
        self.group_name = user_group.group_name
        self.hist_group_name = hist_group.group_name
        groups = [user_group, hist_group]
        names = {n for g in groups for n in group_feature_names(g)}
        self.features = [f for f in features if f.name in names]
        self.feature_groups = groups
        self.embedding_group = EmbeddingGroup(features, groups)
        eg = self.embedding_group
        if eg.group_type(self.group_name) != model_pb2.DEEP:
            raise ConfigError(f"{field}.input: group '{self.group_name}' must be a DEEP group")
        if eg.group_type(self.hist_group_name) != model_pb2.SEQUENCE:
            raise ConfigError(
                f"{field}.history_input: group '{self.hist_group_name}' must be a SEQUENCE group"
            )
        if eg.query_dim(self.hist_group_name):
            raise ConfigError(
                f"{field}.history_input: group '{self.hist_group_name}' holds non-sequence "
                "features; MIND reads only its sequence features"
            )
        if (
            tower_config.HasField("user_seq_combine")
            and tower_config.user_seq_combine != tower_pb2.MINDUserTower.CONCAT
        ):
            raise ConfigError(
                f"{field}.user_seq_combine: only CONCAT (what upstream's MIND does whatever "
                "the field says): the user vector is concatenated to each interest"
            )
        self.user_mlp, user_dim = _mlp_then_linear(
            eg.group_total_dim(self.group_name), tower_config.user_mlp, f"{field}.user_mlp", True
        )
        hist_dim = eg.sequence_dim(self.hist_group_name)
        self.hist_seq_mlp: nn.Module | None = None
        if tower_config.HasField("hist_seq_mlp") and tower_config.hist_seq_mlp.hidden_units:
            hist_cfg = tower_config.hist_seq_mlp
            if hist_cfg.HasField("bias") and hist_cfg.bias:
                raise ConfigError(
                    f"{field}.hist_seq_mlp.bias: MIND's history MLP has no biases (as upstream)"
                )
            self.hist_seq_mlp, hist_dim = _mlp_then_linear(
                hist_dim, hist_cfg, f"{field}.hist_seq_mlp", False
            )
        self.capsule_layer = CapsuleLayer(
            tower_config.capsule_config, hist_dim, f"{field}.capsule_config"
        )
        self.concat_mlp = MLP.from_config(
            user_dim + self.capsule_layer.output_dim(), tower_config.concat_mlp, dim=3
        )
        self.output = (
            nn.Linear(self.concat_mlp.output_dim(), output_dim, bias=False)
            if output_dim > 0
            else None
        )
        self.normalize = similarity == simi_pb2.COSINE

    def output_dim(self) -> int:
        """Width of one interest vector."""
        return self.output.out_features if self.output is not None else self.concat_mlp.output_dim()

    def num_interests(self) -> int:
        """Interest vectors per user (``capsule_config.max_k``)."""
        return self.capsule_layer.max_k

    def interests(self, grouped: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, max_k, D)`` interests (invalid ones zero) and their ``(B, max_k)`` mask."""
        user = self.user_mlp(grouped[self.group_name])
        hist = grouped[sequence_key(self.hist_group_name)]
        if self.hist_seq_mlp is not None:
            hist = self.hist_seq_mlp(hist)
        capsules, mask = self.capsule_layer(
            hist, grouped[sequence_length_key(self.hist_group_name)]
        )
        keep = mask.unsqueeze(-1).to(capsules.dtype)
        user = user.unsqueeze(1).expand(-1, capsules.size(1), -1)
        x = self.concat_mlp(torch.cat([user, capsules], dim=-1) * keep) * keep
        if self.output is not None:
            x = self.output(x)
        if self.normalize:
            x = F.normalize(x, p=2.0, dim=-1)
        return x, mask

    def tower_embedding(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """All interests ``(B, max_k, D)`` (the exported part)."""
        return self.interests(grouped)[0]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Interests and interest mask of each row."""
        return self.interests(self.embedding_group(batch))


class MIND(MatchModel):
    """MIND (``model_config.mind``), module doc for the formulas."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self._model_config
        self.user_tower = MINDUserTower(
            cfg.user_tower,
            self._group(cfg.user_tower.input),
            self._group(cfg.user_tower.history_input),
            self._features,
            cfg.output_dim,
            cfg.similarity,
        )
        self.item_tower = MatchTower(
            cfg.item_tower,
            self._group(cfg.item_tower.input),
            self._features,
            cfg.output_dim,
            cfg.similarity,
        )
        item_eg = self.item_tower.embedding_group
        item_dim = tower_output_dim(self.item_tower, item_eg.group_total_dim(cfg.item_tower.input))
        if item_dim != self.user_tower.output_dim():
            raise ConfigError(
                f"model_config.mind: user interests are {self.user_tower.output_dim()} wide but "
                f"item embeddings {item_dim}; set output_dim or make the last hidden_units equal"
            )
        self.simi_pow = float(cfg.simi_pow)

    def export_towers(self) -> dict[str, nn.Module]:
        """``user_tower`` (all interests) and ``item_tower``, each with its own tables."""
        return {"user_tower": self.user_tower, "item_tower": self.item_tower}

    def label_aware_attention(
        self, interests: torch.Tensor, item_emb: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """``Σ_k softmax_k(simi_pow · <r_k, v⁺>) r_k`` over each row's valid interests."""
        positive = item_emb[: interests.size(0)]
        logits = torch.einsum("bkd,bd->bk", interests, positive) * self.simi_pow
        logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=1).unsqueeze(-1)
        return (weights * interests).sum(dim=1)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Interests, item embeddings and (not serving) the label-aware similarity."""
        interests, mask = self.user_tower(batch)
        item_emb = self.item_tower(batch)
        if self._is_inference:
            return {"user_emb": interests, "item_emb": item_emb}
        user_emb = self.label_aware_attention(interests, item_emb, mask)
        return {
            "similarity": self.sim(user_emb, item_emb) / self._temperature,
            "user_emb": user_emb,
            "item_emb": item_emb,
            "user_interests": interests,
        }
