"""``raw_feature`` / ``sequence_raw_feature``: numeric values, optionally bucketized."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tzrec.core.errors import ConfigError
from tzrec.data import arrow_utils as au
from tzrec.data.features.base import (
    BaseFeature,
    DenseData,
    SequenceDenseData,
    SequenceSparseData,
    SparseData,
)


def _parse_normalizer(spec: str, name: str):
    """A vectorised function for an fg normalizer spec (log10, zscore, minmax)."""
    if not spec:
        return None
    opts = {}
    for part in spec.split(","):
        if "=" not in part:
            raise ConfigError(f"feature {name}: normalizer part {part!r} is not key=value")
        key, value = part.split("=", 1)
        opts[key.strip()] = value.strip()
    method = opts.get("method", "")
    try:
        if method == "log10":
            threshold = float(opts.get("threshold", "1e-10"))
            default = float(opts.get("default", "-10"))

            def log10(x: np.ndarray) -> np.ndarray:
                with np.errstate(divide="ignore", invalid="ignore"):
                    return np.where(x > threshold, np.log10(np.maximum(x, threshold)), default)

            return log10
        if method == "zscore":
            mean = float(opts.get("mean", "0"))
            std = float(opts.get("standard_deviation", "1"))
            return lambda x: (x - mean) / (std if std else 1.0)
        if method == "minmax":
            lo = float(opts["min"])
            hi = float(opts["max"])
            return lambda x: (x - lo) / ((hi - lo) if hi != lo else 1.0)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"feature {name}: bad normalizer {spec!r}: {err}") from err
    raise ConfigError(
        f"feature {name}: normalizer method {method!r} is not supported "
        "(supported: log10, zscore, minmax)"
    )


class RawFeature(BaseFeature):
    """Numeric values: dense ``[rows, value_dim]``, or bucketized ids with ``boundaries``.

    A value ``x`` falls in bucket ``i`` when ``boundaries[i-1] <= x < boundaries[i]``
    (``len(boundaries) + 1`` buckets). The normalizer is applied before bucketizing.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._boundaries = np.asarray(list(self.config.boundaries), dtype=np.float32)
        self._normalize = _parse_normalizer(self.config.normalizer, self.name)
        self._default = self._compute_default()

    @property
    def is_sparse(self) -> bool:
        """Sparse (bucketized ids) when boundaries are set."""
        return len(self._boundaries) > 0

    @property
    def value_dim(self) -> int:
        """Values per element (default 1)."""
        return max(int(self.config.value_dim), 1)

    @property
    def num_embeddings(self) -> int:
        """``len(boundaries) + 1`` buckets."""
        return len(self._boundaries) + 1

    @property
    def output_dim(self) -> int:
        """embedding_dim for bucketized / dense-embedded features, else value_dim."""
        if self.is_sparse or self.config.HasField("mlp") or self.config.HasField("autodis"):
            return self.embedding_dim
        return self.value_dim

    @property
    def default_value(self) -> list | None:
        """Values for empty cells: fg_encoded_default_value, else default_value x value_dim."""
        return self._default

    def _compute_default(self) -> list | None:
        if self.config.HasField("fg_encoded_default_value"):
            return self._encoded_default(float)
        if self.is_sequence:
            return None
        text = self.config.default_value
        if text == "":
            return None
        try:
            vals = [float(v) for v in text.split(self.multival_sep)]
        except ValueError as err:
            raise ConfigError(
                f"feature {self.name}: default_value {text!r} is not numeric"
            ) from err
        if len(vals) == 1 and self.value_dim > 1:
            vals = vals * self.value_dim
        return vals

    def _floats(
        self, lists: pa.ListArray, rows_of_list: au.Rows
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """float32 values of a list array, exact int64 values and NaN/inf rows.

        The int64 values are ``_int64``'s; the rows list the batch row of every NaN/inf
        input value (``None`` when all are finite).
        """
        values = au.list_values(lists)
        try:
            out = _float32(values)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise self._bad_values(
                lists, integer=False, row_of_list=au.LazyRows(rows_of_list).get()
            ) from None
        if values.null_count and np.isnan(out).any():
            out = np.where(values.is_null().to_numpy(zero_copy_only=False), 0.0, out)
            out = out.astype(np.float32, copy=False)
        nonfinite = None
        bad = ~np.isfinite(out)
        if bad.any():
            nonfinite = au.parent_rows(au.list_offsets(lists))[bad]
            rows = au.LazyRows(rows_of_list)
            if not rows.none:
                nonfinite = rows()[nonfinite]
        ints = self._int64(values)
        if self._normalize is not None:
            out = self._normalize(out).astype(np.float32)
        return out, ints, nonfinite

    def _int64(self, values: pa.Array) -> np.ndarray | None:
        """Exact int64 values of a dense feature whose values are all integers, else None.

        float32 keeps 24 bits, so unix seconds (1.7e9) round to 128 s; the int64 copy keeps
        them exact for consumers that need differences (HSTU time deltas). Nulls read 0.
        """
        if self.is_sparse:
            return None
        t = values.type
        try:
            if pa.types.is_integer(t):
                ints = values.cast(pa.int64())
            elif au.is_stringlike(t):
                ints = pc.cast(values, pa.int64())
            else:
                return None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # uint64 beyond int64, or a non-integer string
        if ints.null_count:
            ints = ints.fill_null(0)
        return ints.to_numpy(zero_copy_only=False)

    def _bucketize(self, x: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._boundaries, x, side="right").astype(np.int64)

    def _parse_single(self, arr: pa.Array) -> DenseData | SparseData:
        if (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)) and (
            self.value_dim == 1
        ):
            if arr.null_count == 0 or self._default is not None:
                x = _float32(arr)
                ints = self._int64(arr)
                if arr.null_count:
                    nulls = arr.is_null().to_numpy(zero_copy_only=False)
                    x = x.copy()
                    x[nulls] = self._default[0]
                    if ints is not None and float(self._default[0]).is_integer():
                        ints = ints.copy()
                        ints[nulls] = int(self._default[0])
                    else:
                        ints = None
                bad = ~np.isfinite(x)
                nonfinite = np.nonzero(bad)[0] if bad.any() else None
                if self._normalize is not None:
                    x = self._normalize(x).astype(np.float32)
                if self.is_sparse:
                    ones = np.ones(len(x), np.int32)
                    return SparseData(self.name, self._bucketize(x), ones, None, nonfinite)
                return DenseData(
                    self.name,
                    x.reshape(-1, 1),
                    None if ints is None else ints.reshape(-1, 1),
                    nonfinite,
                )
        if self._default is not None:
            arr = self._fill_cell_default(arr, self._default)
        lists = au.to_list_array(arr, self.multival_sep)
        values, ints, nonfinite = self._floats(lists, None)
        lengths = np.diff(au.list_offsets(lists))
        dim = self.value_dim
        bad = lengths != dim
        if bad.any():
            raise au.BadRows(
                np.nonzero(bad)[0], self.input_name, self.name, f"expected {dim} value(s) per cell"
            )
        if self.is_sparse:
            lengths = lengths.astype(np.int32)
            return SparseData(self.name, self._bucketize(values), lengths, None, nonfinite)
        return DenseData(
            self.name,
            values.reshape(len(lists), dim),
            None if ints is None else ints.reshape(len(lists), dim),
            nonfinite,
        )

    def _parse_sequence(self, arr: pa.Array) -> SequenceDenseData | SequenceSparseData:
        items, _, seq_lengths = self._split_sequence(arr)
        item_rows = au.LazyRows(lambda: au.parent_rows_of_lengths(seq_lengths))
        if not au.is_listlike(items.type):
            items = pa.ListArray.from_arrays(
                pa.array(np.arange(len(items) + 1, dtype=np.int32)), items
            )
        values, ints, nonfinite = self._floats(items, item_rows)
        item_lengths = np.diff(au.list_offsets(items))
        dim = self.value_dim
        bad = item_lengths != dim
        if bad.any():
            raise au.BadRows(
                np.unique(item_rows()[bad]),
                self.input_name,
                self.name,
                f"expected {dim} value(s) per sequence item",
            )
        if self.is_sparse:
            return SequenceSparseData(
                self.name,
                self._bucketize(values),
                item_lengths.astype(np.int32),
                seq_lengths.astype(np.int32),
                nonfinite,
            )
        return SequenceDenseData(
            self.name,
            values.reshape(-1, dim),
            seq_lengths.astype(np.int32),
            None if ints is None else ints.reshape(-1, dim),
            nonfinite,
        )


def _float32(values: pa.Array) -> np.ndarray:
    """float32 values as upstream casts them: numbers unsafely (large ints round, no error).

    Strings are parsed (ArrowInvalid for a non-number).
    """
    if pa.types.is_float32(values.type) and not values.null_count:
        return values.to_numpy(zero_copy_only=False)
    safe = au.is_stringlike(values.type)
    out = pc.cast(values, pa.float32(), safe=safe).to_numpy(zero_copy_only=False)
    return out.astype(np.float32, copy=False)


__all__ = ["RawFeature"]
