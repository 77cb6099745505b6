"""Real timestamps (unix seconds 1.7e9, milliseconds 1.7e12) reach HSTU's time encoding exactly.

float32 keeps 24 bits, so at 1.7e9 it rounds to 128 s (at 1.7e12 to 131072 ms). The models
read timestamps and ``query_time`` from ``Batch.int64_features``; the time buckets the
positional encoder uses must equal a float64 reference computed from the raw integers.
"""

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core.build import build_model
from tzrec.core.config import load_pipeline_config
from tzrec.data import create_features
from tzrec.data.readers.parquet import ParquetDataset
from tzrec.kernels import timestamp_position_buckets

CONFIG = Path(__file__).resolve().parents[3] / "docs/examples/hstu_match_kuairand.config"
SECONDS, MILLIS = 1_700_000_000, 1_700_000_000_000


def _shift_times(src: str, dst: Path, base: int, scale: int, descending: bool) -> None:
    """Rewrite the example data with timestamps ``base + scale * t`` (+ reversed histories)."""
    table = pq.read_table(src)
    cols = {name: table.column(name).to_pylist() for name in table.column_names}

    def items(cell):
        return cell.split("|") if cell else []

    ts = [[str(base + scale * int(v)) for v in items(c)] for c in cols["uih_seq__action_timestamp"]]
    cols["uih_seq__action_timestamp"] = ["|".join(v) for v in ts]
    cols["request_time"] = [base + scale * int(v) for v in cols["request_time"]]
    if descending:
        for name in cols:
            if name.startswith("uih_seq__"):
                cols[name] = ["|".join(reversed(items(c))) for c in cols[name]]
    data = {k: pa.array(v, type=pa.int64()) if k == "request_time" else v for k, v in cols.items()}
    pq.write_table(pa.table(data), dst)


def _time_bucket(dt: int, buckets: int, increments: float) -> int:
    """Float64 reference: floor(sqrt(max(dt, 1) / increments)), clamped."""
    return min(max(int(math.floor(math.sqrt(max(dt, 1)) / math.sqrt(increments))), 0), buckets - 1)


@pytest.mark.parametrize(
    ("base", "scale", "descending"),
    [
        (SECONDS, 1, False),
        (SECONDS, 1, True),
        (MILLIS, 1000, False),
        (MILLIS, 1000, True),
    ],
)
def test_time_buckets_equal_a_float64_reference(small_data, tmp_path, base, scale, descending):
    path = tmp_path / "train.parquet"
    _shift_times(small_data["train"], path, base, scale, descending)
    config = load_pipeline_config(str(CONFIG))
    config.data_config.batch_size = 16
    config.data_config.negative_sampler.input_path = small_data["items"]
    config.data_config.negative_sampler.num_sample = 16 * 3
    config.model_config.hstu_match.sequence_timestamp_is_ascending = not descending
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, str(path), mode="train")
    batch = next(iter(ds))
    torch.manual_seed(0)
    model = build_model(config, ds.features).eval()
    encoder = model.user_tower.encoder
    seen = {}
    original = encoder.positional_encoder.forward

    def spy(values, offsets, timestamps, query_time=None, num_targets=None):
        seen.update(offsets=offsets, timestamps=timestamps, query_time=query_time)
        return original(values, offsets, timestamps, query_time, num_targets=num_targets)

    encoder.positional_encoder.forward = spy
    model.predict(batch)

    # what the model used: exact integers, contextual tokens first (timestamp 0)
    exact = batch.int64_features["uih_seq__action_timestamp"]
    query = batch.int64_features["request_time"].reshape(-1)
    assert torch.equal(seen["query_time"], query)
    assert int(query.min()) >= base
    c = encoder.preprocessor.num_contextual
    offsets, lengths = seen["offsets"], exact.lengths()
    expected_ts, expected_buckets = [], []
    pe = config.model_config.hstu_match.user_tower.hstu.positional_encoder
    start = 0
    for row, n in enumerate(lengths.tolist()):
        history = exact.values().reshape(-1)[start : start + n].tolist()
        start += n
        if descending:
            history = history[::-1]
        row_ts = [0] * c + history
        expected_ts += row_ts
        q = int(query[row])
        expected_buckets += [
            _time_bucket(q - t, pe.num_time_buckets + 1, pe.time_bucket_increments) for t in row_ts
        ]
    assert seen["timestamps"].dtype == torch.int64
    assert seen["timestamps"].tolist() == expected_ts
    _, got = timestamp_position_buckets(
        offsets,
        seen["timestamps"],
        pe.num_position_buckets,
        pe.num_time_buckets + 1,
        seen["query_time"],
        "sqrt",
        encoder.positional_encoder.time_bucket_divisor,
    )
    expected = expected_buckets  # the encoder's table has num_time_buckets + 1 rows
    assert got.tolist() == expected
    # the same buckets from float32-rounded timestamps differ: the exact path matters
    rounded = seen["timestamps"].to(torch.float32).to(torch.int64)
    _, lossy = timestamp_position_buckets(
        offsets,
        rounded,
        pe.num_position_buckets,
        pe.num_time_buckets + 1,
        seen["query_time"].to(torch.float32).to(torch.int64),
        "sqrt",
        encoder.positional_encoder.time_bucket_divisor,
    )
    assert lossy.tolist() != expected


def test_one_second_apart_at_1_7e9_stays_one_second():
    ts = torch.tensor([SECONDS, SECONDS + 1], dtype=torch.int64)
    offsets = torch.tensor([0, 2])
    _, buckets = timestamp_position_buckets(
        offsets, ts, 4, 100, torch.tensor([SECONDS + 2]), "sqrt", 1.0
    )
    assert buckets.tolist() == [1, 1]  # floor(sqrt(2)), floor(sqrt(1))
    assert float(torch.tensor(SECONDS + 1, dtype=torch.float32)) == SECONDS  # float32 loses it
