"""xDeepFM: a Compressed Interaction Network over the wide fields plus a deep MLP (``xdeepfm``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import CIN, MLP, ConfigError, EmbeddingGroup, RankModel
from tzrec.protos import model_pb2
from tzrec.rank.fields import require_group_type


class xDeepFM(RankModel):  # noqa: N801 - upstream's name
    """``y = Linear(MLP_final([CIN(wide fields), MLP_deep(deep)]))``.

    The CIN reads the ``wide`` group (WIDE: one ``wide_embedding_dim``-wide table per
    feature, default 16) as ``(B, fields, wide_embedding_dim)``; ``deep`` feeds the MLP.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        for name in ("wide", "deep"):
            self.group(name)  # a one-line error when absent
        groups = list(self.base_model_config.feature_groups)
        self._wide_dim = int(cfg.wide_embedding_dim)
        self.embedding_group = EmbeddingGroup(self.features, groups, self._wide_dim)
        require_group_type(self.embedding_group, "wide", model_pb2.WIDE, self._model_name)
        require_group_type(self.embedding_group, "deep", model_pb2.DEEP, self._model_name)
        self._fields = self.embedding_group.group_total_dim("wide") // self._wide_dim
        if not cfg.cin.cin_layer_size:
            raise ConfigError(f"model_config.{self._model_name}.cin.cin_layer_size: set a layer")
        self.cin = CIN(self._fields, list(cfg.cin.cin_layer_size))
        self.deep = MLP.from_config(self.embedding_group.group_total_dim("deep"), cfg.deep)
        self.final = MLP.from_config(self.cin.output_dim() + self.deep.output_dim(), cfg.final)
        self.output_mlp = nn.Linear(self.final.output_dim(), self._num_class)

    def predict(self, batch: Any) -> dict[str, torch.Tensor]:
        """Grouped embeddings -> :meth:`dense_forward`."""
        return self.dense_forward(self.embedding_group(batch))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CIN and deep tower side by side, then the final MLP."""
        fields = grouped["wide"].reshape(-1, self._fields, self._wide_dim)
        both = torch.cat([self.cin(fields), self.deep(grouped["deep"])], dim=1)
        return self.output(self.output_mlp(self.final(both)))
