"""The item table the tree tools read: ids, category or embedding, attributes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from tzrec.core.errors import DataError


@dataclass
class Items:
    """Items in input order.

    Attributes:
        ids: item ids.
        categories: category of each item (strings, ``""`` when empty), for the initial tree.
        embeddings: ``(items, dim)`` embeddings, for the learnt tree.
        attrs / raw_attrs: each item's attribute values (python scalars or None).
        attr_names / raw_attr_names: their columns.
    """

    ids: list[int]
    categories: list[str] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    attrs: list[list[Any]] = field(default_factory=list)
    raw_attrs: list[list[Any]] = field(default_factory=list)
    attr_names: list[str] = field(default_factory=list)
    raw_attr_names: list[str] = field(default_factory=list)

    def tree(self, codes: np.ndarray, n_cluster: int, build: Any) -> Any:
        """``build(...)`` the tree over these items with the given leaf codes."""
        return build(
            self.ids,
            codes,
            n_cluster,
            self.attrs,
            self.raw_attrs,
            self.attr_names,
            self.raw_attr_names,
        )


def _parse_embedding(value: Any, row: int, path: str, name: str) -> list[float]:
    if isinstance(value, str):
        text = value.strip().strip("[]")
        try:
            return [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
        except ValueError:
            raise DataError(
                f"{path}: row {row}: column '{name}' is not a list of numbers: {value[:40]!r}"
            ) from None
    if value is None:
        raise DataError(f"{path}: row {row}: column '{name}' is empty")
    return [float(x) for x in value]


def read_items(
    path: str,
    item_id_field: str,
    attr_fields: list[str],
    raw_attr_fields: list[str],
    category_field: str | None = None,
    embedding_field: str | None = None,
) -> Items:
    """Read the item table (parquet or csv files, globs, directories).

    Raises:
        DataError: no files, a missing column (named), an empty/non-integer id or a
            malformed embedding (row named).
    """
    import pyarrow.dataset as pds

    from tzrec.data.io import expand_input_path

    if item_id_field in attr_fields:
        raise DataError(f"--attr_fields: the item id column '{item_id_field}' is not an attribute")
    files = expand_input_path(path)
    if not files:
        raise DataError(f"{path}: no files to read")
    fmt = "csv" if files[0].endswith(".csv") else "parquet"
    try:
        table = pds.dataset(files, format=fmt).to_table()
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read as {fmt} ({' '.join(str(e).split())})") from None
    wanted = [item_id_field, *attr_fields, *raw_attr_fields]
    wanted += [c for c in (category_field, embedding_field) if c]
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise DataError(
            f"{path}: column {', '.join(map(repr, missing))} missing (the table has "
            f"{', '.join(table.column_names)})"
        )
    id_col = table.column(item_id_field).combine_chunks()
    if id_col.null_count:
        row = int(np.nonzero(id_col.is_null().to_numpy(zero_copy_only=False))[0][0])
        raise DataError(f"{path}: row {row}: column '{item_id_field}' is empty")
    try:
        ids = id_col.cast(pa.int64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"{path}: column '{item_id_field}': expected integer item ids") from None
    items = Items(ids=ids, attr_names=list(attr_fields), raw_attr_names=list(raw_attr_fields))
    cols = [table.column(a).to_pylist() for a in attr_fields]
    raw = [table.column(a).to_pylist() for a in raw_attr_fields]
    items.attrs = [list(v) for v in zip(*cols, strict=True)] if cols else [[] for _ in ids]
    items.raw_attrs = [list(v) for v in zip(*raw, strict=True)] if raw else [[] for _ in ids]
    if category_field:
        cats = table.column(category_field).cast(pa.string()).fill_null("")
        items.categories = cats.to_pylist()
    if embedding_field:
        values = table.column(embedding_field).to_pylist()
        vecs = [_parse_embedding(v, i, path, embedding_field) for i, v in enumerate(values)]
        dims = {len(v) for v in vecs}
        if len(dims) != 1 or 0 in dims:
            raise DataError(
                f"{path}: column '{embedding_field}': embeddings of different or zero "
                f"lengths {sorted(dims)[:5]}"
            )
        items.embeddings = np.asarray(vecs, dtype=np.float64)
    return items


__all__ = ["Items", "read_items"]
