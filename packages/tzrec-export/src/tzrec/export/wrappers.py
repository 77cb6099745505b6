"""What gets exported: a serving module = sparse lookups + the model's dense part.

Every wrapper is an :class:`ExportModule`: ``sparse`` (an
:class:`~tzrec.models.inference.InferenceEmbeddingGroup`, feature tensors → grouped
embeddings, compiled with ``torch.jit.script``) and ``dense`` (grouped embeddings → named
outputs, traced). Three wrappers, as upstream:

- :class:`ModelWrapper`: a whole model (rank models), ``dense`` calls ``dense_forward``;
- :class:`TowerWrapper`: a tower that owns its embedding group (DSSM), output
  ``<tower_name>_emb``;
- :class:`TowerWoEGWrapper`: a tower whose tables live in the model's shared embedding
  group (HSTUMatch), output ``<tower_name>_emb``.

``set_is_inference(True)`` must run on the model before any wrapper is built (a tower's
features and groups can depend on it); wrappers check and refuse otherwise. The ``dense``
part never holds embedding tables, loss or metric modules.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from tzrec.core.errors import ConfigError
from tzrec.data import BaseFeature
from tzrec.models.base import BaseModel, in_serving_view
from tzrec.models.embedding import EmbeddingGroup, group_feature_names
from tzrec.models.inference import InferenceEmbeddingGroup
from tzrec.protos import model_pb2

_NOT_DENSE = ("embedding_group", "_loss_modules", "_metric_modules")


def dense_only(module: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` without its tables, losses and metrics (shared weights)."""
    clone = copy.copy(module)
    clone._modules = {k: v for k, v in module._modules.items() if k not in _NOT_DENSE}
    return clone


def require_inference(module: nn.Module, wrapper: str) -> None:
    """Refuse to wrap a module whose serving view is not switched on.

    Raises:
        ConfigError: some submodule with an ``_is_inference`` flag has it False.
    """
    if not in_serving_view(module):
        raise ConfigError(
            f"{wrapper} needs model.set_is_inference(True) before wrapping: the serving "
            "view decides which features a tower reads"
        )


def _group_features(
    features: Sequence[BaseFeature], groups: Sequence[model_pb2.FeatureGroupConfig]
) -> list[BaseFeature]:
    names = {n for g in groups for n in group_feature_names(g)}
    return [f for f in features if f.name in names]


class _DenseModel(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = dense_only(model)

    def forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model.dense_forward(grouped)


class _DenseTower(nn.Module):
    def __init__(self, tower: nn.Module, output_name: str) -> None:
        super().__init__()
        self.tower = dense_only(tower)
        self.output_name = output_name

    def forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {self.output_name: self.tower.tower_embedding(grouped)}


class _Encoded(nn.Module):
    """Runs the embedding group's DEEP-group sequence encoders before the dense part."""

    def __init__(self, embedding_group: EmbeddingGroup, dense: nn.Module) -> None:
        super().__init__()
        self.encoders = embedding_group.sequence_encoders
        self.inner = dense

    def forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.inner(self.encoders(grouped))


def _dense_part(embedding_group: EmbeddingGroup, dense: nn.Module) -> nn.Module:
    encoders = getattr(embedding_group, "sequence_encoders", None)
    return (
        _Encoded(embedding_group, dense)
        if encoders is not None and len(encoders.encoders)
        else dense
    )


#: ``export_config.mixed_precision`` -> autocast dtype (as upstream's names)
MIXED_PRECISION = {"BF16": torch.bfloat16, "FP16": torch.float16}


class AutocastDense(nn.Module):
    """The dense part run under ``torch.autocast`` (``export_config.mixed_precision``).

    Tracing and ``torch.export`` record the casts, so the artefact computes in ``dtype``
    as the eager module does; floating outputs are returned as float32 (one serving dtype).
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype, device_type: str = "cpu") -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype
        self.device_type = device_type

    def forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inner outputs under autocast, floating ones back in float32."""
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            out = self.inner(grouped)
        return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}


def mixed_precision_dtype(value: str) -> torch.dtype | None:
    """The autocast dtype of ``export_config.mixed_precision`` (None when empty).

    Raises:
        ConfigError: a value other than ``BF16`` / ``FP16``.
    """
    key = value.strip().upper()
    if not key:
        return None
    if key not in MIXED_PRECISION:
        raise ConfigError(
            f"export_config.mixed_precision: expected BF16, FP16 or empty, got {value!r}"
        )
    return MIXED_PRECISION[key]


class ExportModule(nn.Module):
    """``dense(sparse(inputs))``: feature tensors in, named outputs out.

    Attributes:
        name: ``""`` for a whole model, else the tower name (the export sub-directory).
        sparse: serving lookups (TorchScript-compilable).
        dense: grouped embeddings → outputs (traced for export).
        features: the features whose tensors ``forward`` reads.
        feature_groups: the groups ``sparse`` produces.
    """

    def __init__(
        self,
        name: str,
        sparse: InferenceEmbeddingGroup,
        dense: nn.Module,
        feature_groups: Sequence[model_pb2.FeatureGroupConfig],
    ) -> None:
        super().__init__()
        self.name = name
        self.sparse = sparse
        self.dense = dense
        self.features = list(sparse.input_features)
        self.feature_groups = list(feature_groups)
        self.output_row_lengths: str | None = None
        #: ``(pooled, sequence)`` table storage asked for (QUANT_EMB, QUANT_EC_EMB)
        self.table_quant: tuple[str, str] = ("FP32", "FP32")
        #: ``export_config.mixed_precision`` of the dense part (``""``: float32)
        self.mixed_precision = ""

    def set_mixed_precision(self, value: str, device_type: str = "cpu") -> None:
        """Run the dense part under autocast (``BF16`` / ``FP16``); ``""`` keeps float32."""
        dtype = mixed_precision_dtype(value)
        if dtype is None or self.mixed_precision:
            return
        self.dense = AutocastDense(self.dense, dtype, device_type)
        self.mixed_precision = value.strip().upper()

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs for one batch of feature tensors."""
        return self.dense(self.sparse(inputs))


class ModelWrapper(ExportModule):
    """A whole model (``predict`` = ``dense_forward(embedding_group(batch))``)."""

    def __init__(self, model: nn.Module, quant: tuple[str, str] | None = None) -> None:
        require_inference(model, "ModelWrapper")
        eg: EmbeddingGroup = model.embedding_group
        groups = [model._group(name) for name in eg.group_names()]
        features = _group_features(model._features, groups)
        sparse = InferenceEmbeddingGroup.from_embedding_group(eg, features, groups, quant)
        super().__init__("", sparse, _dense_part(eg, _DenseModel(model)), groups)
        #: input tensor holding each row's number of output rows (models that predict one
        #: row per candidate, e.g. DlrmHSTU: ``per_candidate_group``); None: one per row
        self.output_row_lengths: str | None = None
        group = getattr(model, "per_candidate_group", None)
        if group:
            (config,) = [g for g in groups if g.group_name == group]
            first = list(config.feature_names)[0]
            self.output_row_lengths = f"{first}.lengths"


class TowerWrapper(ExportModule):
    """A tower with its own ``embedding_group``; output ``<tower_name>_emb``."""

    def __init__(
        self, tower: nn.Module, tower_name: str, quant: tuple[str, str] | None = None
    ) -> None:
        require_inference(tower, "TowerWrapper")
        groups = list(tower.feature_groups)
        sparse = InferenceEmbeddingGroup.from_embedding_group(
            tower.embedding_group, tower.features, groups, quant
        )
        dense = _dense_part(tower.embedding_group, _DenseTower(tower, f"{tower_name}_emb"))
        super().__init__(tower_name, sparse, dense, groups)


class TowerWoEGWrapper(ExportModule):
    """A tower reading the model's shared ``embedding_group``; output ``<tower_name>_emb``.

    The serving lookups are built from the tower's current ``features`` /
    ``feature_groups`` (its serving view), with the shared group's trained tables.
    """

    def __init__(
        self,
        tower: nn.Module,
        tower_name: str,
        embedding_group: EmbeddingGroup,
        quant: tuple[str, str] | None = None,
    ):
        require_inference(tower, "TowerWoEGWrapper")
        groups = list(tower.feature_groups)
        sparse = InferenceEmbeddingGroup.from_embedding_group(
            embedding_group, tower.features, groups, quant
        )
        dense = _dense_part(embedding_group, _DenseTower(tower, f"{tower_name}_emb"))
        super().__init__(tower_name, sparse, dense, groups)


def export_modules(model: nn.Module, quant: tuple[str, str] | None = None) -> list[ExportModule]:
    """The serving modules of a model: one per tower for match models, else one.

    ``quant``: ``(pooled, sequence)`` table storage of the lookups (``tzrec export`` passes
    ``quant_types_from_env()``, upstream's QUANT_EMB / QUANT_EC_EMB); None keeps FP32.
    """
    towers = model.export_towers() if hasattr(model, "export_towers") else {}
    if not towers:
        dense = getattr(type(model), "dense_forward", None)
        if not isinstance(getattr(model, "embedding_group", None), EmbeddingGroup) or (
            dense is None or dense is BaseModel.dense_forward
        ):
            raise ConfigError(
                f"{type(model).__name__} cannot be exported: it needs an `embedding_group` "
                "and `dense_forward(grouped)` (or `export_towers()`); see docs/export.md"
            )
        out: list[ExportModule] = [ModelWrapper(model, quant)]
    else:
        out = []
        for name, tower in towers.items():
            if isinstance(getattr(tower, "embedding_group", None), EmbeddingGroup):
                out.append(TowerWrapper(tower, name, quant))
            else:
                out.append(TowerWoEGWrapper(tower, name, model.embedding_group, quant))
    for module in out:
        module.table_quant = quant or ("FP32", "FP32")
    return out
