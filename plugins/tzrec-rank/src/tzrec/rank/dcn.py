"""Deep & Cross Networks: DCN (``dcn_v1``, rank-one cross) and DCN-v2 (``dcn_v2``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import MLP, Cross, CrossV2, EmbeddingGroup, RankModel
from tzrec.protos import model_pb2
from tzrec.rank.fields import require_group_type


class _SingleGroupRank(RankModel):
    """A rank model over the first feature group of the config (as upstream's DCNs)."""

    def _init_input(self) -> int:
        groups = list(self.base_model_config.feature_groups)
        self.embedding_group = EmbeddingGroup(self.features, groups)
        self._group_name = self.embedding_group.group_names()[0]
        flat = (model_pb2.DEEP, model_pb2.WIDE)
        require_group_type(self.embedding_group, self._group_name, flat, self._model_name)
        return self.embedding_group.group_total_dim(self._group_name)

    def predict(self, batch: Any) -> dict[str, torch.Tensor]:
        """Grouped embeddings -> ``dense_forward``."""
        return self.dense_forward(self.embedding_group(batch))


class DCNV1(_SingleGroupRank):
    """``y = W MLP_final([Cross(x), MLP_deep(x)])`` with ``x`` the first group's embeddings.

    ``Cross``: ``x_{l+1} = x_0 * (w_l . x_l) + b_l + x_l``, ``cross.cross_num`` layers; the
    output layer has no bias, as upstream.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        dim = self._init_input()
        self.cross = Cross(dim, cross_num=cfg.cross.cross_num)
        self.deep = MLP.from_config(dim, cfg.deep)
        self.final_dnn = MLP.from_config(
            self.cross.output_dim() + self.deep.output_dim(), cfg.final
        )
        self.output_linear = nn.Linear(self.final_dnn.output_dim(), self._num_class, bias=False)

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross and deep towers side by side, then the final MLP."""
        x = grouped[self._group_name]
        both = torch.cat([self.cross(x), self.deep(x)], dim=-1)
        return self.output(self.output_linear(self.final_dnn(both)))


class DCNV2(_SingleGroupRank):
    """``y = W MLP_final([CrossV2(backbone(x)), MLP_deep(x)])`` (backbone and deep optional).

    ``CrossV2``: ``x_{l+1} = x_0 * (V_l U_l x_l + c_l) + x_l`` with rank ``cross.low_rank``;
    the deep tower reads the raw group embeddings, not the backbone's output (as upstream);
    the output layer has no bias.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        dim = raw_dim = self._init_input()
        self.backbone: MLP | None = None
        if cfg.HasField("backbone"):
            self.backbone = MLP.from_config(dim, cfg.backbone)
            dim = self.backbone.output_dim()
        self.cross = CrossV2(dim, cross_num=cfg.cross.cross_num, low_rank=cfg.cross.low_rank)
        width = self.cross.output_dim()
        self.deep: MLP | None = None
        if cfg.HasField("deep"):
            self.deep = MLP.from_config(raw_dim, cfg.deep)
            width += self.deep.output_dim()
        self.final = MLP.from_config(width, cfg.final)
        self.output_mlp = nn.Linear(self.final.output_dim(), self._num_class, bias=False)

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """(Backbone ->) cross network, beside the optional deep tower, then the final MLP."""
        x = grouped[self._group_name]
        net = self.cross(self.backbone(x) if self.backbone is not None else x)
        if self.deep is not None:
            net = torch.cat([net, self.deep(x)], dim=-1)
        return self.output(self.output_mlp(self.final(net)))
