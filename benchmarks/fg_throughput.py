"""Feature-generation throughput: rows/s of FG_DAG on raw inputs vs the FG_NONE fast path.

One file holds both the raw FG inputs (string ids, ``k:v`` maps, nested maps, a 50-long
string sequence) and the encoded columns FG_NONE reads (int ids, an int list sequence). Each
run reads its columns from the file and parses them into batches (DataParser), in one
process, pinned to one arrow/torch thread; the figure is CPU seconds, best of ``--repeats``.

Usage: uv run python benchmarks/fg_throughput.py [--rows 1000000] [--batch-size 8192]
Data is generated into a temporary directory and removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from google.protobuf import text_format

from tzrec.data import create_features
from tzrec.data.parser import DataParser
from tzrec.protos import data_pb2, feature_pb2

SEQ_LEN = 50
N_COMBO, N_LOOKUP, N_MATCH = 4, 3, 3


def _ids(rng: np.random.Generator, n: int, hi: int) -> pa.Array:
    return pa.array(rng.integers(0, hi, n)).cast(pa.string())


def make_data(path: Path, rows: int, seed: int = 0) -> None:
    """Raw FG inputs and FG_NONE's encoded columns of ``rows`` rows."""
    rng = np.random.default_rng(seed)
    writer = None
    chunk = 100_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        cols: dict[str, pa.Array] = {}
        for i in range(4):
            cols[f"u{i}"] = _ids(rng, n, 1000)
            cols[f"i{i}"] = _ids(rng, n, 1000)
        for i in range(N_LOOKUP):
            keys = [_ids(rng, n, 1000) for _ in range(3)]
            vals = [pa.array(np.round(rng.random(n), 3)).cast(pa.string()) for _ in range(3)]
            kv = [pc.binary_join_element_wise(k, v, ":") for k, v in zip(keys, vals, strict=True)]
            cols[f"map_{i}"] = pc.binary_join_element_wise(*kv, "\x1d")
        for i in range(N_MATCH):
            inner = pc.binary_join_element_wise(cols[f"i{(i + 1) % 4}"], pa.array(["0.5"] * n), ":")
            cols[f"nmap_{i}"] = pc.binary_join_element_wise(cols[f"i{i}"], inner, "^")
        lengths = np.full(n, SEQ_LEN)
        off = np.arange(0, n * SEQ_LEN + 1, SEQ_LEN, dtype=np.int32)
        seq_ids = rng.integers(0, 100_000, n * SEQ_LEN)
        lists = pa.ListArray.from_arrays(pa.array(off), pa.array(seq_ids).cast(pa.string()))
        cols["click_seq"] = pc.binary_join(lists, ";")
        # what FG_NONE reads: encoded ids named by the features
        for name in fg_feature_names():
            cols[name] = pa.array(rng.integers(0, 1000, n))
        cols["seq_enc"] = pa.ListArray.from_arrays(pa.array(off), pa.array(seq_ids))
        del lengths
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=50_000)
    writer.close()


def fg_feature_names() -> list[str]:
    """The 10 combo/lookup/match features."""
    return (
        [f"combo_{i}" for i in range(N_COMBO)]
        + [f"lookup_{i}" for i in range(N_LOOKUP)]
        + [f"match_{i}" for i in range(N_MATCH)]
    )


def fg_configs(mode: str) -> tuple[list, data_pb2.DataConfig]:
    """FG_DAG features over the raw columns, or the same features read encoded (FG_NONE)."""
    texts = [
        f'combo_feature {{feature_name: "combo_{i}" expression: ["user:u{i}", "item:i{i}"] '
        "hash_bucket_size: 100000 embedding_dim: 8}"
        for i in range(N_COMBO)
    ]
    texts += [
        f'lookup_feature {{feature_name: "lookup_{i}" map: "user:map_{i}" key: "item:i{i}" '
        "boundaries: [0.25, 0.5, 0.75] embedding_dim: 8}"
        for i in range(N_LOOKUP)
    ]
    texts += [
        f'match_feature {{feature_name: "match_{i}" nested_map: "user:nmap_{i}" '
        f'pkey: "item:i{i}" skey: "item:i{(i + 1) % 4}" boundaries: [0.25, 0.75] embedding_dim: 8}}'
        for i in range(N_MATCH)
    ]
    if mode == "FG_DAG":
        texts.append(
            'sequence_id_feature {feature_name: "seq_enc" expression: "user:click_seq" '
            f"sequence_length: {SEQ_LEN} hash_bucket_size: 100000 embedding_dim: 8}}"
        )
    else:
        # the same tables, their ids already encoded (ints, taken modulo the table size)
        texts = [
            t.replace("boundaries: [0.25, 0.5, 0.75]", "hash_bucket_size: 4").replace(
                "boundaries: [0.25, 0.75]", "hash_bucket_size: 3"
            )
            for t in texts
        ]
        texts.append(
            'sequence_id_feature {feature_name: "seq_enc" '
            f"sequence_length: {SEQ_LEN} hash_bucket_size: 100000 embedding_dim: 8}}"
        )
    dc = data_pb2.DataConfig(fg_mode=getattr(data_pb2, mode))
    return [text_format.Parse(t, feature_pb2.FeatureConfig()) for t in texts], dc


def run(path: Path, mode: str, batch_size: int) -> tuple[float, int]:
    """CPU seconds of reading + parsing the whole file in ``mode``, and the rows read."""
    cfgs, dc = fg_configs(mode)
    feats = create_features(cfgs, dc)
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    for f in feats:
        f.resolve_input(names)
    cols: list[str] = []
    for f in feats:
        for c in getattr(f, "input_columns", [f.input_name]):
            if c not in cols:
                cols.append(c)
    parser = DataParser(feats)
    rows = 0
    t0 = time.process_time()
    for rb in pf.iter_batches(batch_size=batch_size, columns=cols, use_threads=False):
        parser.parse({c: rb.column(c) for c in cols}, rb.num_rows)
        rows += rb.num_rows
    return time.process_time() - t0, rows


def main() -> None:
    """Print rows/s of both paths and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fg.parquet"
        make_data(path, args.rows)
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for mode in ("FG_NONE", "FG_DAG"):
                secs, rows = run(path, mode, args.batch_size)
                best[mode] = min(best.get(mode, float("inf")), secs)
    none_rps = args.rows / best["FG_NONE"]
    fg_rps = args.rows / best["FG_DAG"]
    print(f"rows: {args.rows}, batch {args.batch_size}, 1 thread, best of {args.repeats} (CPU s)")
    print(f"FG_NONE (encoded ids):                 {none_rps:12,.0f} rows/s")
    print(f"FG_DAG  (10 combo/lookup/match + seq): {fg_rps:12,.0f} rows/s")
    print(f"ratio FG/FG_NONE: {fg_rps / none_rps:.3f} (target >= 0.5)")


if __name__ == "__main__":
    main()
