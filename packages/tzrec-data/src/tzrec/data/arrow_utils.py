"""Vectorised arrow/numpy helpers shared by features, readers and samplers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_INT_PATTERN = r"^[+-]?[0-9]+$"
_FLOAT_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?(nan|inf|infinity)$"
_FNV_PRIME = np.uint64(1099511628211)


class BadRows(Exception):
    """Rows of one batch that cannot be parsed; the reader turns this into a DataError.

    Args:
        rows: sorted row indices (within the arrow batch) that are malformed.
        column: the input column that holds the bad values.
        feature: the feature (or label) that read the column.
        reason: what was expected, e.g. ``"integer ids"``.
    """

    def __init__(self, rows: np.ndarray, column: str, feature: str, reason: str) -> None:
        super().__init__(f"{column} ({feature}): {reason}")
        self.rows = np.asarray(rows, dtype=np.int64)
        self.column = column
        self.feature = feature
        self.reason = reason


class BadType(Exception):
    """A column whose arrow type a feature or label cannot read (all rows are affected).

    Args:
        column: the input column.
        feature: the feature (or ``label`` / ``sample weight``) that read it.
        reason: the type found and the types accepted.
    """

    def __init__(self, column: str, feature: str, reason: str) -> None:
        super().__init__(f"{column} ({feature}): {reason}")
        self.column = column
        self.feature = feature
        self.reason = reason


def decode(arr: pa.Array) -> pa.Array:
    """A dictionary-encoded array as plain values (other arrays unchanged)."""
    if pa.types.is_dictionary(arr.type):
        return arr.dictionary_decode()
    return arr


def combine(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array from a possibly chunked one."""
    if isinstance(arr, pa.ChunkedArray):
        if arr.num_chunks == 1:
            return arr.chunk(0)
        return arr.combine_chunks()
    return arr


def is_stringlike(t: pa.DataType) -> bool:
    """Whether ``t`` is a (large) string or binary type."""
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string_view(t)
    )


def is_listlike(t: pa.DataType) -> bool:
    """Whether ``t`` is a (large / fixed size) list type."""
    return (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
    )


def empty_to_null(arr: pa.Array) -> pa.Array:
    """Replace empty strings with nulls (missing cell semantics)."""
    if arr.null_count == len(arr):
        return arr
    is_empty = pc.equal(
        pc.utf8_length(arr) if not pa.types.is_binary(arr.type) else pc.binary_length(arr), 0
    )
    return pc.if_else(is_empty, pa.nulls(len(arr), arr.type), arr)


def to_list_array(arr: pa.Array, sep: str) -> pa.ListArray:
    """A ``list<...>`` array from string cells split at ``sep``, list cells or scalars.

    Nulls and empty strings become null lists (callers decide about defaults).
    """
    arr = combine(arr)
    t = arr.type
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.list_(pa.string()))
    if is_stringlike(t):
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            arr = arr.cast(pa.string())
        arr = empty_to_null(arr)
        return pc.split_pattern(arr, sep)
    if is_listlike(t):
        if not pa.types.is_list(t):
            arr = arr.cast(pa.list_(t.value_type))
        return arr
    # scalar column: each valid cell is a list of one value
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    lengths = valid.astype(np.int32)
    offsets = np.zeros(len(arr) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = arr.drop_null()
    mask = pa.array(~valid) if arr.null_count else None
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=mask)


def list_offsets(arr: pa.ListArray) -> np.ndarray:
    """Offsets (int64) matching ``arr.flatten()``; null cells count as empty."""
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    off = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return off


def list_values(arr: pa.ListArray) -> pa.Array:
    """The values of a list array in row order (handles slices and null cells)."""
    return arr.flatten()


def lengths_from_offsets(off: np.ndarray) -> np.ndarray:
    """Per-row lengths (int64) from offsets."""
    return np.diff(off)


def fill_null_lists(arr: pa.ListArray, default: list | None) -> pa.ListArray:
    """Fill null list cells with ``default`` (``None`` leaves them as empty lists)."""
    if arr.null_count == 0 or default is None:
        return arr
    fill = pa.scalar(default, type=arr.type)
    return arr.fill_null(fill)


def tail_ranges(off: np.ndarray, keep: int | None) -> tuple[np.ndarray | None, np.ndarray]:
    """Indices of the last ``keep`` elements of each row, and the new lengths.

    Returns ``(None, lengths)`` when nothing needs truncating.
    """
    lengths = np.diff(off)
    if keep is None or keep <= 0 or len(lengths) == 0 or lengths.max(initial=0) <= keep:
        return None, lengths
    new_len = np.minimum(lengths, keep)
    starts = off[1:] - new_len
    return ranges(starts, new_len), new_len


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    cum = np.cumsum(lengths) - lengths
    idx = np.arange(total, dtype=np.int64)
    return idx - np.repeat(cum, lengths) + np.repeat(starts.astype(np.int64), lengths)


def parent_rows(off: np.ndarray) -> np.ndarray:
    """Row index of every list element."""
    return np.repeat(np.arange(len(off) - 1, dtype=np.int64), np.diff(off))


def parent_rows_of_lengths(lengths: np.ndarray) -> np.ndarray:
    """Row index of every element of rows holding ``lengths[r]`` elements."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


#: Row of each element: an array, a function computing it, or ``None`` (identity).
Rows = Union[np.ndarray, Callable[[], np.ndarray], "LazyRows", None]


class LazyRows:
    """Row indices that are only computed (once) when an error needs to report them.

    Args:
        rows: an array, a function returning one, another ``LazyRows`` or ``None``.
    """

    def __init__(self, rows: Rows) -> None:
        if isinstance(rows, LazyRows):
            self._value, self._fn = rows._value, rows._fn
        elif callable(rows):
            self._value, self._fn = None, rows
        else:
            self._value, self._fn = rows, None

    @property
    def none(self) -> bool:
        """Whether there is no mapping (element ``i`` is row ``i``)."""
        return self._value is None and self._fn is None

    def __call__(self) -> np.ndarray:
        """The row indices (computed on first use)."""
        if self._value is None and self._fn is not None:
            self._value, self._fn = np.asarray(self._fn()), None
        return self._value

    def get(self) -> np.ndarray | None:
        """The row indices, or ``None`` when there is no mapping."""
        return None if self.none else self()


def invalid_number_mask(values: pa.Array, integer: bool) -> np.ndarray:
    """Mask of string values that are not an integer (or float) literal."""
    pattern = _INT_PATTERN if integer else _FLOAT_PATTERN
    ok = pc.match_substring_regex(values, pattern, ignore_case=True)
    ok = ok.fill_null(True)
    return ~ok.to_numpy(zero_copy_only=False)


def hash_strings(values: pa.Array) -> np.ndarray:
    """A stable 64-bit hash of each string (FNV-style polynomial + splitmix64 mix)."""
    values = combine(values)
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    bufs = values.buffers()
    off = np.frombuffer(bufs[1], dtype=np.int32)[values.offset : values.offset + n + 1]
    off = off.astype(np.int64)
    data = (
        np.frombuffer(bufs[2], dtype=np.uint8)[off[0] : off[-1]]
        if bufs[2] is not None
        else np.zeros(0, np.uint8)
    )
    off = off - off[0]
    lengths = np.diff(off)
    maxlen = int(lengths.max(initial=0))
    h = np.zeros(n, dtype=np.uint64)
    if maxlen > 0:
        powers = np.empty(maxlen, dtype=np.uint64)
        powers[0] = 1
        if maxlen > 1:
            powers[1:] = _FNV_PRIME
            powers = np.cumprod(powers, dtype=np.uint64)
        pos = np.arange(len(data), dtype=np.int64) - np.repeat(off[:-1], lengths)
        contrib = (data.astype(np.uint64) + np.uint64(1)) * powers[pos]
        nonempty = lengths > 0
        sums = np.add.reduceat(contrib, off[:-1][nonempty], dtype=np.uint64)
        h[nonempty] = sums
    h ^= lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return _mix64(h)


def _mix64(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x
