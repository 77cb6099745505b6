"""xDeepFM: a Compressed Interaction Network over the wide fields plus a deep MLP (``xdeepfm``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import CIN, MLP, ConfigError, RankModel
from tzrec.rank.fields import wide_deep_embedding_group


class xDeepFM(RankModel):  # noqa: N801 - upstream's name
    """``y = Linear(MLP_final([CIN(wide fields), MLP_deep(deep)]))``.

    The CIN reads the ``wide`` group (WIDE: one ``wide_embedding_dim``-wide table per
    feature, default 16) as ``(B, fields, wide_embedding_dim)``; ``deep`` feeds the MLP.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        self._wide_dim = int(cfg.wide_embedding_dim)
        self.embedding_group = wide_deep_embedding_group(self, self._wide_dim)
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
