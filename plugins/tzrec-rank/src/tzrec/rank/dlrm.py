"""DLRM: a dense MLP, pairwise dot products of all feature vectors, an over MLP (``dlrm``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import MLP, ConfigError, EmbeddingGroup, InteractionArch, RankModel
from tzrec.protos import model_pb2
from tzrec.rank.fields import require_group_type, uniform_field_dim


class DLRM(RankModel):
    """``y = Linear(MLP_final([dots, d, sparse]))`` with ``d = MLP_dense(dense)``.

    ``dots`` are ``<x_i, x_j>`` for ``i < j`` over ``[d, e_1, ..., e_n]`` (the sparse
    group's embeddings, one ``embedding_dim``, equal to ``dense_mlp``'s last width);
    ``sparse`` (the flat embeddings) only when ``arch_with_sparse`` (default true). Groups:
    the only group, or ``sparse`` plus an optional ``dense`` group of raw features.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.model_config
        what = f"model_config.{self._model_name}"
        groups = list(self.base_model_config.feature_groups)
        self.embedding_group = EmbeddingGroup(self.features, groups)
        names = self.embedding_group.group_names()
        self._sparse_group = names[0] if len(names) == 1 else "sparse"
        self.group(self._sparse_group)
        self._dense_group = "dense" if len(names) > 1 and "dense" in names else None
        self._check_no_sequence(self._sparse_group, what)
        self.dense_mlp: MLP | None = None
        if self._dense_group is not None:
            self._check_no_sequence(self._dense_group, what)
            if not cfg.HasField("dense_mlp"):
                raise ConfigError(f"{what}.dense_mlp: required with a 'dense' feature group")
            dense_dim = self.embedding_group.group_total_dim(self._dense_group)
            self.dense_mlp = MLP.from_config(dense_dim, cfg.dense_mlp)
        elif cfg.HasField("dense_mlp"):
            raise ConfigError(f"{what}.dense_mlp: set, but there is no 'dense' feature group")
        self._sparse_num, self._sparse_dim = uniform_field_dim(
            self.embedding_group, self._sparse_group, what
        )
        if self.dense_mlp is not None and self.dense_mlp.output_dim() != self._sparse_dim:
            raise ConfigError(
                f"{what}.dense_mlp: last hidden unit {self.dense_mlp.output_dim()} must equal "
                f"the sparse features' embedding_dim {self._sparse_dim}"
            )
        self.interaction = InteractionArch(self._sparse_num + int(self.dense_mlp is not None))
        width = self.interaction.output_dim()
        if self.dense_mlp is not None:
            width += self.dense_mlp.output_dim()
        self._with_sparse = bool(cfg.arch_with_sparse)
        if self._with_sparse:
            width += self._sparse_num * self._sparse_dim
        self.final_mlp = MLP.from_config(width, cfg.final)
        self.output_mlp = nn.Linear(self.final_mlp.output_dim(), self._num_class)

    def _check_no_sequence(self, group: str, what: str) -> None:
        require_group_type(self.embedding_group, group, model_pb2.DEEP, what)
        if group in self.embedding_group.sequence_encoders.encoders:
            raise ConfigError(f"{what}: feature group '{group}' may not have sequence features")

    def predict(self, batch: Any) -> dict[str, torch.Tensor]:
        """Grouped embeddings -> :meth:`dense_forward`."""
        return self.dense_forward(self.embedding_group(batch))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Dense arch, dot interactions, over arch."""
        sparse = grouped[self._sparse_group]
        fields = sparse.reshape(-1, self._sparse_num, self._sparse_dim)
        parts = []
        if self.dense_mlp is not None and self._dense_group is not None:
            dense = self.dense_mlp(grouped[self._dense_group])
            fields = torch.cat([dense.unsqueeze(1), fields], dim=1)
            parts.append(dense)
        parts.insert(0, self.interaction(fields))
        if self._with_sparse:
            parts.append(sparse)
        return self.output(self.output_mlp(self.final_mlp(torch.cat(parts, dim=-1))))
