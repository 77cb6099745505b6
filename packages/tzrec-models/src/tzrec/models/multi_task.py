"""Multi-task ranking: :class:`MultiTaskRank`, the base of MMoE, PLE, DBMTL, DC2VR, PEPNet.

A model's config has ``task_towers`` (``TaskTower``, ``BayesTaskTower`` or
``InterventionTaskTower``); each task has a ``tower_name``, a ``label_name`` (for Bayes /
intervention towers the ``label_fields`` entry of the same position when unset), its own
``losses``, ``metrics``, ``train_metrics`` and ``num_class``. The subclass computes one
``(B, num_class)`` output per tower and :meth:`MultiTaskRank.output` turns them into
predictions named as upstream: ``logits_<tower>`` / ``probs_<tower>`` for
``binary_cross_entropy`` / ``binary_focal_loss`` (sigmoid), ``softmax_cross_entropy`` and
``jrc_loss`` (softmax; two classes also give ``probs1_<tower>``), ``y_<tower>`` for
``l2_loss``. Losses are ``<loss>_<tower>``, metrics ``<metric>_<tower>``.

Loss weights, as upstream: a task that sets ``weight``, ``sample_weight_name`` or
``task_space_indicator_label`` gets per-row weights ``w = s * (in_w * [ind > 0] + out_w *
[ind <= 0])`` (``s`` the sample weight or 1, ``ind`` the indicator label), normalised
``w / mean(w)`` (0 when the mean is 0) and scaled by ``weight``; its loss is
``mean(loss_i * w_i)``. Other tasks take the plain mean. ``use_pareto_loss_weight`` is
refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tzrec.core.config import which_oneof
from tzrec.core.engine.guards import LabelDomain
from tzrec.core.errors import ConfigError, DataError
from tzrec.data import BaseFeature, Batch
from tzrec.models.base import BaseModel, metric_key
from tzrec.models.embedding import EmbeddingGroup
from tzrec.models.losses import create_loss
from tzrec.models.metrics.factory import create_metric, create_train_metric
from tzrec.models.modules.variational_dropout import (
    apply_group_variational_dropouts,
    build_group_variational_dropouts,
)
from tzrec.protos import model_pb2, tower_pb2

_SIGMOID_LOSSES = ("binary_cross_entropy", "binary_focal_loss")
_SOFTMAX_LOSSES = ("softmax_cross_entropy", "jrc_loss")
_REGRESSION_LOSSES = ("l2_loss",)
_REGRESSION_METRICS = ("mean_absolute_error", "mean_squared_error", "xauc", "grouped_xauc")
_GROUPED_METRICS = ("grouped_auc", "grouped_xauc")
_METRICS = (
    "auc",
    "multiclass_auc",
    "accuracy",
    "grouped_auc",
    "normalized_entropy",
    *_REGRESSION_METRICS,
)
_TRAIN_METRICS = ("auc", "accuracy", "mean_absolute_error", "mean_squared_error", "xauc")


@dataclass
class TaskLoss:
    """One loss of a task: module key (``<loss>_<tower>``), oneof name, JRC session column."""

    key: str
    kind: str
    session_name: str = ""


@dataclass
class TaskMetric:
    """One (training) metric of a task: module key, oneof name, prediction it reads."""

    key: str
    kind: str
    prediction: str
    grouping_key: str = ""


@dataclass
class Task:
    """A task tower's settings, resolved and checked once from its config message."""

    name: str
    label_name: str
    num_class: int
    weight: float
    weighted: bool
    sample_weight_name: str = ""
    space_label: str = ""
    in_space_weight: float = 1.0
    out_space_weight: float = 1.0
    losses: list[TaskLoss] = field(default_factory=list)
    metrics: list[TaskMetric] = field(default_factory=list)
    train_metrics: list[TaskMetric] = field(default_factory=list)

    def prediction_keys(self) -> list[str]:
        """The names of this task's predictions (``logits_ctr``, ``probs_ctr``, ...)."""
        keys: list[str] = []
        for loss in self.losses:
            if loss.kind in _REGRESSION_LOSSES:
                names = ["y"]
            elif loss.kind in _SOFTMAX_LOSSES and self.num_class == 2:
                names = ["logits", "probs", "probs1"]
            else:
                names = ["logits", "probs"]
            keys += [f"{n}_{self.name}" for n in names if f"{n}_{self.name}" not in keys]
        return keys


def task_predictions(task: Task, output: torch.Tensor, suffix: str = "") -> dict[str, torch.Tensor]:
    """A task's predictions from its ``(B, num_class)`` output (names end in ``suffix``)."""
    predictions: dict[str, torch.Tensor] = {}
    end = f"_{task.name}{suffix}"
    for loss in task.losses:
        if loss.kind in _SIGMOID_LOSSES:
            logits = output.squeeze(1)
            predictions["logits" + end] = logits
            predictions["probs" + end] = torch.sigmoid(logits)
        elif loss.kind in _SOFTMAX_LOSSES:
            probs = torch.softmax(output, dim=1)
            predictions["logits" + end] = output
            predictions["probs" + end] = probs
            if task.num_class == 2:
                predictions["probs1" + end] = probs[:, 1]
        else:
            predictions["y" + end] = output.squeeze(1)
    return predictions


class MultiTaskRank(BaseModel):
    """Base of multi-task rank models: per-task predictions, weighted losses, metrics.

    Subclasses build ``embedding_group`` (see :meth:`init_input`), one output per task in
    :attr:`tasks` order, and return :meth:`output` of them from ``dense_forward``.
    """

    #: applies ``model_config.variational_dropout`` to the groups of :meth:`init_input`
    honours_variational_dropout = True

    def __init__(
        self,
        model_config: model_pb2.ModelConfig,
        features: Sequence[BaseFeature],
        labels: Sequence[str],
        sample_weights: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_config, features, labels, sample_weights, **kwargs)
        where = f"model_config.{self._model_name}"
        base = self._base_model_config
        if base.use_pareto_loss_weight:
            raise ConfigError(
                "model_config.use_pareto_loss_weight: not supported by tzrec (pareto "
                "loss weighting is not implemented); weight tasks with task_towers[].weight"
            )
        for name in ("losses", "metrics", "train_metrics"):
            if len(getattr(base, name)):
                raise ConfigError(
                    f"model_config.{name}: {self._model_name} takes its {name} from "
                    f"{where}.task_towers[].{name}"
                )
        if base.HasField("num_class"):
            raise ConfigError(
                f"model_config.num_class: {self._model_name} takes num_class from "
                f"{where}.task_towers[].num_class"
            )
        self._where = where
        self._tasks = self._build_tasks(list(self._model_config.task_towers))
        used = {t.sample_weight_name for t in self._tasks if t.sample_weight_name}
        unused = [w for w in self._sample_weights if w not in used]
        if unused:
            raise ConfigError(
                f"data_config.sample_weight_fields {', '.join(unused)}: a multi-task model "
                f"weights a task by {where}.task_towers[].sample_weight_name; name it there"
            )
        self.group_variational_dropouts: nn.ModuleDict | None = None
        self._variational_dropout_losses: dict[str, torch.Tensor] = {}

    # -- construction ----------------------------------------------------------------------

    @property
    def tasks(self) -> list[Task]:
        """The tasks in ``task_towers`` order."""
        return self._tasks

    def init_input(self, groups: Sequence[str]) -> EmbeddingGroup:
        """Build ``embedding_group`` over the named feature groups (and their dropouts)."""
        self.embedding_group = EmbeddingGroup(self._features, [self._group(g) for g in groups])
        self.group_variational_dropouts = build_group_variational_dropouts(
            self._base_model_config, self.embedding_group, list(groups)
        )
        return self.embedding_group

    def apply_variational_dropout(
        self, grouped: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``grouped`` with ``variational_dropout`` applied (its losses kept for :meth:`loss`)."""
        grouped, losses = apply_group_variational_dropouts(self.group_variational_dropouts, grouped)
        self._variational_dropout_losses = losses if self.training else {}
        return grouped

    def _build_tasks(self, towers: list[Any]) -> list[Task]:
        at_all = f"{self._where}.task_towers"
        if not towers:
            raise ConfigError(f"{at_all}: set at least one task tower")
        tasks: list[Task] = []
        for i, cfg in enumerate(towers):
            at = f"{at_all}[{i}]"
            name = cfg.tower_name
            if not name:
                raise ConfigError(f"{at}.tower_name is required")
            if any(t.name == name for t in tasks):
                raise ConfigError(f"{at}.tower_name '{name}' is used by two towers")
            label = cfg.label_name
            if not label and i < len(self._labels) and not isinstance(cfg, tower_pb2.TaskTower):
                label = self._labels[i]  # Bayes/intervention towers: label_fields by order
            if not label:
                raise ConfigError(f"{at}.label_name is required")
            self._check_label(f"{at}.label_name", label)
            if cfg.pareto_min_loss_weight:
                raise ConfigError(
                    f"{at}.pareto_min_loss_weight: pareto loss weighting is not supported"
                )
            sample_weight = getattr(cfg, "sample_weight_name", "")
            if sample_weight and sample_weight not in self._sample_weights:
                known = ", ".join(self._sample_weights) or "none"
                raise ConfigError(
                    f"{at}.sample_weight_name '{sample_weight}' is not in "
                    f"data_config.sample_weight_fields ({known})"
                )
            space = cfg.task_space_indicator_label
            if space:
                self._check_label(f"{at}.task_space_indicator_label", space)
            task = Task(
                name=name,
                label_name=label,
                num_class=int(cfg.num_class),
                weight=float(cfg.weight),
                weighted=bool(sample_weight or cfg.HasField("weight") or space),
                sample_weight_name=sample_weight,
                space_label=space,
                in_space_weight=float(cfg.in_task_space_weight),
                out_space_weight=float(cfg.out_task_space_weight),
            )
            self._build_losses(at, task, cfg.losses)
            self._build_metrics(at, task, cfg.metrics)
            self._build_train_metrics(at, task, cfg.train_metrics)
            tasks.append(task)
        return tasks

    def _check_label(self, where: str, label: str) -> None:
        if label not in self._labels:
            raise ConfigError(
                f"{where} '{label}' is not in data_config.label_fields "
                f"({', '.join(self._labels) or 'none'})"
            )

    def _build_losses(self, at: str, task: Task, configs: Sequence[Any]) -> None:
        if not configs:
            raise ConfigError(f"{at}.losses: set at least one loss")
        n = task.num_class
        for cfg in configs:
            chosen = which_oneof(cfg, "loss")
            kind = chosen[0] if chosen else ""
            if kind in _SIGMOID_LOSSES + _REGRESSION_LOSSES and n != 1:
                raise ConfigError(f"{at}.num_class must be 1 for {kind}, got {n}")
            if kind == "jrc_loss" and n != 2:
                raise ConfigError(f"{at}.num_class must be 2 for jrc_loss, got {n}")
            if kind == "softmax_cross_entropy" and n < 2:
                raise ConfigError(f"{at}.num_class must be >= 2 for softmax_cross_entropy")
            supported = _SIGMOID_LOSSES + _SOFTMAX_LOSSES + _REGRESSION_LOSSES
            if kind not in supported:
                raise ConfigError(
                    f"{at}.losses: {self._model_name} supports {', '.join(supported)}, not "
                    f"{kind or 'an empty loss'}"
                )
            try:
                kind, module = create_loss(cfg, num_class=n, reduction="none")
            except ValueError as e:
                raise ConfigError(f"{at}.losses: {e}") from None
            key = f"{kind}_{task.name}"
            if key in self._loss_modules:
                raise ConfigError(f"{at}.losses: {kind} is set twice")
            session = cfg.jrc_loss.session_name if kind == "jrc_loss" else ""
            if kind == "jrc_loss" and not session:
                raise ConfigError(f"{at}.losses.jrc_loss.session_name is required")
            self._loss_modules[key] = module
            task.losses.append(TaskLoss(key, kind, session))

    def _metric_prediction(self, at: str, task: Task, kind: str) -> str:
        if kind in _REGRESSION_METRICS:
            pred = f"y_{task.name}"
        elif kind in ("auc", "grouped_auc", "normalized_entropy"):
            if task.num_class > 2:
                raise ConfigError(f"{at}: {kind} needs num_class <= 2, got {task.num_class}")
            pred = f"probs_{task.name}" if task.num_class == 1 else f"probs1_{task.name}"
        else:
            pred = f"probs_{task.name}"
        if pred not in task.prediction_keys():
            need = (
                "a regression loss (l2_loss)"
                if kind in _REGRESSION_METRICS
                else ("a classification loss (binary_cross_entropy, softmax_cross_entropy, ...)")
            )
            raise ConfigError(f"{at}: {kind} needs {need}")
        return pred

    def _build_metrics(self, at: str, task: Task, configs: Sequence[Any]) -> None:
        for cfg in configs:
            kind = cfg.WhichOneof("metric")
            if kind not in _METRICS:
                raise ConfigError(
                    f"{at}.metrics: {self._model_name} supports {', '.join(_METRICS)}, not {kind}"
                )
            pred = self._metric_prediction(f"{at}.metrics.{kind}", task, kind)
            try:
                kind, display, metric = create_metric(cfg, num_class=task.num_class)
            except ValueError as e:
                raise ConfigError(f"{at}.metrics: {e}") from None
            grouping = getattr(cfg, kind).grouping_key if kind in _GROUPED_METRICS else ""
            if kind in _GROUPED_METRICS and not grouping:
                raise ConfigError(f"{at}.metrics.{kind}.grouping_key is required")
            display = f"{display}_{task.name}"
            key = metric_key(display)
            if key in self._metric_modules:
                raise ConfigError(f"{at}.metrics: {kind} is set twice")
            self._metric_modules[key] = metric
            self._metric_names[key] = display
            self._metric_kinds[key] = (kind, getattr(cfg, kind))
            task.metrics.append(TaskMetric(key, kind, pred, grouping))

    def _build_train_metrics(self, at: str, task: Task, configs: Sequence[Any]) -> None:
        for cfg in configs:
            kind = cfg.WhichOneof("metric")
            if kind not in _TRAIN_METRICS:
                raise ConfigError(
                    f"{at}.train_metrics: {self._model_name} supports "
                    f"{', '.join(_TRAIN_METRICS)}, not {kind}"
                )
            if cfg.decay_step == 0 or not 0.0 <= cfg.decay_rate <= 1.0:
                raise ConfigError(
                    f"{at}.train_metrics.{kind}: decay_step must be > 0 and decay_rate in "
                    f"[0, 1], got {cfg.decay_step} and {cfg.decay_rate}"
                )
            pred = self._metric_prediction(f"{at}.train_metrics.{kind}", task, kind)
            try:
                kind, display, wrapper = create_train_metric(cfg, num_class=task.num_class)
            except ValueError as e:
                raise ConfigError(f"{at}.train_metrics: {e}") from None
            display = f"{display}_{task.name}"
            key = metric_key(display)
            if key in self._train_metric_modules:
                raise ConfigError(f"{at}.train_metrics: {kind} is set twice")
            self._train_metric_modules[key] = wrapper
            self._train_metric_names[key] = (kind, display)
            task.train_metrics.append(TaskMetric(key, kind, pred))

    # -- predictions -----------------------------------------------------------------------

    def output(self, tower_outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every task's predictions from its ``(B, num_class)`` output, by tower name."""
        predictions: dict[str, torch.Tensor] = {}
        for task in self._tasks:
            predictions.update(task_predictions(task, tower_outputs[task.name]))
        return predictions

    def select_predictions(
        self, predictions: dict[str, torch.Tensor], batch: Batch
    ) -> dict[str, torch.Tensor]:
        """The predictions losses and metrics read (a hook: PEPNet picks each row's domain)."""
        return predictions

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``dense_forward`` of the embedded batch."""
        return self.dense_forward(self.embedding_group(batch))

    # -- losses and metrics ----------------------------------------------------------------

    def task_label(self, batch: Batch, task: Task) -> torch.Tensor:
        """The task's label column of the batch (a one-line DataError when absent)."""
        if task.label_name not in batch.labels:
            raise DataError(f"label '{task.label_name}' of task '{task.name}' is not in the batch")
        return batch.labels[task.label_name]

    def task_loss_weight(self, batch: Batch, task: Task) -> torch.Tensor | None:
        """Per-row loss weights of a weighted task (module doc), None for a plain mean."""
        if not task.weighted:
            return None
        label = self.task_label(batch, task)
        if task.sample_weight_name:
            w = batch.sample_weights[task.sample_weight_name].reshape(-1).to(torch.float32)
        else:
            w = torch.ones(label.shape[0], dtype=torch.float32, device=label.device)
        if task.space_label:
            inside = (batch.labels[task.space_label].reshape(-1) > 0).to(torch.float32)
            w = w * (task.in_space_weight * inside + task.out_space_weight * (1 - inside))
        mean = w.mean()
        w = torch.where(mean != 0, w / torch.where(mean != 0, mean, 1.0), torch.zeros_like(w))
        return w * task.weight

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Every task's losses ``<loss>_<tower>``, weighted as the module doc says."""
        predictions = self.select_predictions(predictions, batch)
        losses: dict[str, torch.Tensor] = {}
        for task in self._tasks:
            label = self.task_label(batch, task)
            weight = self.task_loss_weight(batch, task)
            for entry in task.losses:
                module = self._loss_modules[entry.key]
                if entry.kind == "jrc_loss":
                    sessions = self.row_values(batch, entry.session_name, "jrc_loss.session_name")
                    per_row = module(
                        predictions[f"logits_{task.name}"], label, session_ids=sessions
                    )
                elif entry.kind in _REGRESSION_LOSSES:
                    per_row = module(predictions[f"y_{task.name}"], label)
                else:
                    per_row = module(predictions[f"logits_{task.name}"], label)
                losses[entry.key] = per_row.mean() if weight is None else (per_row * weight).mean()
        losses.update(self._variational_dropout_losses)
        return losses

    def update_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Feed every task's metrics with its predictions and label."""
        predictions = self.select_predictions(predictions, batch)
        for task in self._tasks:
            if not task.metrics:
                continue
            label = self.task_label(batch, task)
            for entry in task.metrics:
                metric = self._metric_modules[entry.key]
                if entry.grouping_key:
                    group = self.row_values(batch, entry.grouping_key, f"{entry.kind}.grouping_key")
                    metric.update(predictions[entry.prediction], label, group)
                else:
                    metric.update(predictions[entry.prediction], label)

    def update_train_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Feed every task's ``train_metrics`` with a training batch."""
        predictions = self.select_predictions(predictions, batch)
        for task in self._tasks:
            for entry in task.train_metrics:
                self._train_metric_modules[entry.key].update(
                    predictions[entry.prediction].detach(), self.task_label(batch, task)
                )

    def label_domains(self) -> dict[str, LabelDomain]:
        """Each task label's accepted values (the tightest over the tasks reading it)."""
        domains: dict[str, LabelDomain] = {}
        for task in self._tasks:
            for entry in task.losses:
                if entry.kind in _SIGMOID_LOSSES or entry.kind == "jrc_loss":
                    new = LabelDomain(0.0, 1.0, False, entry.kind)
                elif entry.kind == "softmax_cross_entropy":
                    new = LabelDomain(0.0, float(task.num_class - 1), True, entry.kind)
                else:
                    continue
                old = domains.get(task.label_name)
                if old is None or (new.high - new.low, new.integral) < (
                    old.high - old.low,
                    old.integral,
                ):
                    domains[task.label_name] = new
        return domains


__all__ = ["MultiTaskRank", "Task", "TaskLoss", "TaskMetric", "task_predictions"]
