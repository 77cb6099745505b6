"""``Batch``: the typed container a reader hands to a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch
from torchrec import JaggedTensor, KeyedJaggedTensor, KeyedTensor


def _map(obj: Any, fn) -> Any:
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    if obj is None:
        return None
    return fn(obj)


def _pin(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.pin_memory()
    if isinstance(x, KeyedJaggedTensor):
        return x.pin_memory()
    if isinstance(x, KeyedTensor):
        return KeyedTensor(x.keys(), x.length_per_key(), x.values().pin_memory(), x.key_dim())
    if isinstance(x, JaggedTensor):
        return JaggedTensor(
            values=x.values().pin_memory(),
            lengths=x.lengths().pin_memory(),
            weights=x.weights_or_none().pin_memory() if x.weights_or_none() is not None else None,
        )
    return x


@dataclass
class Batch:
    """One batch of parsed input.

    Feature containers are keyed by data group: ``"__BASE__"`` holds the batch's own rows
    (``batch_size`` of them); ``"__NEG__"`` holds item-side features whose rows are the
    batch's rows followed by the sampled negatives (``batch_size + num_negatives`` rows).

    Attributes:
        dense_features: group -> ``KeyedTensor`` of dense (raw) features ``[rows, dim]``.
        sparse_features: group -> ``KeyedJaggedTensor`` of ids of sparse features and of
            sequence id features (for sequences the length per row is the item count).
        sequence_mulval_lengths: group -> ``KeyedJaggedTensor`` of per-item id counts, for
            sequence id features whose items hold several ids (``value_dim != 1``).
        sequence_dense_features: feature name -> ``JaggedTensor`` of raw sequence values
            (``values [items, value_dim]``, ``lengths [rows]``).
        labels: label field -> tensor ``[batch_size]``.
        sample_weights: weight field -> float tensor ``[batch_size]``.
        reserves: reserved (pass-through) columns for prediction, or ``None``.
        additional_infos: extra tensors, e.g. ``hard_neg_indices`` ``[n, 2]``.
        batch_size: rows in the batch (base group).
    """

    dense_features: dict[str, KeyedTensor] = field(default_factory=dict)
    sparse_features: dict[str, KeyedJaggedTensor] = field(default_factory=dict)
    sequence_mulval_lengths: dict[str, KeyedJaggedTensor] = field(default_factory=dict)
    sequence_dense_features: dict[str, JaggedTensor] = field(default_factory=dict)
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    sample_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    reserves: pa.RecordBatch | None = None
    additional_infos: dict[str, torch.Tensor] = field(default_factory=dict)
    batch_size: int = 0

    def _apply(self, fn) -> Batch:
        return Batch(
            dense_features=_map(self.dense_features, fn),
            sparse_features=_map(self.sparse_features, fn),
            sequence_mulval_lengths=_map(self.sequence_mulval_lengths, fn),
            sequence_dense_features=_map(self.sequence_dense_features, fn),
            labels=_map(self.labels, fn),
            sample_weights=_map(self.sample_weights, fn),
            reserves=self.reserves,
            additional_infos=_map(self.additional_infos, fn),
            batch_size=self.batch_size,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        return self._apply(lambda x: x.to(device=torch.device(device), non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """A copy with every tensor in pinned memory (called by DataLoader pin_memory)."""
        return self._apply(_pin)

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        lines = [f"Batch(batch_size={self.batch_size}"]
        for group, kt in self.dense_features.items():
            pairs = zip(kt.keys(), kt.length_per_key(), strict=True)
            dims = ", ".join(f"{k}:{d}" for k, d in pairs)
            lines.append(f"  dense[{group}] {tuple(kt.values().shape)} {{{dims}}}")
        for group, kjt in self.sparse_features.items():
            lens = kjt.length_per_key()
            keys = ", ".join(f"{k}:{n}" for k, n in zip(kjt.keys(), lens, strict=True))
            lines.append(f"  sparse[{group}] stride={kjt.stride()} ids {{{keys}}}")
        for group, kjt in self.sequence_mulval_lengths.items():
            lines.append(f"  mulval_lengths[{group}] {kjt.keys()}")
        for name, jt in self.sequence_dense_features.items():
            lines.append(
                f"  seq_dense[{name}] values={tuple(jt.values().shape)} rows={jt.lengths().numel()}"
            )
        for name, t in self.labels.items():
            lines.append(f"  label[{name}] {tuple(t.shape)} {t.dtype}")
        for name, t in self.sample_weights.items():
            lines.append(f"  weight[{name}] {tuple(t.shape)}")
        for name, t in self.additional_infos.items():
            lines.append(f"  info[{name}] {tuple(t.shape)}")
        if self.reserves is not None:
            lines.append(f"  reserves {self.reserves.schema.names}")
        return "\n".join(lines) + ")"
