"""RocketLaunching (``rocket_launching``): a light net trained with a booster net, as upstream.

On one DEEP group's embeddings ``e``: ``s = share_mlp(e)`` (or ``e``), the booster
``z_b = W_b booster_mlp(s)`` and the light net ``z_l = W_l light_mlp(stop_grad(s))`` (the
shared bottom learns from the booster only). Training outputs ``*_booster`` and ``*_light``
predictions and minimises, per configured loss, ``L(z_b) + L(z_l)`` plus the hint loss
``mean((z_l - stop_grad(z_b))^2)`` and, with ``feature_based_distillation``, for each light
hidden layer ``i`` and the first booster layer ``j`` of the same width a similarity loss:
``COSINE``: ``-0.1 * mean_b <h_b^j / |h_b^j|, h_l^i / |h_l^i|>``; otherwise
``sqrt(sum_b |h_b^j - h_l^i|^2)`` (booster side stop-gradient). With sample weights every
term weighs row ``b`` by ``w_b / mean(w)``. Evaluation, metrics, export and serving use the
light net alone (``logits_light``, ``probs_light``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.models.plugin_api import MLP, Batch, EmbeddingGroup, RankModel
from tzrec.protos import simi_pb2
from tzrec.rank.mask_net import single_deep_group

BOOSTER = "_booster"
LIGHT = "_light"
HINT_LOSS = "hint_l2_loss"
_REGRESSION_METRICS = ("mean_absolute_error", "mean_squared_error")


def _suffixed(predictions: dict[str, torch.Tensor], suffix: str) -> dict[str, torch.Tensor]:
    return {f"{k}{suffix}": v for k, v in predictions.items()}


def distillation_pairs(light_units: list[int], booster_units: list[int]) -> dict[int, int]:
    """Light hidden layer ``i`` -> the first booster hidden layer ``j`` of the same width."""
    pairs: dict[int, int] = {}
    for i, width in enumerate(light_units):
        if width in booster_units:
            pairs[i] = booster_units.index(width)
    return pairs


class RocketLaunching(RankModel):
    """Booster and light MLPs over a shared bottom; the light net is what is served."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        self._group_name = single_deep_group(self)
        self.embedding_group = EmbeddingGroup(self.features, self.base_model_config.feature_groups)
        width = self.embedding_group.group_total_dim(self._group_name)
        self.share_mlp = (
            MLP.from_config(width, cfg.share_mlp) if cfg.HasField("share_mlp") else None
        )
        if self.share_mlp is not None:
            width = self.share_mlp.output_dim()
        self.booster_mlp = MLP.from_config(width, cfg.booster_mlp)
        self.booster_linear = nn.Linear(self.booster_mlp.output_dim(), self._num_class)
        self.light_mlp = MLP.from_config(width, cfg.light_mlp)
        self.light_linear = nn.Linear(self.light_mlp.output_dim(), self._num_class)
        self._feature_distillation = bool(cfg.feature_based_distillation)
        self._cosine = cfg.feature_distillation_function == simi_pb2.COSINE
        self._pairs = (
            distillation_pairs(list(cfg.light_mlp.hidden_units), list(cfg.booster_mlp.hidden_units))
            if self._feature_distillation
            else {}
        )
        self._suffix_metrics()

    def _suffix_metrics(self) -> None:
        """Evaluation metrics read the light net (``auc_light``); training metrics both nets."""
        self._metric_modules = nn.ModuleDict(
            {f"{k}{LIGHT}": m for k, m in self._metric_modules.items()}
        )
        self._metric_names = {f"{k}{LIGHT}": f"{d}{LIGHT}" for k, d in self._metric_names.items()}
        self._metric_kinds = {f"{k}{LIGHT}": v for k, v in self._metric_kinds.items()}
        modules: dict[str, nn.Module] = {}
        names: dict[str, tuple[str, str]] = {}
        for key, wrapper in self._train_metric_modules.items():
            kind, display = self._train_metric_names[key]
            for suffix, module in ((BOOSTER, copy.deepcopy(wrapper)), (LIGHT, wrapper)):
                modules[f"{key}{suffix}"] = module
                names[f"{key}{suffix}"] = (kind, f"{display}{suffix}")
        self._train_metric_modules = nn.ModuleDict(modules)
        self._train_metric_names = names

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Light (and, in training, booster) predictions."""
        return self.dense_forward(self.embedding_group(batch))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``*_light`` predictions; in training also ``*_booster`` and the paired hidden layers."""
        share = grouped[self._group_name]
        if self.share_mlp is not None:
            share = self.share_mlp(share)
        light = self.light_mlp.hidden_layer_features(share.detach())
        out = _suffixed(self.output(self.light_linear(light["hidden_layer_end"])), LIGHT)
        if self.training:
            booster = self.booster_mlp.hidden_layer_features(share)
            out.update(
                _suffixed(self.output(self.booster_linear(booster["hidden_layer_end"])), BOOSTER)
            )
            for i, j in self._pairs.items():
                out[f"light_{i}"] = light[f"hidden_layer{i}"]
                out[f"booster_{j}"] = booster[f"hidden_layer{j}"]
        return out

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Each loss on both nets (light only outside training), then the distillation terms."""
        label = batch.labels[self._label_name]
        weight = self._sample_weight(batch)
        losses: dict[str, torch.Tensor] = {}
        for name, loss in self._loss_modules.items():
            key = getattr(loss, "prediction_key", "logits")
            if self.training:
                losses[f"{name}{BOOSTER}"] = loss(predictions[f"{key}{BOOSTER}"], label, weight)
            losses[f"{name}{LIGHT}"] = loss(predictions[f"{key}{LIGHT}"], label, weight)
        if self.training:
            losses.update(self._distillation_losses(predictions, weight))
        return losses

    def _distillation_losses(
        self, predictions: dict[str, torch.Tensor], weight: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        if weight is not None:  # w / mean(w), 0 where the mean is 0 (upstream's div_no_nan)
            mean = weight.mean()
            weight = torch.where(mean != 0, weight / torch.where(mean != 0, mean, 1.0), 0.0)
        losses: dict[str, torch.Tensor] = {}
        for i, j in self._pairs.items():
            light, booster = predictions[f"light_{i}"], predictions[f"booster_{j}"].detach()
            if self._cosine:
                sim = (F.normalize(booster, dim=1) * F.normalize(light, dim=1)).sum(dim=1)
                losses[f"similarity_{i}_{j}"] = (
                    -0.1 * (sim if weight is None else sim * weight).mean()
                )
            else:
                sq = (booster - light).square().sum(dim=1)
                losses[f"similarity_{i}_{j}"] = (sq if weight is None else sq * weight).sum().sqrt()
        diff = predictions[f"logits{LIGHT}"] - predictions[f"logits{BOOSTER}"].detach()
        per_row = diff.square().reshape(diff.shape[0], -1).mean(dim=1)
        losses[HINT_LOSS] = (per_row if weight is None else per_row * weight).mean()
        return losses

    def update_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Feed the evaluation metrics the light net's predictions."""
        n = len(LIGHT)
        light = {k[:-n]: v for k, v in predictions.items() if k.endswith(LIGHT)}
        super().update_metric(light, batch)

    def update_train_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Feed each training metric its net's predictions (``auc_booster``, ``auc_light``)."""
        label = batch.labels[self._label_name]
        for key, (kind, _) in self._train_metric_names.items():
            suffix = BOOSTER if key.endswith(BOOSTER) else LIGHT
            pred = predictions[("y" if kind in _REGRESSION_METRICS else "probs") + suffix]
            self._train_metric_modules[key].update(pred, label)
