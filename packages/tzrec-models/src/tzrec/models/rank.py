"""Ranking: :class:`RankModel` (logits, probabilities, losses, metrics), MultiTower(DIN)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.core.engine.guards import LabelDomain
from tzrec.core.errors import ConfigError
from tzrec.data import Batch
from tzrec.models.base import BaseModel
from tzrec.models.embedding import EmbeddingGroup
from tzrec.models.layout import query_key, sequence_key, sequence_length_key
from tzrec.models.modules.mlp import MLP, mlp_kwargs
from tzrec.models.modules.sequence import DINEncoder
from tzrec.models.modules.variational_dropout import (
    apply_group_variational_dropouts,
    build_group_variational_dropouts,
)
from tzrec.protos import model_pb2, seq_encoder_pb2

#: ``train_metrics`` a rank model computes (upstream's).
_RANK_TRAIN_METRICS = ("auc", "accuracy", "mean_absolute_error", "mean_squared_error", "xauc")
_REGRESSION_METRICS = ("mean_absolute_error", "mean_squared_error", "xauc", "grouped_xauc")
#: metrics that also get a per-row grouping id (their config's ``grouping_key`` column)
_GROUPED_METRICS = ("grouped_auc", "grouped_xauc")


class RankModel(BaseModel):
    """Predicts ``logits`` and ``probs`` (``y`` for regression losses) of one label."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._num_class = int(self._base_model_config.num_class)
        if not self._labels:
            raise ConfigError("data_config.label_fields: a rank model needs a label")
        self._label_name = self._labels[0]
        self._init_losses(num_class=self._num_class)
        self._init_metrics(num_class=self._num_class)
        self._init_rank_train_metrics()

    def output(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """The predictions of ``(B, num_class)`` logits: ``logits``, ``probs`` (and ``y``)."""
        return self._output(logits)

    def _output(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._num_class == 1:
            logits = logits.squeeze(-1)
            return {"logits": logits, "probs": torch.sigmoid(logits), "y": logits}
        return {"logits": logits, "probs": torch.softmax(logits, dim=-1)}

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Every configured loss against the label."""
        label = batch.labels[self._label_name]
        weight = self._sample_weight(batch)
        losses = {
            name: loss(predictions[getattr(loss, "prediction_key", "logits")], label, weight)
            for name, loss in self._loss_modules.items()
        }
        # variational dropout penalties of the last training forward (``<group>_feature_p_loss``)
        losses.update(getattr(self, "_variational_dropout_losses", {}))
        return losses

    def update_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Feed every metric as upstream: ``y`` to regression errors, ``probs`` to the rest.

        Grouped AUC / XAUC also get their ``grouping_key`` column, one id per row.
        """
        label = batch.labels[self._label_name]
        for key, metric in self._metric_modules.items():
            kind, cfg = self._metric_kinds[key]
            pred = predictions["y" if kind in _REGRESSION_METRICS else "probs"]
            if kind in _GROUPED_METRICS:
                group = self.row_values(batch, cfg.grouping_key, f"{kind}.grouping_key")
                metric.update(pred, label, group)
            else:
                metric.update(pred, label)

    def _init_rank_train_metrics(self) -> None:
        self._init_train_metrics(num_class=self._num_class, allowed=_RANK_TRAIN_METRICS)
        for kind, _ in self._train_metric_names.values():
            if kind == "auc" and self._num_class > 2:
                raise ConfigError(
                    f"model_config.train_metrics.auc needs num_class <= 2, got {self._num_class}"
                )
            if kind in _REGRESSION_METRICS and self._num_class != 1:
                raise ConfigError(
                    f"model_config.train_metrics.{kind} needs num_class 1 (regression output "
                    f"'y'), got {self._num_class}"
                )

    def update_train_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Feed a training batch: ``y`` to regression errors, ``probs`` to AUC/accuracy."""
        label = batch.labels[self._label_name]
        for key, (kind, _) in self._train_metric_names.items():
            pred = predictions["y" if kind in _REGRESSION_METRICS else "probs"]
            self._train_metric_modules[key].update(pred, label)

    def label_domains(self) -> dict[str, LabelDomain]:
        """The label values the configured losses accept (the engine checks every batch)."""
        domain = None
        for cfg in self._base_model_config.losses:
            kind = cfg.WhichOneof("loss")
            if kind in ("binary_cross_entropy", "binary_focal_loss", "jrc_loss"):
                new = LabelDomain(0.0, 1.0, False, kind)
            elif kind == "softmax_cross_entropy":
                new = LabelDomain(0.0, float(max(self._num_class - 1, 0)), True, kind)
            else:
                continue
            if domain is None or (new.high - new.low, new.integral) < (
                domain.high - domain.low,
                domain.integral,
            ):
                domain = new
        return {self._label_name: domain} if domain is not None else {}


class MultiTower(RankModel):
    """One MLP tower per DEEP group, concatenated into a final MLP (``multi_tower``)."""

    #: applies ``model_config.variational_dropout`` to its tower groups
    honours_variational_dropout = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self._model_config
        groups = [self._group(t.input) for t in cfg.towers]
        din = list(getattr(cfg, "din_towers", []))
        groups += [self._group(t.input) for t in din]
        self.embedding_group = EmbeddingGroup(
            self._features, groups, getattr(cfg, "wide_embedding_dim", 4) or 4
        )
        #: ``model_config.variational_dropout``: one per tower group of > 1 feature (or None)
        self.group_variational_dropouts = build_group_variational_dropouts(
            self._base_model_config, self.embedding_group, [t.input for t in cfg.towers]
        )
        self._variational_dropout_losses: dict[str, torch.Tensor] = {}
        self.towers = nn.ModuleDict()
        width = 0
        for tower in cfg.towers:
            in_dim = self.embedding_group.group_total_dim(tower.input)
            if self.embedding_group.group_type(tower.input) != model_pb2.DEEP:
                raise ConfigError(f"towers input '{tower.input}' must be a DEEP group")
            mlp = MLP.from_config(in_dim, tower.mlp) if tower.HasField("mlp") else None
            self.towers[tower.input] = mlp if mlp is not None else nn.Identity()
            width += mlp.output_dim() if mlp is not None else in_dim
        self.din_towers = nn.ModuleDict()
        for tower in din:
            if self.embedding_group.group_type(tower.input) != model_pb2.SEQUENCE:
                raise ConfigError(f"din_towers input '{tower.input}' must be a SEQUENCE group")
            seq_dim = self.embedding_group.sequence_dim(tower.input)
            query_dim = self.embedding_group.query_dim(tower.input)
            if query_dim > seq_dim:
                raise ConfigError(
                    f"din_towers input '{tower.input}': query width {query_dim} exceeds the "
                    f"sequence width {seq_dim}"
                )
            enc_cfg = seq_encoder_pb2.DINEncoder(input=tower.input)
            enc_cfg.attn_mlp.CopyFrom(tower.attn_mlp)
            self.din_towers[tower.input] = DINEncoder(enc_cfg, seq_dim, query_dim)
            width += self.din_towers[tower.input].output_dim()
        self.final = MLP(width, **mlp_kwargs(cfg.final))
        # ``output_mlp`` as upstream (``output`` is RankModel's public logits -> predictions)
        self.output_mlp = nn.Linear(self.final.output_dim(), self._num_class)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Tower outputs -> final MLP -> logits."""
        return self.dense_forward(self.embedding_group(batch))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tower outputs -> final MLP -> logits, from grouped embeddings."""
        grouped, vd_losses = apply_group_variational_dropouts(
            self.group_variational_dropouts, grouped
        )
        self._variational_dropout_losses = vd_losses if self.training else {}
        parts = [tower(grouped[name]) for name, tower in self.towers.items()]
        for name, encoder in self.din_towers.items():
            parts.append(
                encoder.encode(
                    grouped[sequence_key(name)],
                    grouped[sequence_length_key(name)],
                    grouped.get(query_key(name)),
                )
            )
        return self.output(self.output_mlp(self.final(torch.cat(parts, dim=-1))))


class MultiTowerDIN(MultiTower):
    """MultiTower plus DIN attention towers over SEQUENCE groups (``multi_tower_din``)."""
