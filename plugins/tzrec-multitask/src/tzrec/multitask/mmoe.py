"""SimpleMultiTask, MMoE and PLE: task towers over one DEEP group, shared or mixed.

* ``simple_multi_task``: every task tower (optional ``mlp``, then a linear layer to
  ``num_class``) reads the whole group embedding ``x`` (EasyRec's SimpleMultiTask; upstream
  TorchEasyRec has the config message only).
* ``mmoe``: ``num_expert`` expert MLPs over ``x``; tower ``t`` reads
  ``sum_e softmax(gate_t(x))_e * expert_e(x)`` (:class:`~tzrec.models.modules.experts.MMoE`).
* ``ple``: ``extraction_networks`` levels of task-specific and shared experts
  (:class:`~tzrec.models.modules.experts.ExtractionNet`); tower ``t`` reads the last
  level's task ``t`` output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import (
    ConfigError,
    ExtractionNet,
    MultiTaskRank,
    TaskTower,
    mlp_kwargs,
)
from tzrec.models.plugin_api import MMoE as MMoEModule
from tzrec.multitask.common import single_deep_group


class _TowersOverOneGroup(MultiTaskRank):
    """Shared plumbing: one DEEP group in, one :class:`TaskTower` per task out."""

    #: the ``ModelConfig`` oneof name (messages and the group check)
    config_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group_name = single_deep_group(self, self.config_name)
        self.init_input([self.group_name])
        self.input_dim = self.embedding_group.group_total_dim(self.group_name)

    def _build_towers(self, in_dims: list[int]) -> nn.ModuleList:
        towers = nn.ModuleList()
        for cfg, dim in zip(self.model_config.task_towers, in_dims, strict=True):
            towers.append(
                TaskTower(dim, int(cfg.num_class), cfg.mlp if cfg.HasField("mlp") else None)
            )
        return towers

    def _tower_outputs(self, inputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            task.name: tower(x)
            for task, tower, x in zip(self.tasks, self.task_towers, inputs, strict=True)
        }


class SimpleMultiTask(_TowersOverOneGroup):
    """Independent task towers over one shared embedding (``simple_multi_task``)."""

    config_name = "simple_multi_task"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_towers = self._build_towers([self.input_dim] * len(self.tasks))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every tower over the group embedding."""
        x = self.apply_variational_dropout(grouped)[self.group_name]
        return self.output(self._tower_outputs([x] * len(self.tasks)))


class MMoE(_TowersOverOneGroup):
    """Multi-gate mixture of experts (``mmoe``): per-task softmax gates over shared experts."""

    config_name = "mmoe"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        if int(cfg.num_expert) <= 0:
            raise ConfigError(f"model_config.mmoe.num_expert must be > 0, got {cfg.num_expert}")
        self.mmoe = MMoEModule(
            self.input_dim,
            mlp_kwargs(cfg.expert_mlp),
            int(cfg.num_expert),
            len(self.tasks),
            mlp_kwargs(cfg.gate_mlp) if cfg.HasField("gate_mlp") else None,
        )
        self.task_towers = self._build_towers([self.mmoe.output_dim()] * len(self.tasks))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Experts and gates, then each task's tower over its mixture."""
        x = self.apply_variational_dropout(grouped)[self.group_name]
        return self.output(self._tower_outputs(self.mmoe(x)))


class PLE(_TowersOverOneGroup):
    """Progressive layered extraction (``ple``): stacked task-specific + shared experts."""

    config_name = "ple"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        levels = list(self.model_config.extraction_networks)
        if not levels:
            raise ConfigError("model_config.ple.extraction_networks: set at least one level")
        task_dims = [self.input_dim] * len(self.tasks)
        shared_dim = self.input_dim
        self.extraction_nets = nn.ModuleList()
        for i, level in enumerate(levels):
            at = f"model_config.ple.extraction_networks[{i}]"
            try:
                net = ExtractionNet(
                    task_dims,
                    shared_dim,
                    int(level.share_num),
                    int(level.expert_num_per_task),
                    mlp_kwargs(level.task_expert_net),
                    mlp_kwargs(level.share_expert_net)
                    if level.HasField("share_expert_net")
                    else None,
                    final=i == len(levels) - 1,
                )
            except ValueError as e:
                raise ConfigError(f"{at}: {e}") from None
            self.extraction_nets.append(net)
            task_dims, shared_dim = net.output_dims()
        self.task_towers = self._build_towers(task_dims)

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The extraction levels, then each task's tower over its last-level output."""
        x = self.apply_variational_dropout(grouped)[self.group_name]
        task_inputs = [x] * len(self.tasks)
        shared: torch.Tensor | None = x
        for net in self.extraction_nets:
            assert shared is not None  # only the last level has no shared output
            task_inputs, shared = net(task_inputs, shared)
        return self.output(self._tower_outputs(task_inputs))
