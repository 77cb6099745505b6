"""The public plugin API: everything a third-party tzrec plugin imports, from one module.

A plugin that ships a model writes ``from tzrec.models.plugin_api import ...`` and nothing
else from tzrec: the hook markers, the base classes to subclass, the building blocks
(embedding groups, MLPs, the batch and feature types) and the contracts the exporter relies
on. Names here are stable; anything reached through another module (``tzrec.models.rank``,
private ``_``-attributes) may change without notice.

The serving contracts are :class:`ServableModel` (a whole model: ``embedding_group`` +
``dense_forward``) and :class:`ServableTowers` / :class:`ServableTower` (match models that
export one module per tower). :meth:`BaseModel.export_contract_error` checks a model class
against them when its registration is used (``tzrec run`` refuses a model it could not
export before training; ``tzrec export`` refuses it in one line).

Plugins that add a kind of registry of their own define its hook specs in a class (or
module) and expose it as ``HOOKSPECS`` in their entry-point module; tzrec passes it to
pluggy's ``add_hookspecs`` before registering the plugin (tzrec-hstu does this for
``register_input_preprocessors`` / ``register_output_postprocessors``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tzrec.core.errors import ConfigError, DataError, PluginError
from tzrec.core.hookspecs import Declare, Register, hookimpl, hookspec

if TYPE_CHECKING:  # imported lazily below: a plugin's hook module must not pull in torch
    import torch
    from torch import nn

    from tzrec.data import BaseFeature, Batch
    from tzrec.models.base import BaseModel, in_serving_view
    from tzrec.models.embedding import EmbeddingGroup
    from tzrec.models.match import MatchModel
    from tzrec.models.modules.cin import CIN
    from tzrec.models.modules.cross import Cross, CrossV2
    from tzrec.models.modules.experts import ExtractionNet, MMoE
    from tzrec.models.modules.fm import FactorizationMachine
    from tzrec.models.modules.gates import EPNet, GateNU, PPNet, mix_experts
    from tzrec.models.modules.interaction import InteractionArch
    from tzrec.models.modules.mask_net import MaskNetModule
    from tzrec.models.modules.mlp import MLP, mlp_kwargs
    from tzrec.models.modules.tower import TaskTower
    from tzrec.models.modules.wukong import WuKongLayer
    from tzrec.models.multi_task import MultiTaskRank, task_predictions
    from tzrec.models.rank import RankModel

#: Names that need torch, imported on first use (``from ... import RankModel`` works).
_LAZY = {
    "BaseFeature": "tzrec.data",
    "Batch": "tzrec.data",
    "EmbeddingGroup": "tzrec.models.embedding",
    "BaseModel": "tzrec.models.base",
    "in_serving_view": "tzrec.models.base",
    "MatchModel": "tzrec.models.match",
    "RankModel": "tzrec.models.rank",
    "MLP": "tzrec.models.modules.mlp",
    "mlp_kwargs": "tzrec.models.modules.mlp",
    # multi-task models: the base, task towers, experts and gates
    "MultiTaskRank": "tzrec.models.multi_task",
    "task_predictions": "tzrec.models.multi_task",
    "TaskTower": "tzrec.models.modules.tower",
    "MMoE": "tzrec.models.modules.experts",
    "ExtractionNet": "tzrec.models.modules.experts",
    "mix_experts": "tzrec.models.modules.gates",
    "GateNU": "tzrec.models.modules.gates",
    "EPNet": "tzrec.models.modules.gates",
    "PPNet": "tzrec.models.modules.gates",
    # feature-interaction blocks (FM, DCN cross layers, xDeepFM's CIN, DLRM's dot products)
    "FactorizationMachine": "tzrec.models.modules.fm",
    "Cross": "tzrec.models.modules.cross",
    "CrossV2": "tzrec.models.modules.cross",
    "CIN": "tzrec.models.modules.cin",
    "InteractionArch": "tzrec.models.modules.interaction",
    # gated / layered blocks (MaskNet mask blocks, WuKong FM + linear-compress layers)
    "MaskNetModule": "tzrec.models.modules.mask_net",
    "WuKongLayer": "tzrec.models.modules.wukong",
}


def __getattr__(name: str) -> Any:
    """Import a torch-backed name of the API on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "MaskNetModule",
    "WuKongLayer",
    "EPNet",
    "ExtractionNet",
    "GateNU",
    "MMoE",
    "MultiTaskRank",
    "PPNet",
    "TaskTower",
    "mix_experts",
    "mlp_kwargs",
    "task_predictions",
    "CIN",
    "MLP",
    "Cross",
    "CrossV2",
    "FactorizationMachine",
    "InteractionArch",
    "BaseFeature",
    "BaseModel",
    "Batch",
    "ConfigError",
    "DataError",
    "Declare",
    "EmbeddingGroup",
    "MatchModel",
    "PluginError",
    "RankModel",
    "Register",
    "ServableModel",
    "ServableTower",
    "ServableTowers",
    "export_contract_error",
    "hookimpl",
    "hookspec",
    "in_serving_view",
]


@runtime_checkable
class ServableModel(Protocol):
    """A model exported whole: sparse lookups (``embedding_group``) then ``dense_forward``.

    ``predict(batch)`` must equal ``dense_forward(embedding_group(batch))``; after
    ``set_is_inference(True)`` ``dense_forward`` is traced, so it may not branch on data.
    """

    embedding_group: EmbeddingGroup

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named outputs from the embedding group's output."""
        ...


@runtime_checkable
class ServableTower(Protocol):
    """One exported tower of a match model; output ``<tower name>_emb``.

    A tower that owns its tables has its own ``embedding_group``; otherwise it reads the
    model's shared ``embedding_group``.
    """

    features: list[BaseFeature]
    feature_groups: list

    def tower_embedding(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(rows, D)`` embeddings from the grouped embeddings of its feature groups."""
        ...


@runtime_checkable
class ServableTowers(Protocol):
    """A model exported as one serving module per tower (DSSM, HSTUMatch)."""

    def export_towers(self) -> dict[str, nn.Module]:
        """The towers by name (``user``, ``item``); each satisfies :class:`ServableTower`."""
        ...


def export_contract_error(model: nn.Module | type) -> str | None:
    """Why a model (class or instance) cannot be exported, or None when it can.

    A class is checked for the methods (:meth:`BaseModel.export_contract_error`); an
    instance also for the attributes the contract needs (``embedding_group``, and each
    tower's ``features`` / ``feature_groups`` / ``tower_embedding``).
    """
    from tzrec.models.embedding import EmbeddingGroup

    cls = model if isinstance(model, type) else type(model)
    check = getattr(cls, "export_contract_error", None)
    reason = check() if callable(check) else f"{cls.__name__} is not a tzrec BaseModel"
    if reason or isinstance(model, type):
        return reason
    towers = model.export_towers() if isinstance(model, ServableTowers) else {}
    for name, tower in towers.items():
        if not isinstance(tower, ServableTower):
            return (
                f"{cls.__name__}.export_towers()['{name}'] lacks features, "
                "feature_groups or tower_embedding(grouped)"
            )
    if not towers and not isinstance(getattr(model, "embedding_group", None), EmbeddingGroup):
        return f"{cls.__name__} has dense_forward but no embedding_group (an EmbeddingGroup)"
    return None
