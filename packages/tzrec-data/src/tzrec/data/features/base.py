"""The feature API models build on: names, columns, embedding facts and arrow parsing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tzrec.core.config import sequence_separator
from tzrec.core.errors import ConfigError
from tzrec.data import arrow_utils as au

#: Data group of features read from the batch's own rows.
BASE_DATA_GROUP = "__BASE__"
#: Data group of item-side features whose rows are extended with sampled negatives.
NEG_DATA_GROUP = "__NEG__"
#: Separator between a sequence name and a sub-feature name in column and feature names
#: (upstream's default; ``USE_RTP=1`` makes it ``_``, see :func:`sequence_separator`).
SEQ_SEP = "__"


@dataclass
class SparseData:
    """Parsed ids of a non-sequence sparse feature: ``values`` split by ``lengths``."""

    name: str
    values: np.ndarray
    lengths: np.ndarray
    weights: np.ndarray | None = None
    #: batch row of every NaN/inf input value (raw features; ``None``: none)
    nonfinite_rows: np.ndarray | None = None


@dataclass
class DenseData:
    """Parsed values of a dense feature, shape ``[rows, value_dim]``.

    ``int64_values`` (same shape) holds the exact integers when the column's values are
    all integers (e.g. unix timestamps, which float32 ``values`` round), else ``None``.
    """

    name: str
    values: np.ndarray
    int64_values: np.ndarray | None = None
    #: batch row of every NaN/inf input value (``None``: none)
    nonfinite_rows: np.ndarray | None = None


@dataclass
class SequenceSparseData:
    """Parsed ids of a sequence feature.

    ``seq_lengths[r]`` items in row ``r``; item ``i`` has ``item_lengths[i]`` ids.
    """

    name: str
    values: np.ndarray
    item_lengths: np.ndarray
    seq_lengths: np.ndarray
    #: batch row of every NaN/inf input value (raw features; ``None``: none)
    nonfinite_rows: np.ndarray | None = None


@dataclass
class SequenceDenseData:
    """Parsed values of a dense sequence feature: ``values[N, dim]`` split by seq_lengths.

    ``int64_values`` (same shape): the exact integers when all values are integers.
    """

    name: str
    values: np.ndarray
    seq_lengths: np.ndarray
    int64_values: np.ndarray | None = None
    #: batch row of every NaN/inf input value (``None``: none)
    nonfinite_rows: np.ndarray | None = None


ParsedData = SparseData | DenseData | SequenceSparseData | SequenceDenseData


def column_of_expression(expression: str) -> str:
    """The column an fg ``expression`` names: ``"user:video_id"`` -> ``"video_id"``."""
    return expression.split(":", 1)[1] if ":" in expression else expression


def _fmt(v: float | int) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


class BaseFeature:
    """One configured feature.

    Args:
        config: the ``IdFeature`` / ``RawFeature`` message.
        kind: the ``FeatureConfig`` oneof name (``id_feature``, ``sequence_raw_feature``, ...)
            or, for a sub-feature of a ``sequence_feature``, the sub-feature's oneof name.
        multival_sep: separator of multi-value cells (``data_config.fg_encoded_multival_sep``
            in FG_NONE, the feature's ``separator`` in FG_DAG / FG_NORMAL).
        fg_mode: ``data_config.fg_mode`` by name; decides which column is read first.
        sequence_name: set for sub-features of a ``sequence_feature`` group.
        sequence_delim: the group's delimiter (sub-features only).
        sequence_length: the group's max length (sub-features only).
    """

    def __init__(
        self,
        config: Any,
        kind: str,
        multival_sep: str = "\x03",
        fg_mode: str = "FG_NONE",
        sequence_name: str | None = None,
        sequence_delim: str | None = None,
        sequence_length: int | None = None,
    ) -> None:
        self.config = config
        self.kind = kind
        self.multival_sep = multival_sep or "\x03"
        self.fg_mode = fg_mode
        self.sequence_name = sequence_name
        self.is_grouped_sequence = sequence_name is not None
        self.is_sequence = self.is_grouped_sequence or kind.startswith("sequence_")
        if self.is_grouped_sequence:
            self.sequence_delim = sequence_delim or ";"
            self.sequence_length = sequence_length or None
        elif self.is_sequence:
            self.sequence_delim = config.sequence_delim
            self.sequence_length = (
                config.sequence_length if config.HasField("sequence_length") else None
            ) or None
        else:
            self.sequence_delim = None
            self.sequence_length = None
        if not config.feature_name:
            raise ConfigError(f"{kind}: feature_name is required")
        #: Whether a sampler appends negatives to this feature's rows; set from the config's
        #: sampler by :func:`~tzrec.data.features.create_features` (the reader only checks it).
        self.is_neg = False
        #: ``__`` between a sequence name and a sub-feature name, ``_`` with ``USE_RTP=1``
        #: (upstream's ``_underline``), fixed when the feature is created.
        self.sequence_separator = sequence_separator()
        #: The column actually read; resolved against a file schema by the reader.
        self.input_name = self.input_names[0]

    # ---- naming -------------------------------------------------------------------
    @property
    def grouped_sequence_prefix(self) -> str:
        """``<sequence_name>__`` (``<sequence_name>_`` with ``USE_RTP=1``); "" if not grouped."""
        if not self.is_grouped_sequence:
            return ""
        return f"{self.sequence_name}{self.sequence_separator}"

    @property
    def name(self) -> str:
        """Feature name; ``<sequence_name>__<feature_name>`` for grouped sub-features."""
        return f"{self.grouped_sequence_prefix}{self.config.feature_name}"

    @property
    def input_names(self) -> list[str]:
        """Columns this feature may read, in order of preference.

        As upstream, FG_NONE (and FG_BUCKETIZE) reads the column named by the feature name
        and FG_DAG / FG_NORMAL the column named by ``expression`` (``"user:video_id"`` ->
        ``video_id``; grouped: ``<seq>__video_id``); the other one is the fallback.
        """
        names = [self.name]
        expr = getattr(self.config, "expression", "")
        if expr:
            side = expr.split(":", 1)[0] if ":" in expr else ""
            col = column_of_expression(expr)
            if side != "feature":  # upstream prefixes every input but another feature's
                col = f"{self.grouped_sequence_prefix}{col}"
            if col not in names:
                if self.fg_mode in ("FG_DAG", "FG_NORMAL"):
                    names.insert(0, col)
                else:
                    names.append(col)
        return names

    def resolve_input(self, columns: set[str] | list[str]) -> str | None:
        """Pick the column to read from ``columns``; ``None`` when none is present."""
        for name in self.input_names:
            if name in columns:
                self.input_name = name
                return name
        return None

    @property
    def data_group(self) -> str:
        """``__NEG__`` for item-side features extended by a sampler, else ``__BASE__``."""
        return NEG_DATA_GROUP if self.is_neg else BASE_DATA_GROUP

    # ---- embedding facts -------------------------------------------------------------
    @property
    def is_sparse(self) -> bool:
        """Whether the feature yields ids (looked up in an embedding table)."""
        raise NotImplementedError

    @property
    def is_weighted(self) -> bool:
        """Whether ids carry weights (``id:weight`` values)."""
        return False

    @property
    def embedding_name(self) -> str:
        """Embedding table name; features naming the same table share it."""
        return self.config.embedding_name or f"{self.name}_emb"

    @property
    def embedding_dim(self) -> int:
        """Embedding dimension (0 when unset)."""
        return int(self.config.embedding_dim)

    @property
    def num_embeddings(self) -> int:
        """Rows of the embedding table."""
        raise NotImplementedError

    @property
    def pooling(self) -> str:
        """Pooling of multi-value ids: ``sum`` or ``mean``."""
        return self.config.pooling or "sum"

    @property
    def value_dim(self) -> int:
        """Values per element (0: variable-length multi-value ids)."""
        raise NotImplementedError

    @property
    def output_dim(self) -> int:
        """Width of this feature in a feature group: embedding_dim for sparse features."""
        return self.embedding_dim if self.is_sparse else max(self.value_dim, 1)

    @property
    def default_value(self) -> list | None:
        """Values filled into empty or missing cells (``None``: an empty cell stays empty)."""
        raise NotImplementedError

    def _encoded_default(self, cast: type) -> list | None:
        if self.config.HasField("fg_encoded_default_value"):
            text = self.config.fg_encoded_default_value
            if text == "":
                return None
            try:
                return [cast(v) for v in text.split(self.multival_sep)]
            except ValueError as err:
                raise ConfigError(
                    f"feature {self.name}: fg_encoded_default_value {text!r} is not a "
                    f"{cast.__name__} list"
                ) from err
        return None

    # ---- parsing ---------------------------------------------------------------------
    def parse(self, columns: dict[str, pa.Array]) -> ParsedData:
        """Parse this feature's column of one arrow batch.

        Raises:
            BadRows: when some rows hold malformed values.
            BadType: when the column's arrow type cannot hold this feature.
        """
        arr = au.decode(au.combine(columns[self.input_name]))
        self._check_type(arr.type)
        if self.is_sequence:
            return self._parse_sequence(arr)
        return self._parse_single(arr)

    #: What the column's values may be, for the one-line error on other types.
    _accepted = "int, float, string, list<int>, list<float> or list<string>"

    def _value_type_ok(self, t: pa.DataType) -> bool:
        """Whether a (scalar or list element) value type can be read."""
        return pa.types.is_integer(t) or pa.types.is_floating(t) or au.is_stringlike(t)

    def _check_type(self, t: pa.DataType) -> None:
        """Refuse column types upstream refuses too (one line naming the type)."""
        if pa.types.is_null(t) or self._value_type_ok(t):
            return
        if au.is_listlike(t):
            inner = t.value_type
            if self._value_type_ok(inner) or pa.types.is_null(inner):
                return
            if self.is_sequence and au.is_listlike(inner) and self._value_type_ok(inner.value_type):
                return  # list<list<...>>: items with several values each
        raise au.BadType(
            self.input_name,
            self.name,
            f"type {t} is not supported (expected {self._accepted}"
            + (", or list<list<...>> for a sequence)" if self.is_sequence else ")"),
        )

    def _parse_single(self, arr: pa.Array) -> ParsedData:
        raise NotImplementedError

    def _parse_sequence(self, arr: pa.Array) -> ParsedData:
        raise NotImplementedError

    # shared helpers for subclasses -----------------------------------------------------
    def _split_sequence(self, arr: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """Items of every row (truncated to the most recent ``sequence_length``).

        Returns ``(item_lists, item_rows_offsets, seq_lengths)`` where ``item_lists`` is a
        list array with one cell per item (the item's values).
        """
        t = arr.type
        default = self.default_value
        if default is not None:
            arr = self._fill_sequence_default(arr, default)
        if au.is_stringlike(t):
            seq = au.to_list_array(arr, self.sequence_delim)
            items = au.list_values(seq)
            if pc.any(pc.match_substring(items, self.multival_sep)).as_py():
                items = pc.split_pattern(items, self.multival_sep)
            # else one value per item: stay flat (fast path)
        elif au.is_listlike(t):
            seq = au.to_list_array(arr, self.sequence_delim)
            inner = au.list_values(seq)
            if au.is_listlike(inner.type) or au.is_stringlike(inner.type) or inner.null_count:
                items = au.to_list_array(inner, self.multival_sep)
            else:
                items = inner  # one value per item: stay flat (fast path)
        elif pa.types.is_null(t):
            seq = pa.nulls(len(arr), pa.list_(pa.string()))
            items = pa.array([], pa.list_(pa.string()))
        else:
            raise au.BadType(
                self.input_name,
                self.name,
                f"expected a string or list column for a sequence, got {t}",
            )
        off = au.list_offsets(seq)
        idx, seq_lengths = au.tail_ranges(off, self.sequence_length)
        if idx is not None:
            items = items.take(pa.array(idx))
        return items, off, seq_lengths

    def _fill_cell_default(self, arr: pa.Array, default: list) -> pa.Array:
        """Empty or missing cells of a non-sequence column become ``default``."""
        t = arr.type
        if au.is_stringlike(t):
            text = self.multival_sep.join(_fmt(v) for v in default)
            return au.empty_to_null(arr.cast(pa.string())).fill_null(text)
        if au.is_listlike(t):
            if not pa.types.is_list(t):
                arr = arr.cast(pa.list_(t.value_type))
                t = arr.type
            empty = pc.equal(pc.list_value_length(arr).fill_null(0), 0)
            if not pc.any(empty).as_py():
                return arr
            fill = pa.array([default] * len(arr)).cast(t)
            return pc.if_else(empty, fill, arr)
        if pa.types.is_null(t):
            return pa.array([default] * len(arr))
        if len(default) == 1:
            return arr.fill_null(pa.scalar(default[0]).cast(t))
        return arr

    def _fill_sequence_default(self, arr: pa.Array, default: list) -> pa.Array:
        """An empty sequence becomes one item holding ``default``."""
        t = arr.type
        if au.is_stringlike(t):
            text = self.multival_sep.join(_fmt(v) for v in default)
            return au.empty_to_null(arr.cast(pa.string())).fill_null(text)
        if au.is_listlike(t):
            empty = pc.equal(pc.list_value_length(arr).fill_null(0), 0)
            item = default if au.is_listlike(t.value_type) else default[0]
            fill = pa.array([[item]] * len(arr), type=arr.type)
            return pc.if_else(empty, fill, arr)
        return arr

    def _bad_values(
        self, lists: pa.ListArray, integer: bool, row_of_list: np.ndarray | None = None
    ) -> au.BadRows:
        values = au.list_values(lists)
        kind = "integer" if integer else "numeric"
        if au.is_stringlike(values.type):
            bad = au.invalid_number_mask(values, integer)
            rows = au.parent_rows(au.list_offsets(lists))[bad]
        else:
            rows = np.arange(len(lists))
        if row_of_list is not None:
            rows = row_of_list[rows]
        return au.BadRows(np.unique(rows), self.input_name, self.name, f"expected {kind} values")

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"input={self.input_name!r}"]
        if self.is_sparse:
            parts += [f"num_embeddings={self.num_embeddings}", f"dim={self.embedding_dim}"]
        else:
            parts.append(f"value_dim={self.value_dim}")
        if self.is_sequence:
            parts.append(f"sequence={self.sequence_name or '-'}")
        return f"{type(self).__name__}({', '.join(parts)})"
