"""DBMTL and DC2VR: a shared bottom, optional MMoE, task MLPs and links between tasks.

Both read one DEEP group ``x``: ``h = bottom_mlp(x)`` (DBMTL may first apply ``mask_net``,
MaskNet's mask blocks), then with ``expert_mlp`` an MMoE gives each task its own mixture
``h_t`` (else ``h_t = h``), then the task's ``mlp`` gives ``z_t`` (else ``z_t = h_t``).

* ``dbmtl`` (Bayesian task relations): a tower with ``relation_mlp`` outputs
  ``r_t = relation_mlp_t([z_t, r_a, r_b, ...])`` over the ``r`` of its
  ``relation_tower_names`` (earlier towers), else ``r_t = z_t``; ``logits_t = W_t r_t``.
* ``dc2vr`` (de-confounded conversion rate): a tower with ``low_rank_dim`` intervenes on
  ``z_t`` with the outputs ``v`` of its ``intervention_tower_names`` (earlier towers):
  ``v_t = dropout(z_t + (z_t B_t - stop_grad([v_a, ...]) S_t) B_t^T)``, with ``B_t``
  ``(dim z_t, low_rank_dim)`` and ``S_t`` ``(dim v, low_rank_dim)`` kept orthonormal
  (``torch.nn.utils.parametrizations.orthogonal``), else ``v_t = z_t``; ``logits_t = W_t v_t``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import MLP, ConfigError, MultiTaskRank, mlp_kwargs
from tzrec.models.plugin_api import MMoE as MMoEModule
from tzrec.multitask.common import single_deep_group


class _SharedBottom(MultiTaskRank):
    """The shared part of DBMTL and DC2VR: bottom MLP, optional MMoE, task MLPs."""

    config_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        self.group_name = single_deep_group(self, self.config_name)
        self.init_input([self.group_name])
        dim = self.embedding_group.group_total_dim(self.group_name)
        self.mask_net: nn.Module | None = None
        if cfg.DESCRIPTOR.fields_by_name.get("mask_net") is not None and cfg.HasField("mask_net"):
            from tzrec.models.plugin_api import MaskNetModule

            self.mask_net = MaskNetModule.from_config(dim, cfg.mask_net)
            dim = self.mask_net.output_dim()
        self.bottom_mlp = (
            MLP.from_config(dim, cfg.bottom_mlp) if cfg.HasField("bottom_mlp") else None
        )
        if self.bottom_mlp is not None:
            dim = self.bottom_mlp.output_dim()
        self.mmoe: MMoEModule | None = None
        if cfg.HasField("expert_mlp"):
            if int(cfg.num_expert) <= 0:
                raise ConfigError(
                    f"model_config.{self.config_name}.num_expert must be > 0, got {cfg.num_expert}"
                )
            self.mmoe = MMoEModule(
                dim,
                mlp_kwargs(cfg.expert_mlp),
                int(cfg.num_expert),
                len(self.tasks),
                mlp_kwargs(cfg.gate_mlp) if cfg.HasField("gate_mlp") else None,
            )
            dim = self.mmoe.output_dim()
        elif cfg.HasField("gate_mlp"):
            raise ConfigError(
                f"model_config.{self.config_name}.gate_mlp: needs expert_mlp (the MMoE it gates)"
            )
        self.task_mlps = nn.ModuleDict()
        self.task_dims: dict[str, int] = {}
        for task, tcfg in zip(self.tasks, cfg.task_towers, strict=True):
            self.task_dims[task.name] = dim
            if tcfg.HasField("mlp"):
                self.task_mlps[task.name] = MLP.from_config(dim, tcfg.mlp)
                self.task_dims[task.name] = self.task_mlps[task.name].output_dim()

    def _earlier(self, at: str, field: str, i: int, names: list[str]) -> None:
        earlier = [t.name for t in self.tasks[:i]]
        for name in names:
            if name not in earlier:
                raise ConfigError(
                    f"{at}.{field}: '{name}' is not an earlier task tower "
                    f"({', '.join(earlier) or 'none'}); towers may only read earlier ones"
                )

    def _task_inputs(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        net = self.apply_variational_dropout(grouped)[self.group_name]
        if self.mask_net is not None:
            net = self.mask_net(net)
        if self.bottom_mlp is not None:
            net = self.bottom_mlp(net)
        inputs = self.mmoe(net) if self.mmoe is not None else [net] * len(self.tasks)
        out = {}
        for task, x in zip(self.tasks, inputs, strict=True):
            out[task.name] = self.task_mlps[task.name](x) if task.name in self.task_mlps else x
        return out


class DBMTL(_SharedBottom):
    """Deep Bayesian multi-target learning (``dbmtl``): towers read earlier towers' outputs."""

    config_name = "dbmtl"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relation_mlps = nn.ModuleDict()
        out_dims: dict[str, int] = {}
        self.relations: dict[str, list[str]] = {}
        for i, (task, tcfg) in enumerate(
            zip(self.tasks, self.model_config.task_towers, strict=True)
        ):
            at = f"model_config.dbmtl.task_towers[{i}]"
            names = list(tcfg.relation_tower_names)
            out_dims[task.name] = self.task_dims[task.name]
            if not tcfg.HasField("relation_mlp"):
                if names:
                    raise ConfigError(
                        f"{at}.relation_tower_names: needs relation_mlp (the MLP over the "
                        "related towers' outputs)"
                    )
                continue
            self._earlier(at, "relation_tower_names", i, names)
            in_dim = self.task_dims[task.name] + sum(out_dims[n] for n in names)
            self.relation_mlps[task.name] = MLP.from_config(in_dim, tcfg.relation_mlp)
            self.relations[task.name] = names
            out_dims[task.name] = self.relation_mlps[task.name].output_dim()
        self.task_outputs = nn.ModuleList(
            nn.Linear(out_dims[t.name], t.num_class) for t in self.tasks
        )

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Shared bottom, task MLPs, relation MLPs in tower order, linear heads."""
        task_net = self._task_inputs(grouped)
        relation: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            if task.name in self.relation_mlps:
                parts = [task_net[task.name]] + [relation[n] for n in self.relations[task.name]]
                relation[task.name] = self.relation_mlps[task.name](torch.cat(parts, dim=1))
            else:
                relation[task.name] = task_net[task.name]
        return self.output(
            {
                t.name: head(relation[t.name])
                for t, head in zip(self.tasks, self.task_outputs, strict=True)
            }
        )


class _RotateLayer(nn.Module):
    """``x W`` with ``W`` ``(base_dim, low_rank_dim)`` (orthonormal columns once parametrised)."""

    def __init__(self, base_dim: int, low_rank_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(base_dim, low_rank_dim))
        nn.init.orthogonal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project onto the low-rank space."""
        return torch.matmul(x.to(self.weight.dtype), self.weight)


class Intervention(nn.Module):
    """``dropout(base + (base B - stop_grad(source) S) B^T)`` with orthonormal ``B``, ``S``.

    Args:
        base_dim: width of the intervened representation.
        source_dim: width of the source (the concatenated intervening towers).
        low_rank_dim: width of the shared low-rank space (< both widths).
        dropout_ratio: dropout on the output.
    """

    def __init__(
        self, base_dim: int, source_dim: int, low_rank_dim: int, dropout_ratio: float = 0.0
    ) -> None:
        super().__init__()
        if not 0 < low_rank_dim < min(base_dim, source_dim):
            raise ValueError(
                f"low_rank_dim must be > 0 and below the base ({base_dim}) and source "
                f"({source_dim}) widths, got {low_rank_dim}"
            )
        self.base_dim = base_dim
        orthogonal = nn.utils.parametrizations.orthogonal
        self.base_rotate = orthogonal(_RotateLayer(base_dim, low_rank_dim))
        self.source_rotate = orthogonal(_RotateLayer(source_dim, low_rank_dim))
        self.dropout = nn.Dropout(dropout_ratio)

    def output_dim(self) -> int:
        """Width of the output (the base's)."""
        return self.base_dim

    def forward(self, base: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """The intervened base (module doc)."""
        delta = self.base_rotate(base) - self.source_rotate(source.detach())
        out = torch.matmul(delta, self.base_rotate.weight.T) + base
        return self.dropout(out.to(base.dtype))


class DC2VR(_SharedBottom):
    """De-confounded conversion rate (``dc2vr``): towers intervened on by earlier towers."""

    config_name = "dc2vr"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.interventions = nn.ModuleDict()
        self.sources: dict[str, list[str]] = {}
        for i, (task, tcfg) in enumerate(
            zip(self.tasks, self.model_config.task_towers, strict=True)
        ):
            at = f"model_config.dc2vr.task_towers[{i}]"
            names = list(tcfg.intervention_tower_names)
            if not tcfg.HasField("low_rank_dim"):
                if names:
                    raise ConfigError(
                        f"{at}.intervention_tower_names: needs low_rank_dim (the intervention)"
                    )
                continue
            if not names:
                raise ConfigError(
                    f"{at}.low_rank_dim: needs intervention_tower_names (the towers intervening)"
                )
            self._earlier(at, "intervention_tower_names", i, names)
            source_dim = sum(self.task_dims[n] for n in names)
            try:
                self.interventions[task.name] = Intervention(
                    self.task_dims[task.name],
                    source_dim,
                    int(tcfg.low_rank_dim),
                    float(tcfg.dropout_ratio),
                )
            except ValueError as e:
                raise ConfigError(f"{at}: {e}") from None
            self.sources[task.name] = names
        self.task_outputs = nn.ModuleList(
            nn.Linear(self.task_dims[t.name], t.num_class) for t in self.tasks
        )

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Shared bottom, task MLPs, interventions in tower order, linear heads."""
        task_net = self._task_inputs(grouped)
        out: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            if task.name in self.interventions:
                source = torch.cat([out[n] for n in self.sources[task.name]], dim=-1)
                out[task.name] = self.interventions[task.name](task_net[task.name], source)
            else:
                out[task.name] = task_net[task.name]
        return self.output(
            {
                t.name: head(out[t.name])
                for t, head in zip(self.tasks, self.task_outputs, strict=True)
            }
        )
