"""The model contract the engine trains, evaluates and exports.

A model is built as ``cls(model_config, features, labels, sample_weights=None)`` and
provides ``predict(batch) -> dict`` (also its ``forward``), ``loss(predictions, batch) ->
dict`` of named scalar losses, ``update_metric``/``compute_metric``/``reset_metric`` and
``set_is_inference``. The engine (``tzrec.core.engine.engine``) wraps it for training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tzrec.core.config import which_oneof
from tzrec.core.errors import ConfigError
from tzrec.data import BASE_DATA_GROUP, BaseFeature, Batch
from tzrec.models.losses import create_loss
from tzrec.models.metrics.factory import create_metric, create_train_metric
from tzrec.protos import model_pb2


def metric_key(display: str) -> str:
    """Module-dict key of a metric from its display name (``recall@5`` → ``recall_at_5``)."""
    return display.replace(".", "_").replace("@", "_at_")


def in_serving_view(module: nn.Module) -> bool:
    """Whether ``module`` and every submodule with a serving view have it switched on.

    :meth:`BaseModel.set_is_inference` switches them; exporters call this before wrapping.
    """
    return all(m._is_inference for m in module.modules() if hasattr(m, "_is_inference"))


class BaseModel(nn.Module):
    """Shared plumbing: config, features, labels, losses and metrics.

    Args:
        model_config: the pipeline's ``ModelConfig``.
        features: the features (as resolved by the dataset).
        labels: label field names (``data_config.label_fields``).
        sample_weights: sample-weight field names.
    """

    #: a model that applies ``model_config.variational_dropout`` sets this (others refuse it)
    honours_variational_dropout: bool = False

    def __init__(
        self,
        model_config: model_pb2.ModelConfig,
        features: Sequence[BaseFeature],
        labels: Sequence[str],
        sample_weights: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self._base_model_config = model_config
        chosen = which_oneof(model_config, "model")
        if chosen is None:
            raise ConfigError("model_config sets no model")
        self._model_name, self._model_config = chosen
        self._features = list(features)
        self._labels = list(labels)
        self._sample_weights = list(sample_weights or [])
        self._is_inference = False
        self._loss_modules = nn.ModuleDict()
        self._metric_modules = nn.ModuleDict()
        self._metric_names: dict[str, str] = {}
        #: module key -> (``MetricConfig`` oneof name, its message)
        self._metric_kinds: dict[str, tuple[str, Any]] = {}
        self._train_metric_modules = nn.ModuleDict()
        #: module key -> (``TrainMetricConfig`` oneof name, display name)
        self._train_metric_names: dict[str, tuple[str, str]] = {}
        if (
            model_config.train_metrics
            and type(self).update_train_metric is BaseModel.update_train_metric
        ):
            raise ConfigError(
                f"model_config.train_metrics: {type(self).__name__} computes no training "
                "metrics (remove train_metrics)"
            )
        if model_config.HasField("variational_dropout") and not self.honours_variational_dropout:
            raise ConfigError(
                f"model_config.variational_dropout: not supported by {type(self).__name__}"
            )

    # -- contract --------------------------------------------------------------------------

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Model outputs for a batch."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Same as :meth:`predict` (what export and DMP call)."""
        return self.predict(batch)

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Named scalar losses."""
        raise NotImplementedError

    def update_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Accumulate evaluation metrics over a batch."""
        raise NotImplementedError

    def compute_metric(self) -> dict[str, float]:
        """Metric values accumulated so far, by display name (``recall@5``, ``auc``)."""
        return {
            display: float(self._metric_modules[key].compute())
            for key, display in self._metric_names.items()
        }

    def reset_metric(self) -> None:
        """Forget accumulated metric state (before an evaluation pass)."""
        for metric in self._metric_modules.values():
            metric.reset()

    def update_train_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Feed a training batch to the ``train_metrics`` (the engine calls it per step)."""
        raise NotImplementedError

    def compute_train_metric(self) -> dict[str, torch.Tensor]:
        """Smoothed training metric values by display name (0 before ``decay_step`` steps)."""
        return {
            display: self._train_metric_modules[key].compute()
            for key, (_, display) in self._train_metric_names.items()
        }

    def set_is_inference(self, is_inference: bool) -> None:
        """Switch to the export/serving view (applied before any export wrapper is built).

        Every submodule that has an ``_is_inference`` attribute gets the flag, so towers
        with a separate serving view (HSTUMatch's scalar item tower) switch too.
        """
        for module in self.modules():
            if module is self or hasattr(module, "_is_inference"):
                module._is_inference = is_inference

    # -- export contract -------------------------------------------------------------------

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predictions from the embedding group's output (the part an exporter traces).

        Models whose ``predict`` is ``dense_forward(self.embedding_group(batch))`` implement
        this; in the inference view it must be traceable (no data-dependent Python).
        """
        raise NotImplementedError(f"{type(self).__name__} does not split sparse and dense")

    def export_towers(self) -> dict[str, nn.Module]:
        """Towers exported separately, by name (match models); empty: export the model whole.

        A tower has ``features`` and ``feature_groups`` (what it reads, in the current
        view) and ``tower_embedding(grouped) -> (rows, D)``; one that owns its tables also
        has an ``embedding_group``.
        """
        return {}

    @property
    def is_inference(self) -> bool:
        """Whether the export/serving view is active."""
        return self._is_inference

    @classmethod
    def export_contract_error(cls) -> str | None:
        """Why models of this class cannot be exported, or None when they can.

        Exportable models implement ``dense_forward(grouped)`` next to an ``embedding_group``
        (``predict`` = ``dense_forward(embedding_group(batch))``), or ``export_towers()``.
        ``tzrec run`` checks this before training; ``tzrec export`` refuses in one line.
        """
        if cls.dense_forward is not BaseModel.dense_forward:
            return None
        if cls.export_towers is not BaseModel.export_towers:
            return None
        return f"{cls.__name__} implements neither dense_forward(grouped) nor export_towers()"

    # -- public accessors (what plugins use; see tzrec.models.plugin_api) -------------------

    @property
    def model_config(self) -> Any:
        """This model's own config: the ``ModelConfig`` oneof member or plugin extension."""
        return self._model_config

    @property
    def base_model_config(self) -> model_pb2.ModelConfig:
        """The whole ``ModelConfig`` (feature groups, losses, metrics, ...)."""
        return self._base_model_config

    @property
    def features(self) -> list[BaseFeature]:
        """The features the model was built with (as resolved from the config)."""
        return self._features

    @property
    def labels(self) -> list[str]:
        """Label field names (``data_config.label_fields``)."""
        return self._labels

    def group(self, name: str) -> model_pb2.FeatureGroupConfig:
        """The feature group named ``name``; a one-line ConfigError naming the groups if absent."""
        return self._group(name)

    # -- helpers ---------------------------------------------------------------------------

    def _init_losses(self, num_class: int = 1, allowed: Sequence[str] | None = None) -> None:
        if not self._base_model_config.losses:
            raise ConfigError(f"model_config.{self._model_name}: set at least one entry in losses")
        for cfg in self._base_model_config.losses:
            name, loss = create_loss(cfg, num_class=num_class)
            if allowed is not None and name not in allowed:
                raise ConfigError(
                    f"model_config.losses: {self._model_name} supports {', '.join(allowed)}, "
                    f"not {name}"
                )
            self._loss_modules[name] = loss

    def _init_metrics(self, num_class: int = 1) -> None:
        for cfg in self._base_model_config.metrics:
            name, display, metric = create_metric(cfg, num_class=num_class)
            key = metric_key(display)
            self._metric_modules[key] = metric
            self._metric_names[key] = display
            self._metric_kinds[key] = (name, getattr(cfg, name))

    def _init_train_metrics(self, num_class: int = 1, allowed: Sequence[str] = ()) -> None:
        """Build ``model_config.train_metrics``; a kind outside ``allowed`` is one line."""
        for cfg in self._base_model_config.train_metrics:
            kind = cfg.WhichOneof("metric")
            if kind is not None and kind not in allowed:
                raise ConfigError(
                    f"model_config.train_metrics: {type(self).__name__} supports "
                    f"{', '.join(allowed)}, not {kind}"
                )
            if cfg.decay_step == 0 or not 0.0 <= cfg.decay_rate <= 1.0:
                raise ConfigError(
                    f"model_config.train_metrics.{kind}: decay_step must be > 0 and "
                    f"decay_rate in [0, 1], got {cfg.decay_step} and {cfg.decay_rate}"
                )
            name, display, wrapper = create_train_metric(cfg, num_class=num_class)
            key = metric_key(display)
            if key in self._train_metric_names:
                raise ConfigError(f"model_config.train_metrics: {display} is set twice")
            self._train_metric_modules[key] = wrapper
            self._train_metric_names[key] = (name, display)

    @staticmethod
    def row_values(batch: Batch, name: str, what: str) -> torch.Tensor:
        """One int64 value per batch row of the feature or label ``name`` (group/session ids).

        Raises:
            DataError: ``name`` is neither a base-group feature nor a label of the batch.
        """
        from tzrec.core.errors import DataError

        kjt = batch.sparse_features.get(BASE_DATA_GROUP)
        if kjt is not None and name in kjt.keys():
            return kjt[name].to_padded_dense(1)[:, 0].to(torch.int64)
        dense = batch.dense_features.get(BASE_DATA_GROUP)
        if dense is not None and name in dense.keys():
            return dense.to_dict()[name].reshape(-1).to(torch.int64)
        if name in batch.labels:
            return batch.labels[name].reshape(-1).to(torch.int64)
        raise DataError(f"{what} '{name}' is not a feature or label of the batch")

    def _sample_weight(self, batch: Batch) -> torch.Tensor | None:
        if not self._sample_weights:
            return None
        return batch.sample_weights[self._sample_weights[0]]

    def _group(self, name: str) -> model_pb2.FeatureGroupConfig:
        for group in self._base_model_config.feature_groups:
            if group.group_name == name:
                return group
        names = ", ".join(g.group_name for g in self._base_model_config.feature_groups)
        raise ConfigError(
            f"model_config.{self._model_name}: input group '{name}' is not in feature_groups "
            f"(groups: {names})"
        )
