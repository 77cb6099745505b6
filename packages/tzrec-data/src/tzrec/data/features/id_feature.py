"""``id_feature`` / ``sequence_id_feature``: categorical ids for embedding lookup."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tzrec.core.errors import ConfigError
from tzrec.data import arrow_utils as au
from tzrec.data.features.base import (
    BaseFeature,
    SequenceSparseData,
    SparseData,
)
from tzrec.data.fg.hashing import hash_bucket

_OOV = "<OOV>"
#: fg modes whose string ids are pyfg's values, bucketed with pyfg's hash (FG_BUCKETIZE:
#: the input holds pyfg's outputs before bucketizing)
_PYFG_HASH_MODES = ("FG_DAG", "FG_NORMAL", "FG_BUCKETIZE")


class IdFeature(BaseFeature):
    r"""Ids read from an encoded column.

    Cells hold integer ids (``"3"``, ``"3\\x035"``, an int column or an arrow list).
    ``hash_bucket_size``: in FG_NONE integer ids are taken modulo the bucket size and any
    other string is hashed (stable 64-bit hash) into it; with feature generation (FG_DAG,
    FG_NORMAL, FG_BUCKETIZE) every id's text is bucketed as pyfg does
    (:func:`tzrec.data.fg.hashing.hash_bucket`). ``vocab_list`` / ``vocab_dict``: values
    are looked up as strings; without ``default_bucketize_value`` index 0 is the
    ``default_value`` and index 1 is out-of-vocabulary, as upstream. ``num_buckets``: ids
    must lie in ``[0, num_buckets)``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        self._vocab: list[str] | None = None
        self._vocab_map: dict[str, int] | None = None
        self._oov = 1
        if len(cfg.vocab_list) > 0:
            vocab = list(cfg.vocab_list)
            if cfg.HasField("default_bucketize_value"):
                self._oov = int(cfg.default_bucketize_value)
                if self._oov >= len(vocab):
                    raise ConfigError(
                        f"feature {self.name}: default_bucketize_value {self._oov} must be "
                        f"< len(vocab_list) {len(vocab)}"
                    )
            else:
                vocab = [cfg.default_value, _OOV] + vocab
            self._vocab = vocab
        elif len(cfg.vocab_dict) > 0:
            vmap = dict(cfg.vocab_dict.items())
            if cfg.HasField("default_bucketize_value"):
                self._oov = int(cfg.default_bucketize_value)
            elif cfg.default_value:
                vmap[cfg.default_value] = 0
            self._vocab_map = vmap
        elif cfg.vocab_file:
            self._read_vocab_file()
        if self.is_weighted and (self._vocab is not None or self._vocab_map is not None):
            raise ConfigError(f"feature {self.name}: weighted ids with a vocab are unsupported")
        self._default = self._compute_default()

    _accepted = "int, string, list<int>, list<string> or map<int,float>"

    def _read_vocab_file(self) -> None:
        """``vocab_file``: a word a line (index = line), or ``word id`` lines, as upstream.

        Nothing is reserved, so ``default_bucketize_value`` (the out-of-vocabulary id) is
        required.
        """
        cfg = self.config
        if not cfg.HasField("default_bucketize_value"):
            raise ConfigError(
                f"feature {self.name}: vocab_file needs default_bucketize_value (the id of "
                "out-of-vocabulary values)"
            )
        try:
            with open(cfg.vocab_file, encoding="utf-8") as fh:
                lines = [ln.rstrip("\n").rstrip("\r") for ln in fh if ln.strip()]
        except OSError as err:
            raise ConfigError(
                f"feature {self.name}: vocab_file {cfg.vocab_file!r}: {err.strerror}"
            ) from None
        self._oov = int(cfg.default_bucketize_value)
        pairs = [ln.rsplit(" ", 1) for ln in lines]
        if pairs and all(len(p) == 2 and p[1].isdigit() for p in pairs):
            self._vocab_map = {k: int(v) for k, v in pairs}
        else:
            self._vocab = lines

    def _check_type(self, t: pa.DataType) -> None:
        """Ids also come as ``map<int, float>`` (id -> weight), as upstream reads them."""
        if pa.types.is_map(t) and not self.is_sequence:
            if pa.types.is_integer(t.key_type) or au.is_stringlike(t.key_type):
                return
        super()._check_type(t)

    @property
    def is_sparse(self) -> bool:
        """Always sparse."""
        return True

    @property
    def is_weighted(self) -> bool:
        """``weighted: true`` ids are written ``id:weight``."""
        return bool(self.config.weighted)

    @property
    def value_dim(self) -> int:
        """``value_dim`` when set, else 1 for sequences and 0 (multi-value) otherwise."""
        if self.config.HasField("value_dim"):
            return int(self.config.value_dim)
        return 1 if self.is_sequence else 0

    @property
    def num_embeddings(self) -> int:
        """hash_bucket_size, num_buckets, the vocab size, as upstream."""
        cfg = self.config
        if cfg.HasField("zch"):
            return int(cfg.zch.zch_size)
        if cfg.HasField("hash_bucket_size"):
            return int(cfg.hash_bucket_size)
        if cfg.HasField("num_buckets"):
            return int(cfg.num_buckets)
        if self._vocab is not None:
            return max(len(self._vocab), self._oov + 1 if cfg.vocab_file else 0)
        if self._vocab_map is not None:
            return max(max(self._vocab_map.values()) + 1, self._oov + 1 if cfg.vocab_file else 0)
        raise ConfigError(
            f"feature {self.name}: set hash_bucket_size, num_buckets, vocab_list or vocab_dict"
        )

    @property
    def default_value(self) -> list | None:
        """Ids for empty cells: fg_encoded_default_value, else the encoded default_value."""
        return self._default

    def _compute_default(self) -> list | None:
        enc = self._encoded_default(int)
        if enc is not None or self.config.HasField("fg_encoded_default_value"):
            return enc
        if self.is_sequence:
            return None
        text = self.config.default_value
        if text == "" and self.fg_mode in _PYFG_HASH_MODES:
            return None  # feature generation: an empty default leaves empty cells empty
        if self._vocab is not None or self._vocab_map is not None:
            return [int(self._encode(pa.array([text]), np.zeros(1, np.int64))[0][0])]
        if text:
            ids, _ = self._encode(pa.array(text.split(self.multival_sep)), np.zeros(0))
            return [int(v) for v in ids]
        return None

    # ---- encoding --------------------------------------------------------------------
    def _encode(self, values: pa.Array, rows: np.ndarray) -> tuple[np.ndarray, None]:
        """int64 ids of flat ``values``; raises ValueError-like BadRows via caller."""
        cfg = self.config
        if self._vocab is not None or self._vocab_map is not None:
            if not au.is_stringlike(values.type):
                values = values.cast(pa.string())
            if self._vocab is not None:
                idx = pc.index_in(values, value_set=pa.array(self._vocab, pa.string()))
                ids = idx.fill_null(self._oov).to_numpy(zero_copy_only=False)
            else:
                keys = pa.array(list(self._vocab_map.keys()), pa.string())
                vals = np.asarray(list(self._vocab_map.values()), dtype=np.int64)
                pos = pc.index_in(values, value_set=keys).fill_null(-1)
                pos = pos.to_numpy(zero_copy_only=False)
                ids = np.where(pos >= 0, vals[np.maximum(pos, 0)], self._oov)
            return ids.astype(np.int64), None
        if cfg.HasField("hash_bucket_size") and self.fg_mode in _PYFG_HASH_MODES:
            # feature generation hashes every id's text as pyfg does (std::hash % size)
            return hash_bucket(values, int(cfg.hash_bucket_size)), None
        if au.is_stringlike(values.type):
            try:
                ids = pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False)
            except pa.ArrowInvalid:
                if not cfg.HasField("hash_bucket_size"):
                    raise
                numeric = ~au.invalid_number_mask(values, integer=True)
                ids = np.empty(len(values), dtype=np.int64)
                if numeric.any():
                    ids[numeric] = pc.cast(values.filter(pa.array(numeric)), pa.int64()).to_numpy(
                        zero_copy_only=False
                    )
                if (~numeric).any():
                    hashed = au.hash_strings(values.filter(pa.array(~numeric)))
                    ids[~numeric] = (hashed % np.uint64(cfg.hash_bucket_size)).astype(np.int64)
        elif pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
            if not pa.types.is_int64(values.type):
                values = values.cast(pa.int64())
            if values.null_count:
                values = values.fill_null(0)
            ids = values.to_numpy(zero_copy_only=False)
        else:
            raise pa.ArrowInvalid(f"unsupported id type {values.type}")
        if cfg.HasField("hash_bucket_size"):
            ids = np.mod(ids, int(cfg.hash_bucket_size))
        return ids.astype(np.int64, copy=False), None

    def _ids_of(self, lists: pa.ListArray, rows_of_list: au.Rows):
        """Flat ids and weights of a list array, or raise BadRows.

        ``rows_of_list`` maps list cells to batch rows (array, callable or ``None``); it is
        only evaluated to report bad rows.
        """
        rows_of_list = au.LazyRows(rows_of_list)
        values = au.list_values(lists)
        weights = None
        if self.is_weighted:
            if not au.is_stringlike(values.type):
                raise au.BadRows(
                    np.arange(len(lists)) if rows_of_list.none else np.unique(rows_of_list()),
                    self.input_name,
                    self.name,
                    "expected 'id:weight' strings",
                )
            kv = pc.split_pattern(values, ":", max_splits=1)
            klen = pc.list_value_length(kv).to_numpy(zero_copy_only=False)
            if len(klen) and (klen != 2).any():
                rows = au.parent_rows(au.list_offsets(lists))[klen != 2]
                if not rows_of_list.none:
                    rows = rows_of_list()[rows]
                raise au.BadRows(
                    np.unique(rows), self.input_name, self.name, "expected 'id:weight' values"
                )
            flat = kv.flatten()
            values = flat.take(pa.array(np.arange(0, len(flat), 2)))
            wtext = flat.take(pa.array(np.arange(1, len(flat), 2)))
            try:
                weights = pc.cast(wtext, pa.float32()).to_numpy(zero_copy_only=False)
            except pa.ArrowInvalid:
                raise self._bad_values(
                    pa.ListArray.from_arrays(
                        pa.array(au.list_offsets(lists).astype(np.int32)), wtext
                    ),
                    integer=False,
                    row_of_list=rows_of_list.get(),
                ) from None
        try:
            ids, _ = self._encode(values, None)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise self._bad_values(lists, integer=True, row_of_list=rows_of_list.get()) from None
        if self._out_of_range(ids):
            bad = (ids < 0) | (ids >= self.config.num_buckets)
            if bad.any():
                rows = au.parent_rows(au.list_offsets(lists))[bad]
                if not rows_of_list.none:
                    rows = rows_of_list()[rows]
                raise au.BadRows(
                    np.unique(rows),
                    self.input_name,
                    self.name,
                    f"expected ids in [0, {self.config.num_buckets})",
                )
        return ids, weights

    def _out_of_range(self, ids: np.ndarray) -> bool:
        """Whether some id lies outside ``[0, num_buckets)`` (two reductions, no mask)."""
        cfg = self.config
        if not cfg.HasField("num_buckets") or cfg.HasField("hash_bucket_size") or not len(ids):
            return False
        return bool(ids.min() < 0 or ids.max() >= cfg.num_buckets)

    def _check_range(self, ids: np.ndarray, rows: au.Rows) -> None:
        """Raise BadRows for ids outside ``[0, num_buckets)``; ``rows``: row of each id."""
        cfg = self.config
        if self._out_of_range(ids):
            bad = (ids < 0) | (ids >= cfg.num_buckets)
            if bad.any():
                rows = au.LazyRows(rows)
                raise au.BadRows(
                    np.arange(len(ids))[bad] if rows.none else np.unique(rows()[bad]),
                    self.input_name,
                    self.name,
                    f"expected ids in [0, {cfg.num_buckets})",
                )

    def _parse_single(self, arr: pa.Array) -> SparseData:
        if pa.types.is_map(arr.type):
            arr = _map_to_lists(arr, self.is_weighted)
        if (
            pa.types.is_integer(arr.type)
            and arr.null_count == 0
            and self._vocab is None
            and self._vocab_map is None
        ):
            ids, _ = self._encode(arr, None)
            self._check_range(ids, None)
            return SparseData(self.name, ids, np.ones(len(ids), np.int32))
        lists = au.to_list_array(arr, self.multival_sep)
        default = self._default
        null_rows = None
        if default is not None:
            lengths = pc.list_value_length(lists).fill_null(0)
            null_rows = pc.equal(lengths, 0).to_numpy(zero_copy_only=False)
        ids, weights = self._ids_of(lists, None)
        off = au.list_offsets(lists)
        lengths = np.diff(off)
        if null_rows is not None and null_rows.any():
            # insert defaults into empty rows
            dflt = np.asarray(default, dtype=np.int64)
            new_len = np.where(null_rows, len(dflt), lengths)
            out = np.empty(int(new_len.sum()), dtype=np.int64)
            new_off = np.zeros(len(new_len) + 1, dtype=np.int64)
            np.cumsum(new_len, out=new_off[1:])
            keep_pos = au.ranges(new_off[:-1][~null_rows], lengths[~null_rows])
            out[keep_pos] = ids
            fill_pos = au.ranges(new_off[:-1][null_rows], new_len[null_rows])
            out[fill_pos] = np.tile(dflt, int(null_rows.sum()))
            if weights is not None:
                w = np.ones(len(out), dtype=np.float32)
                w[keep_pos] = weights
                weights = w
            ids, lengths = out, new_len
        return SparseData(self.name, ids, lengths.astype(np.int32), weights)

    def _parse_sequence(self, arr: pa.Array) -> SequenceSparseData:
        items, _, seq_lengths = self._split_sequence(arr)
        item_rows = au.LazyRows(lambda: au.parent_rows_of_lengths(seq_lengths))
        if not au.is_listlike(items.type):
            try:
                ids, _ = self._encode(items, None)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                if au.is_stringlike(items.type):  # text items: name the rows of bad ones
                    bad = au.invalid_number_mask(items, integer=True)
                    raise au.BadRows(
                        np.unique(item_rows()[bad]),
                        self.input_name,
                        self.name,
                        "expected integer values",
                    ) from None
                raise au.BadRows(
                    np.unique(item_rows()), self.input_name, self.name, "expected integer ids"
                ) from None
            self._check_range(ids, item_rows)
            return SequenceSparseData(
                self.name, ids, np.ones(len(ids), np.int32), seq_lengths.astype(np.int32)
            )
        ids, _ = self._ids_of(items, item_rows)
        item_lengths = np.diff(au.list_offsets(items)).astype(np.int32)
        if self.value_dim == 1 and len(item_lengths) and (item_lengths != 1).any():
            rows = np.unique(item_rows()[item_lengths != 1])
            raise au.BadRows(
                rows, self.input_name, self.name, "expected exactly one id per sequence item"
            )
        return SequenceSparseData(self.name, ids, item_lengths, seq_lengths.astype(np.int32))


def _map_to_lists(arr: pa.MapArray, weighted: bool) -> pa.ListArray:
    """``map<id, weight>`` cells as lists of ids, or of ``id:weight`` strings when weighted."""
    values = arr.keys
    if weighted:
        values = pc.binary_join_element_wise(
            arr.keys.cast(pa.string()), arr.items.cast(pa.string()), ":"
        )
    mask = arr.is_null() if arr.null_count else None
    return pa.ListArray.from_arrays(arr.offsets, values, mask=mask)
