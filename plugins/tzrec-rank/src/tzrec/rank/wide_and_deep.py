"""WideAndDeep: a linear (wide) part over 1-of-n features plus a deep MLP (``wide_and_deep``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import MLP, RankModel
from tzrec.rank.fields import wide_deep_embedding_group


def wide_logit(wide: torch.Tensor) -> torch.Tensor:
    """The wide part: the sum of a WIDE group's narrow embeddings, ``(B, 1)``."""
    return wide.sum(dim=1, keepdim=True)


class WideAndDeep(RankModel):
    """Wide logit plus deep tower: ``y = sum(wide) + Linear(MLP_deep(deep))``.

    With ``final``: ``y = Linear(MLP_final([sum(wide), MLP_deep(deep)]))``.
    Groups ``wide`` (WIDE: ``wide_embedding_dim``-wide tables per feature) and ``deep``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        self.embedding_group = wide_deep_embedding_group(self, cfg.wide_embedding_dim)
        self.deep_mlp = MLP.from_config(self.embedding_group.group_total_dim("deep"), cfg.deep)
        width = self.deep_mlp.output_dim()
        self.final_mlp: MLP | None = None
        if cfg.HasField("final"):
            self.final_mlp = MLP.from_config(1 + width, cfg.final)
            width = self.final_mlp.output_dim()
        self.output_mlp = nn.Linear(width, self._num_class)

    def predict(self, batch: Any) -> dict[str, torch.Tensor]:
        """Grouped embeddings -> :meth:`dense_forward`."""
        return self.dense_forward(self.embedding_group(batch))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Wide logit plus the deep tower's logits (or both through ``final``)."""
        y_wide = wide_logit(grouped["wide"])
        y_deep = self.deep_mlp(grouped["deep"])
        if self.final_mlp is not None:
            y = self.output_mlp(self.final_mlp(torch.cat([y_wide, y_deep], dim=1)))
        else:
            y = y_wide + self.output_mlp(y_deep)
        return self.output(y)
