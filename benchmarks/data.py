"""tzrec-data throughput: reader rows/s vs a bare pyarrow scan, sampler negatives/s.

Usage: uv run python benchmarks/data.py [--rows N] [--workers W] [--batch-size B]
Data is generated into a temporary directory and removed afterwards.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf import text_format

from tzrec.data import ParquetDataset, create_dataloader, create_features
from tzrec.data.samplers import NegativeSampler
from tzrec.protos import data_pb2, feature_pb2, sampler_pb2

N_ID = 10
SEQ_LEN = 200


def make_data(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    writer = None
    chunk = 100_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        cols = {}
        for i in range(N_ID):
            cols[f"id_{i}"] = pa.array(rng.integers(0, 100_000, n))
        cols["raw_0"] = pa.array(rng.random(n, dtype=np.float32))
        cols["raw_1"] = pa.array(rng.random(n, dtype=np.float32))
        lengths = rng.integers(0, SEQ_LEN + 1, n)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = pa.array(rng.integers(0, 100_000, int(offsets[-1])))
        cols["seq__item"] = pa.ListArray.from_arrays(pa.array(offsets), values)
        cols["label"] = pa.array(rng.integers(0, 2, n))
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=50_000)
    writer.close()


def feature_configs() -> list:
    texts = [
        f'id_feature {{feature_name: "id_{i}" embedding_dim: 16 num_buckets: 100000}}'
        for i in range(N_ID)
    ]
    texts += ['raw_feature {feature_name: "raw_0"}', 'raw_feature {feature_name: "raw_1"}']
    texts.append(
        f'sequence_feature {{sequence_name: "seq" sequence_length: {SEQ_LEN} '
        'features {id_feature {feature_name: "item" embedding_dim: 16 num_buckets: 100000}}}'
    )
    return [text_format.Parse(t, feature_pb2.FeatureConfig()) for t in texts]


def bare_scan(path: Path, batch_size: int, columns: list[str], memory_map: bool) -> float:
    """Rows/s of decoding ``columns`` with pyarrow alone (its own threads, no parsing)."""
    t0 = time.perf_counter()
    rows = 0
    pf = pq.ParquetFile(path, memory_map=memory_map)
    for rb in pf.iter_batches(batch_size=batch_size, columns=columns):
        rows += rb.num_rows
    return rows / (time.perf_counter() - t0)


def make_dataset(path: Path, batch_size: int, workers: int) -> ParquetDataset:
    dc = text_format.Parse(
        f'dataset_type: ParquetDataset batch_size: {batch_size} label_fields: "label" '
        f"num_workers: {workers}",
        data_pb2.DataConfig(),
    )
    return ParquetDataset(dc, create_features(feature_configs(), dc), str(path), mode="eval")


def reader(ds: ParquetDataset) -> tuple[float, int]:
    loader = create_dataloader(ds, pin_memory=False)
    t0 = time.perf_counter()
    rows = 0
    for b in loader:
        rows += b.batch_size
    return rows / (time.perf_counter() - t0), rows


def sampler_bench(tmp: Path, items: int, num_sample: int, seconds: float) -> float:
    path = tmp / "items.parquet"
    rng = np.random.default_rng(1)
    ids = np.arange(items)
    pq.write_table(
        pa.table(
            {
                "id": pa.array(ids),
                "weight": pa.array(rng.random(items) + 0.1),
                "item_id": pa.array(ids),
            }
        ),
        path,
    )
    cfg = text_format.Parse(
        f'input_path: "{path}" num_sample: {num_sample} attr_fields: "item_id" '
        'item_id_field: "item_id"',
        sampler_pb2.NegativeSampler(),
    )
    s = NegativeSampler(cfg, [pa.field("item_id", pa.int64())], 1024)
    s.init()
    pos = pa.array(rng.integers(0, items, 1024))
    total = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        total += len(s.get({"item_id": pos})["item_id"])
    return total / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--num-sample", type=int, default=4096)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = tmp / "bench.parquet"
        t0 = time.perf_counter()
        make_data(path, args.rows)
        print(
            f"generated {args.rows} rows ({path.stat().st_size / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - t0:.1f}s"
        )
        ds = make_dataset(path, args.batch_size, args.workers)
        # the same columns the dataset reads (features, label and the reader's own)
        columns = [c for c in ds._needed_columns() if c in pq.read_schema(path).names]
        # the reader memory-maps files; the bare scan is shown both ways, the ratio is
        # taken against the faster one
        scan_plain = bare_scan(path, args.batch_size, columns, memory_map=False)
        scan_mmap = bare_scan(path, args.batch_size, columns, memory_map=True)
        scan = max(scan_plain, scan_mmap)
        rate, rows = reader(ds)
        assert rows == args.rows, (rows, args.rows)
        print(f"bare pyarrow scan : {scan_plain:12,.0f} rows/s  ({len(columns)} columns)")
        print(f"  memory-mapped   : {scan_mmap:12,.0f} rows/s")
        print(
            f"ParquetDataset    : {rate:12,.0f} rows/s  ({args.workers} workers, "
            f"batch {args.batch_size})  ratio {rate / scan:.2f}x (vs the faster scan)"
        )
        neg = sampler_bench(tmp, args.items, args.num_sample, 3.0)
        print(
            f"NegativeSampler   : {neg:12,.0f} negatives/s  ({args.items} items, "
            f"{args.num_sample} per batch)"
        )


if __name__ == "__main__":
    main()
