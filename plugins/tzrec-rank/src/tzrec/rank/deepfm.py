"""DeepFM: wide (first-order) + factorisation machine (second-order) + deep MLP (``deepfm``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import MLP, FactorizationMachine, RankModel
from tzrec.protos import model_pb2
from tzrec.rank.fields import require_group_type, uniform_field_dim, wide_deep_embedding_group
from tzrec.rank.wide_and_deep import wide_logit


class DeepFM(RankModel):
    """First order, FM and deep: ``y = sum(wide) + sum_d FM(fm)_d + Linear(MLP_deep(deep))``.

    With ``final``: ``y = Linear(MLP_final([sum(wide), FM(fm), MLP_deep(deep)]))``.
    Groups ``wide`` (WIDE), ``deep`` and optionally ``fm`` (default: the ``deep`` group's
    features); the FM fields must share one ``embedding_dim``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        self.embedding_group = wide_deep_embedding_group(self, cfg.wide_embedding_dim)
        names = self.embedding_group.group_names()
        self._fm_group = "fm" if "fm" in names else "deep"
        flat = (model_pb2.DEEP, model_pb2.WIDE)
        require_group_type(self.embedding_group, self._fm_group, flat, self._model_name)
        self._fm_fields, self._fm_dim = uniform_field_dim(
            self.embedding_group, self._fm_group, f"model_config.{self._model_name}"
        )
        self.fm = FactorizationMachine()
        self.deep_mlp = MLP.from_config(self.embedding_group.group_total_dim("deep"), cfg.deep)
        width = self.deep_mlp.output_dim()
        self.final_mlp: MLP | None = None
        if cfg.HasField("final"):
            self.final_mlp = MLP.from_config(1 + self._fm_dim + width, cfg.final)
            width = self.final_mlp.output_dim()
        self.output_mlp = nn.Linear(width, self._num_class)

    def predict(self, batch: Any) -> dict[str, torch.Tensor]:
        """Grouped embeddings -> :meth:`dense_forward`."""
        return self.dense_forward(self.embedding_group(batch))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """First-order, FM and deep parts summed (or through ``final``)."""
        y_wide = wide_logit(grouped["wide"])
        y_deep = self.deep_mlp(grouped["deep"])
        fields = grouped[self._fm_group].reshape(-1, self._fm_fields, self._fm_dim)
        y_fm = self.fm(fields)
        if self.final_mlp is not None:
            y = self.output_mlp(self.final_mlp(torch.cat([y_wide, y_fm, y_deep], dim=1)))
        else:
            y = y_wide + y_fm.sum(dim=1, keepdim=True) + self.output_mlp(y_deep)
        return self.output(y)
