"""DlrmHSTU: multi-task ranking with an HSTU transducer (registered as ``dlrm_hstu``).

Every row is one request: a user interaction history (the JAGGED_SEQUENCE group ``uih``)
and the candidates to score (the JAGGED_SEQUENCE group ``candidate``). The
``contextual_preprocessor`` turns a row into ``[contextual tokens, history, candidates]``
(contextual tokens from the DEEP group ``contextual``; actions from ``uih_action`` /
``uih_watchtime``; timestamps from ``uih_timestamp`` and ``candidate_timestamp``), the
positional encoder adds position and time embeddings (candidates share one position), an
:class:`~tzrec.hstu.stu.STUStack` runs with ``num_targets`` = the row's candidate count, so
a candidate sees the contextual tokens, the history and itself but never another candidate,
and the output postprocessor is applied to each candidate's token (with its timestamp).

``fusion_mtl_tower`` scores a candidate from ``user_token * item_mlp(candidate)``: an
optional shared MLP, then one linear head per task (``num_class`` wide). A task's label is
the per-candidate column ``label_name`` (``cand_seq__action_weight``), turned into 0/1 by
``task_bitmask`` when set. Outputs, one row per candidate (``sum(candidates)`` rows):
``logits_<task>`` / ``probs_<task>`` (and ``probs1_<task>`` for two classes) for
classification losses, ``y_<task>`` for ``l2_loss``. Losses are ``<loss>_<task>``, metrics
``<metric>_<task>``.

Export view: :attr:`DlrmHSTU.embedding_group` embeds a batch and :meth:`DlrmHSTU.dense_forward`
computes every prediction from its output; with ``set_is_inference(True)`` dense_forward has
no data-dependent Python (no ``.item()``, no branches on values) and gives the attention the
static ``max_seq_len`` of the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import distributed as dist
from torch import nn

from tzrec.core.config import which_oneof
from tzrec.core.errors import ConfigError, DataError
from tzrec.data import BaseFeature, Batch
from tzrec.hstu.pipeline import HISTORY_ROLES, HSTUEncoder, role_groups
from tzrec.hstu.preprocessors import CANDIDATE, CANDIDATE_TIMESTAMP, CONTEXTUAL, UIH
from tzrec.kernels import jagged_positions
from tzrec.models.base import BaseModel, metric_key
from tzrec.models.embedding import EmbeddingGroup
from tzrec.models.layout import sequence_key, sequence_length_key
from tzrec.models.losses import create_loss
from tzrec.models.metrics.factory import create_metric
from tzrec.models.modules.mlp import MLP
from tzrec.protos import model_pb2, module_pb2, tower_pb2

FIELD = "model_config.dlrm_hstu"
_CLASSIFICATION_LOSSES = ("binary_cross_entropy", "binary_focal_loss")
_MULTICLASS_LOSSES = ("softmax_cross_entropy", "jrc_loss")
_REGRESSION_LOSSES = ("l2_loss",)
_REGRESSION_METRICS = ("mean_absolute_error", "mean_squared_error", "xauc", "grouped_xauc")


@dataclass
class _TaskLoss:
    key: str
    name: str
    session_name: str = ""


@dataclass
class _TaskMetric:
    key: str
    name: str
    prediction: str
    grouping_key: str = ""


@dataclass
class _Task:
    name: str
    label_name: str
    bitmask: int | None
    num_class: int
    weight: float
    classification: bool
    losses: list[_TaskLoss] = field(default_factory=list)
    metrics: list[_TaskMetric] = field(default_factory=list)


def candidate_positions(
    seq_offsets: torch.Tensor, num_targets: torch.Tensor, total: int | torch.SymInt
) -> torch.Tensor:
    """Where each candidate sits in the jagged token sequence (they end every row).

    Args:
        seq_offsets: (B + 1,) offsets of the full rows.
        num_targets: (B,) candidates per row.
        total: sum of ``num_targets`` (the candidates tensor's first size).
    """
    num_targets = num_targets.to(torch.int64)
    cand_offsets = torch.cat([num_targets.new_zeros(1), torch.cumsum(num_targets, 0)])
    rows, within = jagged_positions(cand_offsets, total)
    return seq_offsets[rows + 1] - num_targets[rows] + within


class DlrmHSTU(BaseModel):
    """DlrmHSTU (``model_config.dlrm_hstu``): HSTU ranking, one prediction per candidate."""

    #: predictions have one row per candidate of this group (exporters and ``tzrec predict``
    #: gather each request's candidates back into one row)
    per_candidate_group = CANDIDATE
    #: config path in messages (UltraHSTU: ``model_config.ultra_hstu``)
    field = FIELD

    def __init__(
        self,
        model_config: model_pb2.ModelConfig,
        features: Sequence[BaseFeature],
        labels: Sequence[str],
        sample_weights: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_config, features, labels, sample_weights, **kwargs)
        cfg = self._model_config
        field = self.field
        kernel = int(self._base_model_config.kernel)
        groups = self._role_groups()
        self.embedding_group = EmbeddingGroup(self._features, list(groups.values()))
        self.max_seq_len = int(cfg.max_seq_len)
        if self.max_seq_len <= 0:
            raise ConfigError(
                f"{field}.max_seq_len must be > 0 (contextual tokens + history + candidates)"
            )
        self.global_average_loss = bool(cfg.enable_global_average_loss)
        num_contextual = 0
        if CONTEXTUAL in groups:
            num_contextual = (
                1 if cfg.concat_contextual_features else len(groups[CONTEXTUAL].feature_names)
            )
        self._build_encoders(groups, num_contextual, kernel)
        self.embedding_dim = sum(e.embedding_dim for e in self.encoders_list())
        candidate_dim = self.encoders_list()[0].input_dims[CANDIDATE]

        hidden = int(cfg.item_embedding_hidden_dim)
        if hidden <= 0:
            raise ConfigError(f"{field}.item_embedding_hidden_dim must be > 0")
        self.item_mlp = nn.Sequential(
            nn.Linear(candidate_dim, hidden),
            nn.LayerNorm(hidden),
            nn.SiLU(),
            nn.Linear(hidden, self.embedding_dim),
            nn.LayerNorm(self.embedding_dim),
        )
        tower = cfg.fusion_mtl_tower
        self.tower_mlp = (
            MLP.from_config(self.embedding_dim, tower.mlp)
            if tower.HasField("mlp") and tower.mlp.hidden_units
            else None
        )
        width = self.tower_mlp.output_dim() if self.tower_mlp is not None else self.embedding_dim
        self._tasks = self._build_tasks(tower)
        self.task_dims = [t.num_class for t in self._tasks]
        self.task_head = nn.Linear(width, sum(self.task_dims))
        self._candidate_feature = self._features_by_name()[groups[CANDIDATE].feature_names[0]]

    # -- construction ----------------------------------------------------------------------

    def _encoder(
        self,
        hstu: module_pb2.HSTU,
        groups: dict[str, model_pb2.FeatureGroupConfig],
        num_contextual: int,
        kernel: int,
        where: str,
    ) -> HSTUEncoder:
        """One transducer over ``groups`` (role → group; ``groups[UIH]`` is its history)."""
        return HSTUEncoder(
            hstu,
            self.embedding_group,
            groups,
            where=where,
            uih_group=groups[UIH].group_name,
            candidate_group=CANDIDATE,
            num_contextual=num_contextual,
            max_uih_len=self._max_length(groups[UIH]),
            max_candidates=self._max_length(groups[CANDIDATE]),
            scaling_seqlen=self.max_seq_len,
            ascending=bool(self._model_config.sequence_timestamp_is_ascending),
            kernel=kernel,
        )

    def _build_encoders(
        self, groups: dict[str, model_pb2.FeatureGroupConfig], num_contextual: int, kernel: int
    ) -> None:
        """DlrmHSTU's one transducer, ``self.encoder`` (UltraHSTU builds one per channel)."""
        self.encoder = self._encoder(
            self._model_config.hstu, groups, num_contextual, kernel, f"{self.field}.hstu"
        )

    def encoders_list(self) -> list[HSTUEncoder]:
        """The transducers whose candidate outputs are concatenated (DlrmHSTU: one)."""
        return [self.encoder]

    def _role_groups(self) -> dict[str, model_pb2.FeatureGroupConfig]:
        groups = list(self._base_model_config.feature_groups)
        names = [g.group_name for g in groups]
        for role in (UIH, CANDIDATE):
            if role not in names:
                raise ConfigError(
                    f"{self.field} needs a JAGGED_SEQUENCE feature group named '{role}' "
                    f"(groups: {', '.join(names) or 'none'})"
                )
        roles = (UIH, CANDIDATE, CONTEXTUAL, *HISTORY_ROLES, CANDIDATE_TIMESTAMP)
        return role_groups(groups, roles, "dlrm_hstu")

    def _features_by_name(self) -> dict[str, BaseFeature]:
        return {f.name: f for f in self._features}

    def _max_length(self, group: model_pb2.FeatureGroupConfig) -> int:
        by_name = self._features_by_name()
        lengths = [by_name[n].sequence_length or 0 for n in group.feature_names if n in by_name]
        return max(lengths, default=0)

    def _build_tasks(self, tower: tower_pb2.FusionMTLTower) -> list[_Task]:
        where = f"{self.field}.fusion_mtl_tower.task_configs"
        if not tower.task_configs:
            raise ConfigError(f"{where}: set at least one task")
        tasks: list[_Task] = []
        for i, tc in enumerate(tower.task_configs):
            at = f"{where}[{i}]"
            name = tc.task_name
            if not name:
                raise ConfigError(f"{at}.task_name is required")
            if any(t.name == name for t in tasks):
                raise ConfigError(f"{at}.task_name '{name}' is used by two tasks")
            if not tc.label_name:
                raise ConfigError(f"{at}.label_name is required")
            if tc.label_name not in self._labels:
                raise ConfigError(
                    f"{at}.label_name '{tc.label_name}' is not in data_config.label_fields "
                    f"({', '.join(self._labels) or 'none'})"
                )
            if not tc.losses:
                raise ConfigError(f"{at}.losses: set at least one loss")
            num_class = int(tc.num_class)
            task = _Task(
                name=name,
                label_name=tc.label_name,
                bitmask=int(tc.task_bitmask) if tc.HasField("task_bitmask") else None,
                num_class=num_class,
                weight=float(tc.weight),
                classification=False,
            )
            for loss_cfg in tc.losses:
                chosen = which_oneof(loss_cfg, "loss")
                loss_name = chosen[0] if chosen else ""
                self._check_loss(at, loss_name, num_class)
                try:
                    loss_name, module = create_loss(loss_cfg, num_class=num_class)
                except ValueError as e:
                    raise ConfigError(f"{at}.losses: {e}") from None
                key = f"{loss_name}_{name}"
                self._loss_modules[key] = module
                session = loss_cfg.jrc_loss.session_name if loss_name == "jrc_loss" else ""
                if loss_name == "jrc_loss" and not session:
                    raise ConfigError(f"{at}.losses.jrc_loss.session_name is required")
                task.losses.append(_TaskLoss(key, loss_name, session))
                task.classification |= loss_name not in _REGRESSION_LOSSES
            for metric_cfg in tc.metrics:
                try:
                    metric_name, display, metric = create_metric(metric_cfg, num_class=num_class)
                except ValueError as e:
                    raise ConfigError(f"{at}.metrics: {e}") from None
                regression = metric_name in _REGRESSION_METRICS
                if regression and not any(x.name in _REGRESSION_LOSSES for x in task.losses):
                    raise ConfigError(
                        f"{at}.metrics: {metric_name} needs a regression loss (l2_loss)"
                    )
                if not regression and not task.classification:
                    raise ConfigError(
                        f"{at}.metrics: {metric_name} needs a classification loss "
                        "(binary_cross_entropy, jrc_loss, ...)"
                    )
                grouping = getattr(metric_cfg.grouped_auc, "grouping_key", "")
                if metric_name == "grouped_auc" and not grouping:
                    raise ConfigError(f"{at}.metrics.grouped_auc.grouping_key is required")
                display = f"{display}_{name}"
                key = metric_key(display)
                self._metric_modules[key] = metric
                self._metric_names[key] = display
                prediction = f"y_{name}" if regression else f"probs_{name}"
                task.metrics.append(
                    _TaskMetric(
                        key,
                        metric_name,
                        prediction,
                        grouping if metric_name == "grouped_auc" else "",
                    )
                )
            tasks.append(task)
        return tasks

    @staticmethod
    def _check_loss(at: str, loss_name: str, num_class: int) -> None:
        if loss_name in _CLASSIFICATION_LOSSES + _REGRESSION_LOSSES and num_class != 1:
            raise ConfigError(f"{at}.num_class must be 1 for {loss_name}, got {num_class}")
        if loss_name == "jrc_loss" and num_class != 2:
            raise ConfigError(f"{at}.num_class must be 2 for jrc_loss, got {num_class}")
        if loss_name == "softmax_cross_entropy" and num_class < 2:
            raise ConfigError(f"{at}.num_class must be >= 2 for softmax_cross_entropy")
        supported = _CLASSIFICATION_LOSSES + _MULTICLASS_LOSSES + _REGRESSION_LOSSES
        if loss_name not in supported:
            raise ConfigError(
                f"{at}.losses: dlrm_hstu supports {', '.join(supported)}, not "
                f"{loss_name or 'an empty loss'}"
            )

    # -- forward ---------------------------------------------------------------------------

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Predictions for every candidate of the batch (see the module doc)."""
        grouped = self.embedding_group(batch)
        for encoder in self.encoders_list():
            grouped = encoder.exact_timestamps(grouped, batch)
        return self.dense_forward(grouped)

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every prediction from the embedding group's output (the export entry point)."""
        candidates = grouped[sequence_key(CANDIDATE)]
        num_targets = grouped[sequence_length_key(CANDIDATE)]
        users = []
        for encoder in self.encoders_list():
            x, seq = encoder(grouped, check=not self._is_inference, max_seq_len=self.max_seq_len)
            index = candidate_positions(seq.offsets, num_targets, candidates.shape[0])
            users.append(
                encoder.postprocessor(
                    x.index_select(0, index), seq.timestamps.index_select(0, index)
                )
            )
        user = users[0] if len(users) == 1 else torch.cat(users, dim=1)
        fused = user * self.item_mlp(candidates.to(torch.float32))
        if self.tower_mlp is not None:
            fused = self.tower_mlp(fused)
        outputs = self.task_head(fused).split(self.task_dims, dim=1)
        predictions: dict[str, torch.Tensor] = {}
        for task, logits in zip(self._tasks, outputs, strict=True):
            predictions.update(self._task_outputs(task, logits))
        return predictions

    @staticmethod
    def _task_outputs(task: _Task, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        suffix = f"_{task.name}"
        for loss in task.losses:
            if loss.name in _CLASSIFICATION_LOSSES:
                squeezed = logits.squeeze(1)
                out["logits" + suffix] = squeezed
                out["probs" + suffix] = torch.sigmoid(squeezed)
            elif loss.name in _MULTICLASS_LOSSES:
                probs = torch.softmax(logits, dim=1)
                out["logits" + suffix] = logits
                out["probs" + suffix] = probs
                if task.num_class == 2:
                    out["probs1" + suffix] = probs[:, 1]
            else:
                out["y" + suffix] = logits.squeeze(1)
        return out

    # -- labels, losses and metrics --------------------------------------------------------

    def _candidate_counts(self, batch: Batch) -> torch.Tensor:
        f = self._candidate_feature
        if f.is_sparse:
            return batch.sparse_features[f.data_group][f.name].lengths().to(torch.int64)
        return batch.sequence_dense_features[f.name].lengths().to(torch.int64)

    def _label(self, batch: Batch, task: _Task, total: int) -> torch.Tensor:
        name = task.label_name
        if name in batch.sequence_dense_features:
            values = batch.sequence_dense_features[name].values().reshape(-1)
        elif name in batch.labels:
            values = batch.labels[name].reshape(-1)
        else:
            raise DataError(f"label '{name}' of task '{task.name}' is not in the batch")
        if values.numel() != total:
            raise DataError(
                f"label '{name}' has {values.numel()} values but the batch has {total} "
                "candidates; give every candidate one label"
            )
        if task.bitmask is not None:
            values = ((values.to(torch.int64) & task.bitmask) > 0).to(torch.float32)
        return values.to(torch.int64) if task.classification else values.to(torch.float32)

    def _row_values(self, batch: Batch, name: str, what: str) -> torch.Tensor:
        """One value per batch row of the feature or label ``name`` (session / group ids)."""
        return self.row_values(batch, name, what)

    def _per_candidate(self, row_values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return row_values.repeat_interleave(counts)

    def _loss_weight(self, total: int, device: torch.device) -> float:
        if not self.global_average_loss or not dist.is_initialized():
            return 1.0
        if dist.get_world_size() == 1:
            return 1.0
        count = torch.tensor(float(total), device=device)
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
        mean = float(count) / dist.get_world_size()
        return total / mean if mean > 0 else 1.0

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Every task's losses, ``<loss>_<task>``, scaled by the task's ``weight``."""
        counts = self._candidate_counts(batch)
        total = int(counts.sum())
        weight = self._sample_weight(batch)
        if weight is not None:
            weight = self._per_candidate(weight.reshape(-1), counts)
        scale = self._loss_weight(total, counts.device)
        losses: dict[str, torch.Tensor] = {}
        for task in self._tasks:
            label = self._label(batch, task, total)
            for entry in task.losses:
                module = self._loss_modules[entry.key]
                if entry.name == "jrc_loss":
                    sessions = self._per_candidate(
                        self._row_values(batch, entry.session_name, "jrc_loss.session_name"),
                        counts,
                    )
                    value = module(
                        predictions[f"logits_{task.name}"], label, weight, session_ids=sessions
                    )
                elif entry.name in _REGRESSION_LOSSES:
                    value = module(predictions[f"y_{task.name}"], label, weight)
                else:
                    value = module(predictions[f"logits_{task.name}"], label, weight)
                losses[entry.key] = value * (task.weight * scale)
        return losses

    def update_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Feed every task's metrics with its predictions and labels."""
        counts = self._candidate_counts(batch)
        total = int(counts.sum())
        for task in self._tasks:
            if not task.metrics:
                continue
            label = self._label(batch, task, total)
            for entry in task.metrics:
                metric = self._metric_modules[entry.key]
                preds = predictions[entry.prediction]
                if entry.grouping_key:
                    groups = self._per_candidate(
                        self._row_values(batch, entry.grouping_key, "grouped_auc.grouping_key"),
                        counts,
                    )
                    metric.update(preds, label, groups)
                else:
                    metric.update(preds, label)
