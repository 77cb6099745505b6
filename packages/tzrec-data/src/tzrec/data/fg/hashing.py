"""String hashing of feature generation, bit-identical to pyfg's default bucketizer.

pyfg buckets a string id ``s`` (an integer id is hashed as its decimal text) as
``std::hash<std::string>{}(s) % hash_bucket_size``. With libstdc++ on 64-bit Linux that hash
is MurmurHash64A with seed ``0xc70f6907``: ``h = seed ^ (len * m)``; every little-endian
8-byte block ``k`` does ``k *= m; k ^= k >> 47; k *= m; h ^= k; h *= m``; the 1..7 tail bytes
``t`` do ``h ^= t; h *= m``; finally ``h ^= h >> 47; h *= m; h ^= h >> 47``, where
``m = 0xc6a4a7935bd1e995``. It is computed here over the arrow string buffer with numpy,
one pass per 8-byte block (no Python loop over values), and only for distinct values.

``USE_FARM_HASH_TO_BUCKETIZE=true`` (upstream: TensorFlow's ``Fingerprint64``) is refused,
see :func:`check_hash_env`.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tzrec.core.errors import ConfigError

_M = np.uint64(0xC6A4A7935BD1E995)
_SEED = np.uint64(0xC70F6907)
_R = np.uint64(47)


def check_hash_env() -> None:
    """Refuse ``USE_FARM_HASH_TO_BUCKETIZE=true`` (farmhash bucketing is not implemented)."""
    if os.environ.get("USE_FARM_HASH_TO_BUCKETIZE", "false").lower() == "true":
        raise ConfigError(
            "USE_FARM_HASH_TO_BUCKETIZE=true: farmhash (TensorFlow Fingerprint64) bucketing "
            "is not supported by tzrec's feature generation; unset it to use pyfg's default "
            "std::hash buckets"
        )


def _rows_where(mask: np.ndarray) -> slice | np.ndarray:
    """Indices where ``mask`` holds; a plain slice when it holds everywhere (no gather)."""
    return slice(None) if mask.all() else np.nonzero(mask)[0]


def _murmur64a(data: np.ndarray, off: np.ndarray) -> np.ndarray:
    """MurmurHash64A (seed 0xc70f6907) of the byte strings ``data[off[i]:off[i+1]]``."""
    n = len(off) - 1
    lengths = np.diff(off).astype(np.uint64)
    starts = off[:-1].astype(np.int64)
    padded = np.concatenate([data, np.zeros(8, np.uint8)])
    # the little-endian 8-byte word starting at every byte (an unaligned strided view)
    words = np.ndarray((len(data) + 1,), dtype="<u8", buffer=padded, strides=(1,))
    with np.errstate(over="ignore"):
        h = _SEED ^ (lengths * _M)
        blocks = (lengths >> np.uint64(3)).astype(np.int64)
        for b in range(int(blocks.max(initial=0))):
            rows = _rows_where(blocks > b)
            word = words[starts[rows] + 8 * b]
            word *= _M
            word ^= word >> _R
            word *= _M
            h[rows] = (h[rows] ^ word) * _M
        tail = lengths & np.uint64(7)
        rows = _rows_where(tail != 0)
        word = words[starts[rows] + 8 * blocks[rows]]
        keep = (np.uint64(1) << (tail[rows] << np.uint64(3))) - np.uint64(1)
        h[rows] = (h[rows] ^ (word & keep)) * _M
        h ^= h >> _R
        h *= _M
        h ^= h >> _R
    return h if n else np.zeros(0, np.uint64)


def std_hash(values: pa.Array) -> np.ndarray:
    """``std::hash<std::string>`` (libstdc++, 64-bit) of each value's text, as uint64.

    Integers are hashed as their decimal text (``1`` -> ``"1"``), as pyfg does.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if len(values) == 0:
        return np.zeros(0, np.uint64)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.string())
    if len(values) > 4 * _DICT_MIN and _distinct_share(values) > 0.25:
        return _hash_all(values)
    enc = pc.dictionary_encode(values)
    return _hash_all(enc.dictionary)[enc.indices.fill_null(0).to_numpy(zero_copy_only=False)]


#: Values sampled to decide whether to hash distinct values only (long arrays).
_DICT_MIN = 4096


def _distinct_share(values: pa.Array) -> float:
    """Share of distinct values in a sample (dictionary encoding pays off below ~1/4)."""
    step = max(len(values) // _DICT_MIN, 1)
    sample = values.take(pa.array(np.arange(0, len(values), step)))
    return len(pc.unique(sample)) / max(len(sample), 1)


def _hash_all(values: pa.Array) -> np.ndarray:
    """MurmurHash64A of every value of a string array (no deduplication)."""
    if pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    bufs = values.buffers()
    off = np.frombuffer(bufs[1], dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    off = off.astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return _murmur64a(data[off[0] : off[-1]], off - off[0])


def hash_bucket(values: pa.Array, bucket_size: int) -> np.ndarray:
    """Bucket of each value as pyfg computes it: ``std_hash(text) % bucket_size`` as int64."""
    return (std_hash(values) % np.uint64(bucket_size)).astype(np.int64)


__all__ = ["check_hash_env", "hash_bucket", "std_hash"]
