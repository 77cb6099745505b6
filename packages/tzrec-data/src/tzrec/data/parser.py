"""Turn the columns of one arrow batch into a :class:`~tzrec.data.batch.Batch`."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from tzrec.data import arrow_utils as au
from tzrec.data.batch import Batch, new_buffer
from tzrec.data.features.base import (
    BASE_DATA_GROUP,
    BaseFeature,
    DenseData,
    SequenceDenseData,
    SequenceSparseData,
    SparseData,
)


def _t(x: np.ndarray) -> torch.Tensor:
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:
        x = x.copy()
    return torch.from_numpy(x)


def _empty(n: int, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised 1-d tensor; in shared memory inside a DataLoader worker."""
    nbytes = n * torch.empty(0, dtype=dtype).element_size()
    return new_buffer(nbytes).view(dtype) if nbytes else torch.empty(0, dtype=dtype)


class DataParser:
    """Parses features, labels, sample weights and reserved columns of arrow batches.

    Args:
        features: the features to parse (their ``input_name`` already resolved).
        label_fields: label columns.
        sample_weight_fields: sample-weight columns.
        reserved_columns: columns passed through untouched (``Batch.reserves``).
    """

    def __init__(
        self,
        features: list[BaseFeature],
        label_fields: list[str] | None = None,
        sample_weight_fields: list[str] | None = None,
        reserved_columns: list[str] | None = None,
    ) -> None:
        self.features = list(features)
        self.label_fields = list(label_fields or [])
        self.sample_weight_fields = list(sample_weight_fields or [])
        self.reserved_columns = list(reserved_columns or [])
        self.nonfinite: dict[str, np.ndarray] = {}
        self._groups: dict[str, list[BaseFeature]] = defaultdict(list)
        for f in self.features:
            if f.is_grouped_sequence:
                self._groups[f.sequence_name].append(f)

    def _float_column(self, name: str, arr: pa.Array, what: str) -> torch.Tensor:
        """A scalar label / weight column: int labels stay int64, anything else float32."""
        arr = au.decode(au.combine(arr))
        if arr.null_count:
            rows = np.nonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]
            raise au.BadRows(rows, name, what, "expected a value, got an empty cell")
        if pa.types.is_integer(arr.type) and what == "label":
            return _t(arr.cast(pa.int64(), safe=False).to_numpy(zero_copy_only=False))
        if not (
            pa.types.is_integer(arr.type)
            or pa.types.is_floating(arr.type)
            or au.is_stringlike(arr.type)
        ):
            raise au.BadType(
                name,
                what,
                f"type {arr.type} is not supported (expected int, float, list<int> or list<float>)",
            )
        try:
            vals = pc.cast(arr, pa.float32(), safe=au.is_stringlike(arr.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            rows = np.nonzero(au.invalid_number_mask(arr, integer=False))[0]
            raise au.BadRows(rows, name, what, "expected a number") from None
        return _t(vals.to_numpy(zero_copy_only=False))

    def _jagged_label_delim(
        self, name: str, arr: pa.Array
    ) -> tuple[str, BaseFeature | None] | None:
        """How a label column holds one value per item, else None (a scalar label).

        As upstream, a ``list<int>`` / ``list<float>`` label (any name) holds several values
        per row (e.g. one per candidate, ``item_action_weight``). A string label named
        ``<sequence_name>__<x>`` holds one value per item of that sequence group, joined by
        the group's delimiter. Returns ``(delimiter, first feature of the group it is
        named after, if any)``.
        """
        t = au.decode(au.combine(arr)).type
        group = None
        groups = sorted(self._groups.values(), key=lambda fs: -len(fs[0].grouped_sequence_prefix))
        for feats in groups:  # the longest prefix wins ('cand_seq_' before 'cand_')
            if name.startswith(feats[0].grouped_sequence_prefix):
                group = feats[0]
                break
        if au.is_listlike(t):
            return "", group
        if au.is_stringlike(t) and group is not None:
            return group.sequence_delim, group
        return None

    def _jagged_label(self, name: str, arr: pa.Array, delim: str, num_rows: int) -> JaggedTensor:
        """Values (int64 for integer lists, else float32) and per-row lengths of a label.

        A null cell, or a null value inside a list, is a bad row (a label that is missing,
        as for scalar labels); an empty string or list is a row with no labels.
        """
        arr = au.decode(au.combine(arr))[:num_rows]
        if arr.null_count:
            rows = np.nonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]
            raise au.BadRows(rows, name, "label", "expected label values, got a null cell")
        lists = au.to_list_array(arr, delim or ";")
        off = au.list_offsets(lists)
        values = au.decode(au.list_values(lists))
        lens = au.lengths_from_offsets(off)
        if values.null_count:
            nulls = values.is_null().to_numpy(zero_copy_only=False)
            rows = np.unique(au.parent_rows(off)[nulls])
            raise au.BadRows(rows, name, "label", "expected a label value, got an empty one")
        lengths = _t(lens)
        if pa.types.is_integer(values.type):
            ints = values.cast(pa.int64(), safe=False)
            return JaggedTensor(values=_t(ints.to_numpy(zero_copy_only=False)), lengths=lengths)
        if not (pa.types.is_floating(values.type) or au.is_stringlike(values.type)):
            raise au.BadType(
                name,
                "label",
                f"type {lists.type} is not supported (expected int, float, list<int> or "
                "list<float>)",
            )
        try:
            vals = pc.cast(values, pa.float32(), safe=au.is_stringlike(values.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = au.invalid_number_mask(values, integer=False)
            rows = np.unique(au.parent_rows(off)[np.nonzero(bad)[0]])
            raise au.BadRows(rows, name, "label", "expected numbers") from None
        return JaggedTensor(values=_t(vals.to_numpy(zero_copy_only=False)), lengths=lengths)

    def parse(self, columns: dict[str, pa.Array], num_rows: int) -> Batch:
        """Build a Batch; ``num_rows`` is the base row count.

        Raises:
            BadRows: malformed values (the reader reports or skips those rows).
        """
        parsed = {f.name: f.parse(columns) for f in self.features}
        self._check_groups(parsed)
        #: input column -> batch row of each NaN/inf value read in the last parse
        self.nonfinite: dict[str, np.ndarray] = {}
        for f in self.features:
            rows = getattr(parsed[f.name], "nonfinite_rows", None)
            if rows is not None and len(rows):
                self.nonfinite[f.input_name] = rows

        sparse: dict[str, list] = defaultdict(list)
        dense: dict[str, list] = defaultdict(list)
        mulval: dict[str, list] = defaultdict(list)
        seq_dense: dict[str, JaggedTensor] = {}
        int64: dict[str, JaggedTensor | torch.Tensor] = {}
        for f in self.features:
            data = parsed[f.name]
            group = f.data_group
            if isinstance(data, SparseData):
                sparse[group].append((f.name, data.values, data.lengths, data.weights))
            elif isinstance(data, SequenceSparseData):
                if f.value_dim == 1:
                    sparse[group].append((f.name, data.values, data.seq_lengths, None))
                else:
                    off = np.zeros(len(data.seq_lengths) + 1, dtype=np.int64)
                    np.cumsum(data.seq_lengths, out=off[1:])
                    per_row = (
                        np.add.reduceat(np.append(data.item_lengths, 0).astype(np.int64), off[:-1])
                        if len(data.seq_lengths)
                        else np.zeros(0, np.int64)
                    )
                    per_row = np.where(data.seq_lengths > 0, per_row, 0)
                    sparse[group].append((f.name, data.values, per_row.astype(np.int32), None))
                    mulval[group].append((f.name, data.item_lengths, data.seq_lengths, None))
            elif isinstance(data, DenseData):
                dense[group].append((f.name, data.values))
                if data.int64_values is not None:
                    int64[f.name] = _t(data.int64_values.astype(np.int64, copy=False))
            elif isinstance(data, SequenceDenseData):
                lengths = _t(data.seq_lengths.astype(np.int64))
                seq_dense[f.name] = JaggedTensor(values=_t(data.values), lengths=lengths)
                if data.int64_values is not None:
                    values = data.int64_values.astype(np.int64, copy=False)
                    int64[f.name] = JaggedTensor(values=_t(values), lengths=lengths)
        batch = Batch(batch_size=num_rows)
        batch.sparse_features = {g: self._kjt(items) for g, items in sparse.items()}
        batch.sequence_mulval_lengths = {g: self._kjt(items) for g, items in mulval.items()}
        for group, items in dense.items():
            keys = [k for k, _ in items]
            tensors = [_t(v.astype(np.float32, copy=False)) for _, v in items]
            batch.dense_features[group] = KeyedTensor.from_tensor_list(keys, tensors)
        batch.sequence_dense_features = seq_dense
        batch.int64_features = int64
        for name in self.label_fields:
            jagged = self._jagged_label_delim(name, columns[name])
            if jagged is not None:
                # e.g. ``cand_seq__action_weight``: one label per candidate item, kept
                # jagged beside the raw sequence features
                jt = self._jagged_label(name, columns[name], jagged[0], num_rows)
                seq_dense[name] = jt
                self._count_nonfinite(name, jt.values(), jt.lengths())
                continue
            batch.labels[name] = self._float_column(name, columns[name], "label")[:num_rows]
            self._count_nonfinite(name, batch.labels[name])
        for name in self.sample_weight_fields:
            batch.sample_weights[name] = self._float_column(name, columns[name], "sample weight")[
                :num_rows
            ].float()
            self._count_nonfinite(name, batch.sample_weights[name])
        if self.reserved_columns:
            batch.reserves = pa.RecordBatch.from_arrays(
                [au.combine(columns[c])[:num_rows] for c in self.reserved_columns],
                names=self.reserved_columns,
            )
        return batch

    def _count_nonfinite(
        self, name: str, values: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> None:
        """Record the rows of NaN/inf values of a label or sample-weight column."""
        if not values.is_floating_point():
            return
        bad = ~torch.isfinite(values.reshape(-1))
        if bool(bad.any()):
            idx = torch.nonzero(bad).reshape(-1).numpy()
            if lengths is not None:
                idx = au.parent_rows_of_lengths(lengths.numpy())[idx]
            self.nonfinite[name] = idx

    @staticmethod
    def _kjt(items: list) -> KeyedJaggedTensor:
        keys = [k for k, *_ in items]
        parts = [v for _, v, _, _ in items]
        # concatenated straight into the tensor's memory (shared memory in a worker)
        values_t = _empty(sum(len(v) for v in parts), torch.int64)
        values = values_t.numpy()
        if len(values):
            np.concatenate(parts, out=values, casting="unsafe")
        lengths = np.concatenate([n for _, _, n, _ in items]).astype(np.int32, copy=False)
        weights = None
        if any(w is not None for *_, w in items):
            weights = _t(
                np.concatenate(
                    [w if w is not None else np.ones(len(v), np.float32) for _, v, _, w in items]
                ).astype(np.float32, copy=False)
            )
        return KeyedJaggedTensor(keys=keys, values=values_t, lengths=_t(lengths), weights=weights)

    def _check_groups(self, parsed: dict) -> None:
        """Every sub-feature of one sequence group must have the same items per row."""
        for seq_name, feats in self._groups.items():
            if len(feats) < 2:
                continue
            ref = parsed[feats[0].name].seq_lengths
            for f in feats[1:]:
                other = parsed[f.name].seq_lengths
                bad = np.nonzero(ref != other)[0]
                if len(bad):
                    raise au.BadRows(
                        bad,
                        f.input_name,
                        f.name,
                        f"sequence length differs from {feats[0].input_name} in sequence "
                        f"group '{seq_name}'",
                    )


__all__ = ["BASE_DATA_GROUP", "DataParser"]
