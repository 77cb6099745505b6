"""Vectorised feature-generation operators over arrow list arrays (no per-row Python).

Each operator takes per-row multi-value inputs (``list<string>`` arrays, one cell per batch
row; a null cell is an empty input) and returns per-row outputs. Row-wise joins (a key looked
up in its own row's map) code every key by its index among the map's distinct keys and
match exact ``(row, code)`` integers with a sorted search.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tzrec.data import arrow_utils as au

#: Joins a row number and a key (a byte that ids do not contain).
_ROW_SEP = "\x1f"
#: Combiners of several looked-up values, as upstream (``avg`` is ``mean``).
COMBINERS = ("sum", "mean", "avg", "min", "max", "count", "")


def string_lists(arr: pa.Array, sep: str) -> pa.ListArray:
    """``list<string>`` of a string column split at ``sep``, a list column or a scalar one."""
    lists = au.to_list_array(au.decode(au.combine(arr)), sep)
    vt = lists.type.value_type
    if au.is_listlike(vt):
        lists = pa.ListArray.from_arrays(
            pa.array(au.list_offsets(lists).astype(np.int32)),
            pc.binary_join(au.list_values(lists).cast(pa.list_(pa.string())), sep),
        )
    elif not pa.types.is_string(vt):
        lists = lists.cast(pa.list_(pa.string()))
    return lists


def lists_from(values: pa.Array, rows: np.ndarray, n: int) -> pa.ListArray:
    """A list array of ``n`` rows holding ``values[i]`` in row ``rows[i]`` (rows ascending)."""
    off = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=off[1:])
    return pa.ListArray.from_arrays(pa.array(off), values)


def row_index_in(
    q_rows: np.ndarray, q_keys: pa.Array, m_rows: np.ndarray, m_keys: pa.Array
) -> np.ndarray:
    """Position in the map entries of each query key in its own row (-1: not there).

    Keys are coded by their index among the map's distinct keys, so ``(row, key)`` becomes
    one exact int64 matched with a sorted search; a key repeated in one row's map matches
    its first entry.
    """
    out = np.full(len(q_keys), -1, np.int64)
    if len(q_keys) == 0 or len(m_keys) == 0:
        return out
    uniq = pc.unique(m_keys)
    width = np.int64(len(uniq) + 1)
    m_code = pc.index_in(m_keys, value_set=uniq).to_numpy(zero_copy_only=False)
    q_code = pc.index_in(q_keys, value_set=uniq).fill_null(-1).to_numpy(zero_copy_only=False)
    m_comb = m_rows.astype(np.int64) * width + m_code.astype(np.int64)
    comb, first = np.unique(m_comb, return_index=True)
    known = q_code >= 0
    q_comb = q_rows[known].astype(np.int64) * width + q_code[known].astype(np.int64)
    pos = np.minimum(np.searchsorted(comb, q_comb), len(comb) - 1)
    hit = comb[pos] == q_comb
    out[np.nonzero(known)[0][hit]] = first[pos[hit]]
    return out


def product(parts: list[pa.ListArray], joiner: str = "_") -> pa.ListArray:
    """Per-row cartesian product of string lists, the first input varying slowest.

    ``["a", "b"] x ["x", "y"]`` -> ``["a_x", "a_y", "b_x", "b_y"]``; an empty input makes
    the row empty (combo_feature, as upstream).
    """
    acc = parts[0]
    for nxt in parts[1:]:
        off_a, off_b = au.list_offsets(acc), au.list_offsets(nxt)
        la, lb = np.diff(off_a), np.diff(off_b)
        lens = la * lb
        rows = au.parent_rows_of_lengths(lens)
        k = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        ai = off_a[:-1][rows] + k // np.maximum(lb[rows], 1)
        bi = off_b[:-1][rows] + k % np.maximum(lb[rows], 1)
        va = au.list_values(acc).take(pa.array(ai))
        vb = au.list_values(nxt).take(pa.array(bi))
        joined = pc.binary_join_element_wise(va, vb, joiner)
        acc = lists_from(joined, rows, len(la))
    return acc


def parse_kv(lists: pa.ListArray, kv_sep: str = ":") -> tuple[np.ndarray, pa.Array, pa.Array]:
    """``"k:v"`` items of each row -> (row of each item, keys, value texts).

    An item without the separator has an empty value text (callers read it as weight 1 or
    a missing value). The key ends at the first separator.
    """
    rows = au.parent_rows(au.list_offsets(lists))
    items = au.list_values(lists)
    parts = pc.split_pattern(items, kv_sep, max_splits=1)
    keys = pc.list_element(parts, 0)
    n_parts = pc.list_value_length(parts).fill_null(0).to_numpy(zero_copy_only=False)
    first = au.list_offsets(parts)[:-1]
    idx = pa.array(first + 1, mask=n_parts < 2)  # the value text, null without a separator
    vals = (
        au.list_values(parts).take(idx).fill_null("") if len(items) else pa.array([], pa.string())
    )
    return rows, keys, vals


def map_entries(
    arr: pa.Array, sep: str, kv_sep: str = ":"
) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """(row, key, value text) of a map column: ``map<k, v>`` or ``"k:v<sep>k:v"`` strings."""
    arr = au.decode(au.combine(arr))
    if pa.types.is_map(arr.type):
        off = np.asarray(arr.offsets).astype(np.int64)
        off = off - off[0]
        keys, items = arr.keys, arr.items
        return au.parent_rows(off), keys.cast(pa.string()), items.cast(pa.string())
    return parse_kv(string_lists(arr, sep), kv_sep)


def to_float(values: pa.Array) -> np.ndarray:
    """float64 of value texts (raises ArrowInvalid for a non-number)."""
    if au.is_stringlike(values.type):
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    return pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)


def reduce_rows(
    values: np.ndarray, rows: np.ndarray, n: int, combiner: str
) -> tuple[np.ndarray, np.ndarray]:
    """Combine the values of each row: (one value per row, whether the row had any)."""
    count = np.bincount(rows, minlength=n).astype(np.float64)
    has = count > 0
    if combiner == "sum":
        out = np.bincount(rows, weights=values, minlength=n)
    elif combiner in ("mean", "avg"):
        out = np.bincount(rows, weights=values, minlength=n) / np.maximum(count, 1)
    elif combiner == "count":
        out = count
    elif combiner in ("min", "max"):
        out = np.full(n, np.inf if combiner == "min" else -np.inf)
        (np.minimum if combiner == "min" else np.maximum).at(out, rows, values)
        out = np.where(has, out, 0.0)
    else:
        raise ValueError(f"combiner {combiner!r}")
    return out, has


def bool_mask(values: pa.ListArray, mask: pa.ListArray) -> tuple[pa.ListArray, np.ndarray]:
    """Keep the values whose mask is true (``true``/``1``/non-zero); rows of length mismatch.

    Returns ``(masked lists, rows where values and mask differ in length)``.
    """
    lv = np.diff(au.list_offsets(values))
    lm = np.diff(au.list_offsets(mask))
    bad = np.nonzero(lv != lm)[0]
    m = au.list_values(mask)
    if au.is_stringlike(m.type):
        low = pc.utf8_lower(m.cast(pa.string()))
        keep = pc.or_(pc.equal(low, "true"), pc.equal(low, "1"))
    elif pa.types.is_boolean(m.type):
        keep = m
    else:
        keep = pc.not_equal(m, 0)
    keep_np = keep.fill_null(False).to_numpy(zero_copy_only=False)
    if len(bad):
        return values, bad
    rows = au.parent_rows(au.list_offsets(values))[keep_np]
    kept = au.list_values(values).filter(pa.array(keep_np))
    return lists_from(kept, rows, len(values)), bad


def kv_dot(query: pa.Array, document: pa.Array, sep: str, n: int) -> np.ndarray:
    """Sum over the query keys found in the document of ``weight_q * weight_d`` per row.

    A key without ``:weight`` weighs 1, so plain id lists give the size of the intersection
    (kv_dot_product, as upstream).
    """
    q_rows, q_keys, q_vals = map_entries(query, sep)
    d_rows, d_keys, d_vals = map_entries(document, sep)
    pos = row_index_in(q_rows, q_keys, d_rows, d_keys)
    hit = pos >= 0
    qw = _weights(q_vals)
    dw = _weights(d_vals)
    prod = qw[hit] * dw[pos[hit]]
    return np.bincount(q_rows[hit], weights=prod, minlength=n)


def _weights(vals: pa.Array) -> np.ndarray:
    filled = pc.if_else(pc.equal(vals.fill_null(""), ""), "1", vals.fill_null("1"))
    return to_float(filled)


def overlap(query: pa.ListArray, title: pa.ListArray, method: str) -> np.ndarray:
    """Term overlap of query and title per row (overlap_feature methods, as upstream).

    ``query_common_ratio``: share of the query's terms found in the title;
    ``title_common_ratio``: share of the title's terms found in the query; ``is_equal``:
    1 when both hold the same terms in the same order, else 0.
    """
    n = len(query)
    oq, ot = au.list_offsets(query), au.list_offsets(title)
    lq, lt = np.diff(oq), np.diff(ot)
    q_rows, t_rows = au.parent_rows(oq), au.parent_rows(ot)
    qv, tv = au.list_values(query), au.list_values(title)
    if method == "query_common_ratio":
        hit = row_index_in(q_rows, qv, t_rows, tv) >= 0
        return np.bincount(q_rows[hit], minlength=n) / np.maximum(lq, 1)
    if method == "title_common_ratio":
        hit = row_index_in(t_rows, tv, q_rows, qv) >= 0
        return np.bincount(t_rows[hit], minlength=n) / np.maximum(lt, 1)
    if method == "is_equal":
        jq = pc.binary_join(query, _ROW_SEP).fill_null("")
        jt = pc.binary_join(title, _ROW_SEP).fill_null("")
        return pc.equal(jq, jt).to_numpy(zero_copy_only=False).astype(np.float64)
    raise ValueError(method)


#: overlap_feature methods implemented by :func:`overlap`.
OVERLAP_METHODS = ("query_common_ratio", "title_common_ratio", "is_equal")


def edit_distance(a: pa.Array, b: pa.Array, encoding: str = "latin") -> np.ndarray:
    """Levenshtein distance of two string columns per row (custom_feature EditDistance).

    ``encoding: utf-8`` compares characters, anything else bytes (upstream's ``latin``
    default). Null cells are empty strings. The dynamic programme runs over all rows at once
    (one numpy step per character pair of the longest strings).
    """
    codes_a, la = _codes(a, encoding)
    codes_b, lb = _codes(b, encoding)
    n = len(la)
    wa, wb = codes_a.shape[1], codes_b.shape[1]
    out = lb.astype(np.float64).copy()  # rows with an empty a
    prev = np.tile(np.arange(wb + 1, dtype=np.int64), (n, 1))
    for i in range(1, wa + 1):
        cur = np.empty_like(prev)
        cur[:, 0] = i
        ca = codes_a[:, i - 1 : i]
        sub = prev[:, :-1] + (ca != codes_b)
        dele = prev[:, 1:] + 1
        best = np.minimum(sub, dele)
        for j in range(1, wb + 1):
            cur[:, j] = np.minimum(best[:, j - 1], cur[:, j - 1] + 1)
        done = la == i
        if done.any():
            out[done] = cur[done, lb[done]]
        prev = cur
    return out


def _codes(arr: pa.Array, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """Padded code matrix ``[rows, max_len]`` and lengths of a string column."""
    arr = au.decode(au.combine(arr)).cast(pa.string()).fill_null("")
    if encoding.lower().replace("-", "") == "utf8":
        u = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=str)
        width = max(u.dtype.itemsize // 4, 1)
        codes = u.astype(f"<U{width}").view(np.uint32).reshape(len(u), width).astype(np.int64)
        lens = pc.utf8_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        return codes, lens
    lens = pc.binary_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    off = np.zeros(len(arr) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    width = int(lens.max(initial=0))
    data = np.frombuffer(arr.buffers()[2], np.uint8) if len(arr) and arr.buffers()[2] else None
    codes = np.full((len(arr), max(width, 1)), -1, np.int64)
    if width and data is not None:
        start = int(np.frombuffer(arr.buffers()[1], np.int32)[arr.offset])
        rows = au.parent_rows(off)
        pos = np.arange(int(off[-1])) - off[:-1][rows]
        codes[rows, pos] = data[start : start + int(off[-1])]
    return codes, lens


__all__ = [
    "COMBINERS",
    "OVERLAP_METHODS",
    "bool_mask",
    "edit_distance",
    "kv_dot",
    "lists_from",
    "map_entries",
    "overlap",
    "parse_kv",
    "product",
    "reduce_rows",
    "row_index_in",
    "string_lists",
    "to_float",
]
