"""``tdm``: upstream's TDM scoring model, a rank model over (user, tree node) rows.

Upstream's forward: the one SEQUENCE group's history is pooled by a multi-window DIN
(:class:`~tzrec.models.modules.sequence.MultiWindowDINEncoder`, query = the group's
non-sequence features, i.e. the target node's), concatenated with every other group's
features in config order, passed through the ``final`` MLP and a linear layer to
``num_class`` logits; losses and metrics are the rank model's (upstream's examples use
``num_class: 2`` with softmax cross entropy, one loss term per sampled node row).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tzrec.models.plugin_api import MLP, ConfigError, EmbeddingGroup, RankModel
from tzrec.protos import model_pb2, seq_encoder_pb2


def _multi_window_din_class() -> Any:
    """tzrec-models' ``multi_window_din_encoder``, through the sequence-encoder registry."""
    from tzrec.core import plugins

    return plugins.get("sequence_encoders", "multi_window_din_encoder", "tzrec-models")


class TDM(RankModel):
    """Multi-window DIN over the user's history with the target node, then an MLP."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self._model_config
        groups = list(self._base_model_config.feature_groups)
        seq = [g.group_name for g in groups if g.group_type == model_pb2.SEQUENCE]
        if len(seq) != 1:
            raise ConfigError(
                f"model_config.tdm: expected exactly one SEQUENCE feature group (the user "
                f"history with the target node's features), got {len(seq)}"
            )
        self.embedding_group = EmbeddingGroup(self._features, groups)
        self._seq_group = seq[0]
        self._other_groups = [g.group_name for g in groups if g.group_name != self._seq_group]
        seq_dim = self.embedding_group.sequence_dim(self._seq_group)
        query_dim = self.embedding_group.query_dim(self._seq_group)
        if query_dim <= 0:
            raise ConfigError(
                f"model_config.tdm: SEQUENCE group '{self._seq_group}' needs the target node's "
                "(non-sequence) features as the attention query"
            )
        if query_dim > seq_dim:
            raise ConfigError(
                f"model_config.tdm: SEQUENCE group '{self._seq_group}' query width {query_dim} "
                f"exceeds its sequence width {seq_dim}"
            )
        enc = seq_encoder_pb2.MultiWindowDINEncoder(
            input=self._seq_group, windows_len=list(cfg.multiwindow_din.windows_len)
        )
        enc.attn_mlp.CopyFrom(cfg.multiwindow_din.attn_mlp)
        try:
            self.multiwindow_din = _multi_window_din_class()(enc, seq_dim, query_dim)
        except ValueError as e:
            raise ConfigError(f"model_config.tdm.multiwindow_din: {e}") from None
        width = self.multiwindow_din.output_dim() + sum(
            self.embedding_group.group_total_dim(g) for g in self._other_groups
        )
        self.deep_mlp = MLP.from_config(width, cfg.final)
        self.output_mlp = nn.Linear(self.deep_mlp.output_dim(), self._num_class)

    def predict(self, batch: Any) -> dict[str, torch.Tensor]:
        """Embeddings -> :meth:`dense_forward`."""
        return self.dense_forward(self.embedding_group(batch))

    def dense_forward(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Multi-window DIN output, the other groups, MLP and logits from grouped embeddings."""
        parts = [self.multiwindow_din(grouped)]
        parts += [grouped[g] for g in self._other_groups]
        return self.output(self.output_mlp(self.deep_mlp(torch.cat(parts, dim=-1))))


__all__ = ["TDM"]
