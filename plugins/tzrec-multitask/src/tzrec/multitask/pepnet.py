"""PEPNet: embedding (EPNet) and parameter (PPNet) personalisation for multi-task ranking.

Groups (all DEEP, named as upstream): ``all`` (the main embedding ``e``, required),
``domain`` (``d``, optional) and ``uia`` (user/item/author ``u``, optional).

* EPNet (with ``domain``): ``e' = GateNU([d, stop_grad(e)]) * e`` where
  ``GateNU(x) = epnet_gamma * sigmoid(W2 relu(W1 x))`` with ``epnet_hidden_unit`` hidden
  units (default: the width of ``e``); else ``e' = e``.
* PPNet (with ``uia``): one MLP per task over ``e'`` (``ppnet_hidden_units``,
  ``ppnet_activation``, ``ppnet_dropout_ratio``) whose layer ``l`` output is
  ``dropout(act(W_l h) * GateNU_l([u, stop_grad(e')]))`` (gates bounded by
  ``ppnet_gamma``); else every task reads ``e'``.
* Task towers (optional ``mlp`` + linear). With ``domain_input_name`` each task has
  ``task_domain_num`` towers, predictions ``<kind>_<tower>_<k>`` for every domain ``k``,
  and losses and metrics read, per row, the domain ``k`` given by the label column
  ``domain_input_name`` (it must be in ``label_fields``, values ``0..task_domain_num-1``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.core.engine.guards import LabelDomain
from tzrec.models.plugin_api import (
    Batch,
    ConfigError,
    DataError,
    EPNet,
    MultiTaskRank,
    PPNet,
    TaskTower,
    task_predictions,
)
from tzrec.protos import model_pb2

MAIN, DOMAIN, UIA = "all", "domain", "uia"
FIELD = "model_config.pepnet"


class PEPNet(MultiTaskRank):
    """Parameter and embedding personalised network (``pepnet``); see the module doc."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        names = [g.group_name for g in self.base_model_config.feature_groups]
        if MAIN not in names:
            raise ConfigError(
                f"{FIELD} needs a DEEP feature group named '{MAIN}' (groups: "
                f"{', '.join(names) or 'none'})"
            )
        extra = [n for n in names if n not in (MAIN, DOMAIN, UIA)]
        if extra:
            raise ConfigError(
                f"model_config.feature_groups: {FIELD} reads groups '{MAIN}', '{DOMAIN}' and "
                f"'{UIA}', not {', '.join(extra)}"
            )
        for name in names:
            if self.group(name).group_type != model_pb2.DEEP:
                raise ConfigError(f"model_config.feature_groups: '{name}' must be DEEP for {FIELD}")
        self.init_input(names)
        main_dim = self.embedding_group.group_total_dim(MAIN)
        self.epnet: EPNet | None = None
        if DOMAIN in names:
            hidden = int(cfg.epnet_hidden_unit) if cfg.HasField("epnet_hidden_unit") else main_dim
            if hidden <= 0:
                raise ConfigError(f"{FIELD}.epnet_hidden_unit must be > 0, got {hidden}")
            self.epnet = EPNet(
                main_dim, self.embedding_group.group_total_dim(DOMAIN), hidden, cfg.epnet_gamma
            )
        elif cfg.HasField("epnet_hidden_unit") or cfg.HasField("epnet_gamma"):
            raise ConfigError(f"{FIELD}.epnet_*: EPNet needs a feature group named '{DOMAIN}'")
        self.ppnet: PPNet | None = None
        task_dim = main_dim
        if UIA in names:
            if not cfg.ppnet_hidden_units:
                raise ConfigError(
                    f"{FIELD}.ppnet_hidden_units: set the PPNet layers (group '{UIA}' is present)"
                )
            try:
                self.ppnet = PPNet(
                    main_dim,
                    self.embedding_group.group_total_dim(UIA),
                    len(self.tasks),
                    list(cfg.ppnet_hidden_units),
                    cfg.ppnet_activation,
                    list(cfg.ppnet_dropout_ratio),
                    cfg.ppnet_gamma,
                )
            except ValueError as e:
                raise ConfigError(f"{FIELD}: {e}") from None
            task_dim = self.ppnet.output_dim()
        elif (
            cfg.ppnet_hidden_units
            or cfg.ppnet_dropout_ratio
            or cfg.HasField("ppnet_activation")
            or cfg.HasField("ppnet_gamma")
        ):
            raise ConfigError(f"{FIELD}.ppnet_*: PPNet needs a feature group named '{UIA}'")
        self.domain_input_name = cfg.domain_input_name if cfg.HasField("domain_input_name") else ""
        self.task_domain_num = int(cfg.task_domain_num) if self.domain_input_name else 1
        if self.domain_input_name:
            if self.domain_input_name not in self.labels:
                raise ConfigError(
                    f"{FIELD}.domain_input_name '{self.domain_input_name}' must be in "
                    f"data_config.label_fields ({', '.join(self.labels)}): its value picks "
                    "each row's domain tower"
                )
            if self.task_domain_num <= 0:
                raise ConfigError(f"{FIELD}.task_domain_num must be > 0, got {cfg.task_domain_num}")
        elif cfg.HasField("task_domain_num"):
            raise ConfigError(f"{FIELD}.task_domain_num: needs domain_input_name")
        self.task_towers = nn.ModuleList()
        for tcfg in cfg.task_towers:
            mlp = tcfg.mlp if tcfg.HasField("mlp") else None
            for _ in range(self.task_domain_num):
                self.task_towers.append(TaskTower(task_dim, int(tcfg.num_class), mlp))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """EPNet, PPNet, then every task (and domain) tower."""
        grouped = self.apply_variational_dropout(grouped)
        main = grouped[MAIN]
        if self.epnet is not None:
            main = self.epnet(main, grouped[DOMAIN])
        if self.ppnet is not None:
            inputs = self.ppnet(main, grouped[UIA])
        else:
            inputs = [main] * len(self.tasks)
        if not self.domain_input_name:
            return self.output(
                {t.name: self.task_towers[i](inputs[i]) for i, t in enumerate(self.tasks)}
            )
        predictions: dict[str, torch.Tensor] = {}
        for i, task in enumerate(self.tasks):
            for k in range(self.task_domain_num):
                tower = self.task_towers[i * self.task_domain_num + k]
                predictions.update(task_predictions(task, tower(inputs[i]), suffix=f"_{k}"))
        return predictions

    def select_predictions(
        self, predictions: dict[str, torch.Tensor], batch: Batch
    ) -> dict[str, torch.Tensor]:
        """Each row's prediction of its domain's tower (``domain_input_name``)."""
        if not self.domain_input_name:
            return predictions
        domain = batch.labels[self.domain_input_name].reshape(-1).to(torch.int64)
        if domain.numel() and (int(domain.min()) < 0 or int(domain.max()) >= self.task_domain_num):
            raise DataError(
                f"label '{self.domain_input_name}' (pepnet domain_input_name) must be in "
                f"[0, {self.task_domain_num - 1}], got values in [{int(domain.min())}, "
                f"{int(domain.max())}]"
            )
        rows = torch.arange(domain.numel(), device=domain.device)
        selected: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            for key in task.prediction_keys():
                stacked = torch.stack(
                    [predictions[f"{key}_{k}"] for k in range(self.task_domain_num)], dim=1
                )
                selected[key] = stacked[rows, domain]
        return selected

    def label_domains(self) -> dict[str, LabelDomain]:
        """The tasks' label domains and the domain column's (``0..task_domain_num-1``)."""
        domains = super().label_domains()
        if self.domain_input_name:
            domains[self.domain_input_name] = LabelDomain(
                0.0, float(self.task_domain_num - 1), True, "pepnet.domain_input_name"
            )
        return domains
