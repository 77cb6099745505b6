"""Mixtures of experts for multi-task models: MMoE and PLE's extraction networks.

* :class:`MMoE`: ``E`` expert MLPs over one input ``x``; task ``t`` gets
  ``sum_e softmax(W_t g_t(x) + b_t)_e * expert_e(x)``, where ``g_t`` is the task's optional
  gate MLP (identity without ``gate_mlp``).
* :class:`ExtractionNet` (one PLE level): task ``t`` owns ``expert_num_per_task`` experts
  over its input ``x_t``; ``share_num`` shared experts read the shared input ``s``. Task
  ``t``'s output mixes its own experts and the shared ones with a linear gate on ``x_t``;
  except on the last level, the shared output mixes every task's experts and the shared
  ones with a linear gate on ``s``. The first level gets ``x_t = s = `` the model input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tzrec.models.modules.gates import mix_experts
from tzrec.models.modules.mlp import MLP


class MMoE(nn.Module):
    """Multi-gate mixture of experts: one softmax gate over shared experts per task.

    Args:
        in_features: width of the input.
        expert_mlp: :class:`MLP` keyword arguments of every expert (``mlp_kwargs``).
        num_expert: number of experts (> 0).
        num_task: number of tasks (gates).
        gate_mlp: :class:`MLP` keyword arguments of each task's gate MLP, or None.
    """

    def __init__(
        self,
        in_features: int,
        expert_mlp: dict[str, Any],
        num_expert: int,
        num_task: int,
        gate_mlp: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_expert <= 0:
            raise ValueError(f"MMoE: num_expert must be > 0, got {num_expert}")
        self.num_expert = num_expert
        self.num_task = num_task
        self.expert_mlps = nn.ModuleList(MLP(in_features, **expert_mlp) for _ in range(num_expert))
        self.gate_mlps = nn.ModuleList()
        gate_in = in_features
        if gate_mlp is not None:
            self.gate_mlps = nn.ModuleList(MLP(in_features, **gate_mlp) for _ in range(num_task))
            gate_in = self.gate_mlps[0].output_dim()
        self.gate_finals = nn.ModuleList(nn.Linear(gate_in, num_expert) for _ in range(num_task))

    def output_dim(self) -> int:
        """Width of each task's mixture (the experts' output width)."""
        return self.expert_mlps[0].output_dim()

    def gate_weights(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each task's ``(B, num_expert)`` softmax weights over the experts."""
        return [torch.softmax(g, dim=-1) for g in self._gate_logits(x)]

    def _gate_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = []
        for t, final in enumerate(self.gate_finals):
            gate_in = self.gate_mlps[t](x) if len(self.gate_mlps) > 0 else x
            logits.append(final(gate_in))
        return logits

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One ``(B, output_dim)`` mixture per task."""
        experts = torch.stack([expert(x) for expert in self.expert_mlps], dim=1)
        return [mix_experts(g, experts) for g in self._gate_logits(x)]


class ExtractionNet(nn.Module):
    """One PLE level: task-specific and shared experts with per-task (and shared) gates.

    Args:
        in_task_dims: width of each task's input (one entry per task).
        in_shared_dim: width of the shared input.
        share_num: number of shared experts (>= 0).
        expert_num_per_task: number of experts per task (> 0).
        task_expert_mlp: :class:`MLP` keyword arguments of the task experts.
        share_expert_mlp: :class:`MLP` keyword arguments of the shared experts (needed when
            ``share_num > 0``; their output width must equal the task experts').
        final: the last level (no shared gate, no shared output).
    """

    def __init__(
        self,
        in_task_dims: Sequence[int],
        in_shared_dim: int,
        share_num: int,
        expert_num_per_task: int,
        task_expert_mlp: dict[str, Any],
        share_expert_mlp: dict[str, Any] | None = None,
        final: bool = False,
    ) -> None:
        super().__init__()
        if expert_num_per_task <= 0:
            raise ValueError(f"expert_num_per_task must be > 0, got {expert_num_per_task}")
        if share_num > 0 and share_expert_mlp is None:
            raise ValueError("share_num > 0 needs share_expert_net")
        self.final = final
        num_task = len(in_task_dims)
        self.shared_experts = nn.ModuleList(
            MLP(in_shared_dim, **(share_expert_mlp or {})) for _ in range(share_num)
        )
        self.task_experts = nn.ModuleList(
            nn.ModuleList(MLP(d, **task_expert_mlp) for _ in range(expert_num_per_task))
            for d in in_task_dims
        )
        self._expert_dim = self.task_experts[0][0].output_dim()
        if share_num > 0 and self.shared_experts[0].output_dim() != self._expert_dim:
            raise ValueError(
                f"share_expert_net outputs {self.shared_experts[0].output_dim()} but "
                f"task_expert_net {self._expert_dim}; the gates mix them, so they must match"
            )
        self.task_gates = nn.ModuleList(
            nn.Linear(d, expert_num_per_task + share_num) for d in in_task_dims
        )
        self.shared_gate = (
            None if final else nn.Linear(in_shared_dim, num_task * expert_num_per_task + share_num)
        )

    def output_dims(self) -> tuple[list[int], int]:
        """Each task output's width and the shared output's (0 on the last level)."""
        return [self._expert_dim] * len(self.task_experts), 0 if self.final else self._expert_dim

    def forward(
        self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Each task's mixture and the shared mixture (None on the last level)."""
        shared = [expert(shared_input) for expert in self.shared_experts]
        every_task: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        for t, experts in enumerate(self.task_experts):
            own = [expert(task_inputs[t]) for expert in experts]
            every_task.extend(own)
            stacked = torch.stack(own + shared, dim=1)
            outputs.append(mix_experts(self.task_gates[t](task_inputs[t]), stacked))
        shared_out = None
        if self.shared_gate is not None:
            stacked = torch.stack(every_task + shared, dim=1)
            shared_out = mix_experts(self.shared_gate(shared_input), stacked)
        return outputs, shared_out
