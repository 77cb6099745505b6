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


_ALIGN = 64
_TENSOR_FIELDS = (
    "dense_features",
    "sparse_features",
    "sequence_mulval_lengths",
    "sequence_dense_features",
    "int64_features",
    "labels",
    "sample_weights",
    "additional_infos",
)


def _packable(t: Any) -> bool:
    return (
        isinstance(t, torch.Tensor)
        and type(t) is torch.Tensor
        and t.device.type == "cpu"
        and t.layout == torch.strided
        and not t.requires_grad
    )


class _Packer:
    """Collects the tensors of a batch to copy them into one buffer."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []

    def put(self, t: torch.Tensor | None) -> int | None:
        if t is None:
            return None
        if not _packable(t):
            raise _NotPackable
        self.tensors.append(t)
        return len(self.tensors) - 1

    def encode(self, x: Any) -> tuple:
        if isinstance(x, KeyedJaggedTensor):
            if x.variable_stride_per_key() or x.inverse_indices_or_none() is not None:
                raise _NotPackable
            return (
                "kjt",
                x.keys(),
                self.put(x.values()),
                self.put(x.lengths()),
                self.put(x.weights_or_none()),
                x.stride(),
            )
        if isinstance(x, KeyedTensor):
            return ("kt", x.keys(), x.length_per_key(), self.put(x.values()), x.key_dim())
        if isinstance(x, JaggedTensor):
            return (
                "jt",
                self.put(x.values()),
                self.put(x.lengths()),
                self.put(x.weights_or_none()),
            )
        if isinstance(x, torch.Tensor):
            return ("t", self.put(x))
        return ("o", x)


class _NotPackable(Exception):
    pass


def _in_worker() -> bool:
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None


def new_buffer(nbytes: int) -> torch.Tensor:
    """A uint8 buffer; in shared memory inside a DataLoader worker (no copy when queued).

    Tensors that are views of such a buffer cross to the main process without a copy.
    """
    if nbytes > 0 and _in_worker():
        new_shared = getattr(torch.UntypedStorage, "_new_shared", None)
        if new_shared is not None:
            return torch.empty(0, dtype=torch.uint8).set_(new_shared(nbytes), 0, (nbytes,))
        return torch.empty(nbytes, dtype=torch.uint8).share_memory_()
    return torch.empty(nbytes, dtype=torch.uint8)


def _rebuild_packed(
    buf: torch.Tensor, meta: list, state: dict, reserves: Any, batch_size: int
) -> Batch:
    tensors = [
        buf[m[0] : m[0] + m[1]].view(m[2]).view(m[3]) if isinstance(m, tuple) else m for m in meta
    ]

    def get(i: int | None) -> torch.Tensor | None:
        return None if i is None else tensors[i]

    def decode(e: tuple) -> Any:
        kind = e[0]
        if kind == "kjt":
            return KeyedJaggedTensor(
                keys=e[1], values=get(e[2]), lengths=get(e[3]), weights=get(e[4]), stride=e[5]
            )
        if kind == "kt":
            return KeyedTensor(e[1], e[2], get(e[3]), e[4])
        if kind == "jt":
            return JaggedTensor(values=get(e[1]), lengths=get(e[2]), weights=get(e[3]))
        if kind == "t":
            return get(e[1])
        return e[1]

    fields = {name: {k: decode(v) for k, v in d.items()} for name, d in state.items()}
    return Batch(**fields, reserves=reserves, batch_size=batch_size)


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
        int64_features: feature name -> the exact int64 values of a dense raw feature
            whose values in this batch are all integers (unix timestamps in seconds or
            milliseconds, which float32 rounds): a ``JaggedTensor`` (``values [items,
            value_dim]`` int64, ``lengths [rows]``) for a sequence feature, a tensor
            ``[rows, value_dim]`` int64 otherwise. Same rows and items as the float view.
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
    int64_features: dict[str, JaggedTensor | torch.Tensor] = field(default_factory=dict)
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
            int64_features=_map(self.int64_features, fn),
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

    def __reduce__(self) -> tuple:
        """Pickle all tensors as views of one contiguous buffer.

        Inside a DataLoader worker the buffer is allocated in shared memory, so a batch
        crosses to the main process as one shared-memory segment (one file descriptor)
        instead of one per tensor. Batches holding other tensors (CUDA, autograd,
        variable-stride KJTs) pickle field by field.
        """
        packer = _Packer()
        try:
            state = {
                name: {k: packer.encode(v) for k, v in getattr(self, name).items()}
                for name in _TENSOR_FIELDS
            }
        except _NotPackable:
            return (_rebuild_fields, (dict(self.__dict__),))
        meta: list = []
        pos = 0
        for t in packer.tensors:
            if t.is_shared() and t.numel():
                meta.append(t)  # already in shared memory (see new_buffer): no copy
                continue
            nbytes = t.numel() * t.element_size()
            meta.append((pos, nbytes, t.dtype, tuple(t.shape)))
            pos += -(-nbytes // _ALIGN) * _ALIGN
        buf = new_buffer(pos)
        for t, m in zip(packer.tensors, meta, strict=True):
            if isinstance(m, tuple):
                off, nbytes, dtype, shape = m
                buf[off : off + nbytes].view(dtype).view(shape).copy_(t)
        return (_rebuild_packed, (buf, meta, state, self.reserves, self.batch_size))

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
        for name, x in self.int64_features.items():
            vals = x.values() if isinstance(x, JaggedTensor) else x
            lines.append(f"  int64[{name}] values={tuple(vals.shape)}")
        for name, t in self.labels.items():
            lines.append(f"  label[{name}] {tuple(t.shape)} {t.dtype}")
        for name, t in self.sample_weights.items():
            lines.append(f"  weight[{name}] {tuple(t.shape)}")
        for name, t in self.additional_infos.items():
            lines.append(f"  info[{name}] {tuple(t.shape)}")
        if self.reserves is not None:
            lines.append(f"  reserves {self.reserves.schema.names}")
        return "\n".join(lines) + ")"


def _rebuild_fields(fields: dict) -> Batch:
    return Batch(**fields)
