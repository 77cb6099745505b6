"""Sampler tables: item/user node tables and edge tables, text or parquet."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from tzrec.core.errors import DataError
from tzrec.data import arrow_utils as au
from tzrec.data.features.base import SEQ_SEP
from tzrec.data.io import expand_input_path

_TEXT_TYPES = {
    "int64": pa.int64(),
    "int32": pa.int64(),
    "int": pa.int64(),
    "float": pa.float64(),
    "double": pa.float64(),
    "string": pa.string(),
}


def _is_parquet(path: str) -> bool:
    return path.endswith(".parquet") or path.endswith(".pq")


def read_table(path: str, field_delimiter: str | None = None) -> pa.Table:
    """Read a sampler table.

    Text files start with a header naming and typing the columns, e.g.
    ``id:int64<TAB>weight:float<TAB>feature:string``; columns are tab separated unless
    ``field_delimiter`` says otherwise. Parquet files use the same column names.
    """
    tables = []
    for f in expand_input_path(path):
        tables.append(pq.read_table(f) if _is_parquet(f) else _read_text(f, field_delimiter))
    if not tables:
        raise DataError(f"sampler table {path}: no files")
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def _read_text(path: str, field_delimiter: str | None) -> pa.Table:
    delim = field_delimiter or "\t"
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\r\n")
    if not header:
        raise DataError(f"sampler table {path}: empty file, expected a header line")
    names, types = [], {}
    for col in header.split(delim):
        name, _, typ = col.partition(":")
        t = _TEXT_TYPES.get(typ.strip().lower() or "string")
        if t is None:
            raise DataError(f"sampler table {path}: header column {col!r} has unknown type")
        names.append(name.strip())
        types[name.strip()] = t
    try:
        return pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pcsv.ParseOptions(delimiter=delim, quote_char=False),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
    except pa.ArrowInvalid as err:
        raise DataError(f"sampler table {path}: {' '.join(str(err).split())}") from None


def _column(table: pa.Table, path: str, name: str, *alts: str) -> pa.Array:
    for n in (name, *alts):
        if n in table.column_names:
            return au.combine(table.column(n))
    raise DataError(f"sampler table {path}: column '{name}' is missing")


class NodeTable:
    """Nodes sorted by id with weights and (for items) attribute columns."""

    def __init__(
        self,
        path: str,
        attr_fields: list[str] | None = None,
        attr_delimiter: str = ":",
        field_delimiter: str | None = None,
        attr_types: dict[str, pa.DataType] | None = None,
        multival_sep: str = "\x03",
        table_columns: dict[str, str] | None = None,
    ) -> None:
        table = read_table(path, field_delimiter)
        ids = _column(table, path, "id").cast(pa.int64())
        if ids.null_count:
            row = int(np.nonzero(ids.is_null().to_numpy(zero_copy_only=False))[0][0])
            raise DataError(f"sampler table {path}: row {row}: id is empty")
        ids_np = ids.to_numpy()
        if "weight" in table.column_names:
            w = _column(table, path, "weight").cast(pa.float64()).fill_null(0.0).to_numpy()
        else:
            w = np.ones(len(ids_np))
        order = np.argsort(ids_np, kind="stable")
        self.ids = ids_np[order]
        self.weights = w[order]
        if (self.weights < 0).any():
            raise DataError(f"sampler table {path}: negative weights")
        self.attrs: dict[str, pa.Array] = {}
        attr_fields = list(attr_fields or [])
        if attr_fields:
            raw = self._split_attrs(table, path, attr_fields, attr_delimiter, table_columns)
            take = pa.array(order)
            for name, arr in raw.items():
                arr = arr.take(take)
                t = (attr_types or {}).get(name)
                self.attrs[name] = _convert(arr, t, multival_sep, path, name)

    @staticmethod
    def _split_attrs(
        table: pa.Table,
        path: str,
        attr_fields: list[str],
        delim: str,
        table_columns: dict[str, str] | None = None,
    ):
        if "feature" not in table.column_names:
            # a qualified candidate attribute (``cand_seq__video_id``) may be stored under
            # its bare sub-feature name (``video_id``) in a one-row-per-item table
            columns = {}
            for a in attr_fields:
                bare = (table_columns or {}).get(a) or a.split(SEQ_SEP, 1)[-1]
                columns[a] = a if a in table.column_names else bare
            missing = [a for a, c in columns.items() if c not in table.column_names]
            if missing:
                raise DataError(
                    f"sampler table {path}: no 'feature' column and attribute columns "
                    f"{missing} are missing"
                )
            return {a: au.combine(table.column(c)) for a, c in columns.items()}
        feat = au.combine(table.column("feature")).cast(pa.string()).fill_null("")
        n = len(attr_fields)
        parts = pc.split_pattern(feat, delim, max_splits=n - 1) if n > 1 else None
        if parts is None:
            return {attr_fields[0]: feat}
        lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        bad = np.nonzero(lengths != n)[0]
        if len(bad):
            raise DataError(
                f"sampler table {path}: row {int(bad[0])}: feature has {int(lengths[bad[0]])} "
                f"attributes, expected {n} ({', '.join(attr_fields)}) joined by {delim!r}"
            )
        flat = parts.flatten()
        return {
            a: flat.take(pa.array(np.arange(i, len(flat), n))) for i, a in enumerate(attr_fields)
        }

    def index_of(self, ids: np.ndarray) -> np.ndarray:
        """Row index of each id, -1 where the id is not in the table."""
        ids = np.asarray(ids)
        n = len(self.ids)
        if n and int(self.ids[-1]) - int(self.ids[0]) == n - 1 and ids.dtype.kind in "iu":
            # consecutive ids (sorted, so distinct): the row is the offset from the first
            pos = ids.astype(np.int64) - int(self.ids[0])
            return np.where((pos >= 0) & (pos < n), pos, -1)
        pos = np.searchsorted(self.ids, ids)
        pos = np.minimum(pos, max(len(self.ids) - 1, 0))
        found = (self.ids[pos] == ids) if len(self.ids) else np.zeros(len(ids), bool)
        return np.where(found, pos, -1)

    def take_attrs(self, idx: np.ndarray) -> dict[str, pa.Array]:
        """Attribute columns of the given rows."""
        t = pa.array(idx, pa.int64())
        return {name: arr.take(t) for name, arr in self.attrs.items()}


def _convert(arr: pa.Array, t, sep: str, path: str, name: str) -> pa.Array:
    if t is None or au.is_stringlike(t) or arr.type == t:
        return arr
    try:
        if au.is_listlike(t):
            return au.to_list_array(arr, sep).cast(pa.list_(t.value_type))
        return au.empty_to_null(arr).cast(t) if au.is_stringlike(arr.type) else arr.cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"sampler table {path}: attribute '{name}' does not parse as {t}") from None


class EdgeTable:
    """Edges ``src_id -> dst_id`` (with weight), grouped by source (CSR)."""

    def __init__(self, path: str, field_delimiter: str | None = None) -> None:
        table = read_table(path, field_delimiter)
        src = _column(table, path, "src_id").cast(pa.int64()).to_numpy(zero_copy_only=False)
        dst = _column(table, path, "dst_id").cast(pa.int64()).to_numpy(zero_copy_only=False)
        if "weight" in table.column_names:
            w = (
                _column(table, path, "weight")
                .cast(pa.float64())
                .fill_null(1.0)
                .to_numpy(zero_copy_only=False)
            )
        else:
            w = np.ones(len(src))
        order = np.lexsort((-w, src))
        self.src = src[order]
        self.dst = dst[order]
        self.weights = w[order]
        self.users, starts = np.unique(self.src, return_index=True)
        self.offsets = np.append(starts, len(self.src)).astype(np.int64)
        self.path = os.fspath(path)

    def neighbors(self, users: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``limit`` heaviest neighbours of each user: (query index, dst ids)."""
        if len(self.users) == 0 or len(users) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos = np.searchsorted(self.users, users)
        pos = np.minimum(pos, len(self.users) - 1)
        found = self.users[pos] == users
        starts = np.where(found, self.offsets[pos], 0)
        counts = np.where(found, self.offsets[pos + 1] - self.offsets[pos], 0)
        counts = np.minimum(counts, limit)
        idx = au.ranges(starts, counts)
        q = np.repeat(np.arange(len(users), dtype=np.int64), counts)
        return q, self.dst[idx]
