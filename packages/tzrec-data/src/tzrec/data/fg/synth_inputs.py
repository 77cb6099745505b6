r"""Raw input columns of FG features for ``tzrec synth-data`` (maps, texts, masks, keys).

Each FG feature's input columns are made in the raw shapes its operator reads: id keys as
strings, lookup maps ``"k:v\\x1dk:v"`` holding the row's own keys (so lookups hit), nested
maps ``"pk^sk:v,sk:v"``, texts of space-separated words, ``true``/``false`` masks and
numbers for expression variables. Columns another feature already made are reused, so keys
and maps agree. Values rise with the row's latent group, keeping synth-data's planted signal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_WORDS = np.array([f"w{i}" for i in range(32)], dtype=object)


def _keys(out: dict[str, pa.Array], col: str, cluster: np.ndarray, rng: Any) -> pa.Array:
    """The string keys of ``col`` (made from the row's group when not there yet)."""
    if col not in out:
        ints = cluster * 3 + rng.integers(0, 3, len(cluster))
        out[col] = pa.array(ints.astype(np.int64)).cast(pa.string())
    arr = out[col]
    if pa.types.is_list(arr.type):
        arr = pc.list_element(arr.fill_null([]), 0) if len(arr) else arr
    return arr.cast(pa.string()).fill_null("0")


def _map_values(f: Any, cluster: np.ndarray, rng: Any) -> np.ndarray:
    """Looked-up values: ids for a sparse (bucketized-id) lookup, numbers otherwise."""
    cfg = f.config
    n = len(cluster)
    if len(getattr(cfg, "vocab_list", [])):
        vocab = np.asarray(list(cfg.vocab_list), dtype=object)
        return vocab[cluster % len(vocab)]
    if f.is_sparse and not len(getattr(cfg, "boundaries", [])):
        size = int(cfg.num_buckets or cfg.hash_bucket_size or 100)
        return ((cluster * 7 + rng.integers(0, 3, n)) % size).astype(str).astype(object)
    return np.round(cluster / 8.0 + rng.uniform(0, 0.2, n), 3).astype(str).astype(object)


def _join_entries(keys: pa.Array, vals: np.ndarray, sep: str, kv: str) -> pa.Array:
    return pc.binary_join_element_wise(keys, pa.array(vals, pa.string()), kv)


def fill(f: Any, out: dict[str, pa.Array], cluster: np.ndarray, rng: Any) -> None:
    """Add the missing input columns of FG feature ``f`` to ``out`` (``n`` rows)."""
    n = len(cluster)
    kind = f.fg_kind
    cols = [name for _, side, name in f.fg_inputs if side not in ("feature", "const")]
    if kind in ("combo_feature",):
        for c in cols:
            _keys(out, c, cluster, rng)
    elif kind == "lookup_feature":
        map_col = f.fg_inputs[0][2]
        key_side = f.fg_inputs[1][1]
        if key_side in ("feature", "const"):
            keys = pa.array(np.full(n, "0", dtype=object), pa.string())
        else:
            keys = _keys(out, f.fg_inputs[1][2], cluster, rng)
        if map_col not in out:
            other = pa.array((rng.integers(0, 30, n) + 100).astype(str), pa.string())
            vals = _map_values(f, cluster, rng)
            if getattr(f, "value_dim", 1) > 1 and not f.is_sparse:
                sep = f.fg_config.value_separator
                vals = np.array([sep.join([v] * f.value_dim) for v in vals[:1]] * n, object)
            own = _join_entries(keys, vals, "\x1d", ":")
            noise = _join_entries(other, _map_values(f, rng.integers(0, 8, n), rng), "\x1d", ":")
            out[map_col] = pc.binary_join_element_wise(own, noise, "\x1d")
    elif kind == "match_feature":
        map_col = f.fg_inputs[0][2]
        pk = _keys(out, f.fg_inputs[1][2], cluster, rng)
        sk = _keys(out, f.fg_inputs[2][2], cluster, rng)
        if map_col not in out:
            vals = _map_values(f, cluster, rng)
            inner = _join_entries(sk, vals, ",", ":")
            out[map_col] = pc.binary_join_element_wise(pk, inner, "^")
    elif kind == "expr_feature":
        for c in cols:
            if c not in out:
                out[c] = pa.array((cluster / 8.0 + rng.uniform(0, 0.3, n)).astype(np.float32))
    elif kind in ("overlap_feature", "custom_feature", "tokenize_feature"):
        sep = " " if kind != "overlap_feature" else f.multival_sep
        for i, c in enumerate(cols):
            if c not in out:
                w = _WORDS[(cluster[:, None] * 2 + rng.integers(0, 6, (n, 3)) + i) % len(_WORDS)]
                texts = pa.array([""] * n)
                for j in range(w.shape[1]):
                    part = pa.array(w[:, j], pa.string())
                    texts = part if j == 0 else pc.binary_join_element_wise(texts, part, sep)
                out[c] = texts
    elif kind == "kv_dot_product":
        for c in cols:
            if c not in out:
                keys = pa.array(_WORDS[(cluster * 2 + rng.integers(0, 4, n)) % 32], pa.string())
                vals = np.round(rng.uniform(0.1, 1.0, n), 3).astype(str).astype(object)
                out[c] = _join_entries(keys, vals, f.multival_sep, ":")
    elif kind == "bool_mask_feature":
        values = cols[0]
        if values not in out:
            a = (cluster * 3).astype(str).astype(object)
            b = (cluster * 3 + 1).astype(str).astype(object)
            out[values] = pc.binary_join_element_wise(
                pa.array(a, pa.string()), pa.array(b, pa.string()), f.multival_sep
            )
        if len(cols) > 1 and cols[1] not in out:
            first = np.where(rng.random(n) < 0.5, "true", "false").astype(object)
            out[cols[1]] = pc.binary_join_element_wise(
                pa.array(first, pa.string()), pa.array(["true"] * n, pa.string()), f.multival_sep
            )


def keyed_text(key: np.ndarray, salt: int) -> pa.Array:
    """A text per item id (three words, the same for the same id): item-side FG text inputs."""
    w = _WORDS[((key[:, None] * 2654435761 + salt + np.arange(3)) % len(_WORDS)).astype(np.int64)]
    texts = pa.array(w[:, 0], pa.string())
    for j in range(1, w.shape[1]):
        texts = pc.binary_join_element_wise(texts, pa.array(w[:, j], pa.string()), " ")
    return texts


__all__ = ["fill", "keyed_text"]
