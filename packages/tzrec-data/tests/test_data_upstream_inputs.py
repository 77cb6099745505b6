"""Inputs as upstream TorchEasyRec reads them: real timestamps, typed and multi-value cells."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from torchrec import JaggedTensor

from tzrec.data import ParquetDataset, create_features

# KuaiRand-shaped HSTU features (upstream's dlrm_hstu kuairand config): a history group with
# an action timestamp, a candidate group with the request time, and a plain large raw value.
HSTU_FEATURES = (
    'sequence_feature {sequence_name: "uih_seq" sequence_length: 20 sequence_delim: "|" '
    'features {id_feature {feature_name: "video_id" expression: "item:video_id" '
    'embedding_name: "video_id_emb" embedding_dim: 8 num_buckets: 1000}} '
    'features {raw_feature {feature_name: "action_timestamp" '
    'expression: "user:action_timestamp"}}}',
    'sequence_feature {sequence_name: "cand_seq" sequence_length: 20 sequence_delim: "|" '
    'features {id_feature {feature_name: "video_id" expression: "item:video_id" '
    'embedding_name: "video_id_emb" embedding_dim: 8 num_buckets: 1000}} '
    'features {raw_feature {feature_name: "query_time" expression: "context:query_time"}}}',
    'raw_feature {feature_name: "request_time" expression: "context:request_time"}',
)

T0_SECONDS = 1_708_176_845
T0_MILLIS = 1_708_176_845_123


def _history(t0, step, ascending):
    """Three rows of histories one ``step`` apart (oldest first when ascending)."""
    rows = [[t0 + i * step for i in range(n)] for n in (3, 1, 2)]
    return rows if ascending else [r[::-1] for r in rows]


@pytest.mark.parametrize("t0, step", [(T0_SECONDS, 1), (T0_MILLIS, 1000), (T0_MILLIS, 1)])
@pytest.mark.parametrize("ascending", [True, False])
@pytest.mark.parametrize("as_text", [False, True])
def test_timestamps_stay_exact_in_int64(
    tmp_path, feature_configs, data_config, write_parquet, t0, step, ascending, as_text
):
    hist = _history(t0, step, ascending)
    query = [max(r) + step for r in hist]
    if as_text:  # upstream's string cells: items joined by the group's "|"
        ts_col = pa.array(["|".join(map(str, r)) for r in hist])
        vid_col = pa.array(["|".join(str(i) for i in range(len(r))) for r in hist])
        q_col = pa.array([str(q) for q in query])
    else:
        ts_col = pa.array(hist, pa.list_(pa.int64()))
        vid_col = pa.array([list(range(len(r))) for r in hist], pa.list_(pa.int64()))
        q_col = pa.array([[q] for q in query], pa.list_(pa.int64()))
    path = write_parquet(
        "kuairand.parquet",
        {
            "uih_seq__video_id": vid_col,
            "uih_seq__action_timestamp": ts_col,
            "cand_seq__video_id": pa.array([[7]] * 3, pa.list_(pa.int64())),
            "cand_seq__query_time": q_col,
            "request_time": pa.array(query, pa.int64()),
        },
    )
    dc = data_config("dataset_type: ParquetDataset batch_size: 3")
    fs = create_features(feature_configs(*HSTU_FEATURES), dc)
    (b,) = list(ParquetDataset(dc, fs, path, mode="eval"))

    ts = b.int64_features["uih_seq__action_timestamp"]
    assert isinstance(ts, JaggedTensor) and ts.values().dtype == torch.int64
    assert ts.lengths().tolist() == [3, 1, 2]
    assert ts.values().reshape(-1).tolist() == [v for r in hist for v in r]
    # one step (1 s, or 1 ms) between neighbours, exactly, in either order
    first = ts.values().reshape(-1)[:3]
    assert (first[1:] - first[:-1]).abs().tolist() == [step, step]
    qt = b.int64_features["cand_seq__query_time"]
    assert qt.values().reshape(-1).tolist() == query
    # the time delta HSTU buckets: query - newest history item, exact
    newest = [max(r) for r in hist]
    assert [q - n for q, n in zip(qt.values().reshape(-1).tolist(), newest, strict=True)] == [
        step
    ] * 3
    # a scalar raw feature (DEEP query_time in hstu_match): a [rows, 1] int64 tensor
    rt = b.int64_features["request_time"]
    assert rt.dtype == torch.int64 and rt.reshape(-1).tolist() == query
    # the float view is upstream's unsafe float32 cast (rounded, no error)
    dense = b.sequence_dense_features["uih_seq__action_timestamp"].values().reshape(-1)
    assert dense.dtype == torch.float32
    assert dense.tolist() == np.asarray([v for r in hist for v in r], np.float32).tolist()
    kt = b.dense_features["__BASE__"]
    assert kt["request_time"].reshape(-1).tolist() == np.float32(query).tolist()


def test_large_plain_raw_values_cast_like_upstream_without_error(feature_configs):
    (f,) = create_features(feature_configs('raw_feature {feature_name: "pv"}'))
    # int64 beyond float32's exact range (the old safe cast raised ArrowInvalid here)
    big = [T0_SECONDS, T0_MILLIS, -(2**40) - 1]
    d = f.parse({"pv": pa.array(big, pa.int64())})
    assert d.values.dtype == np.float32
    assert d.values.reshape(-1).tolist() == np.asarray(big, np.float32).tolist()
    assert d.int64_values.reshape(-1).tolist() == big
    # in a list column and in a sequence
    d = f.parse({"pv": pa.array([[T0_SECONDS], [T0_MILLIS]], pa.list_(pa.int64()))})
    assert d.values.reshape(-1).tolist() == np.asarray([T0_SECONDS, T0_MILLIS], np.float32).tolist()
    (s,) = create_features(
        feature_configs('sequence_raw_feature {feature_name: "ts" sequence_delim: ";"}')
    )
    d = s.parse({"ts": pa.array([[T0_MILLIS, T0_MILLIS + 1]], pa.list_(pa.int64()))})
    assert d.int64_values.reshape(-1).tolist() == [T0_MILLIS, T0_MILLIS + 1]
    assert d.values.reshape(-1).tolist() == [np.float32(T0_MILLIS)] * 2


def test_int64_view_is_absent_for_fractional_values_and_bucketized_features(feature_configs):
    (f,) = create_features(feature_configs('raw_feature {feature_name: "x"}'))
    assert f.parse({"x": pa.array([0.5, 2.0])}).int64_values is None
    assert f.parse({"x": pa.array(["0.5", "2"])}).int64_values is None
    assert f.parse({"x": pa.array(["3", "2"])}).int64_values.reshape(-1).tolist() == [3, 2]
    (bk,) = create_features(
        feature_configs('raw_feature {feature_name: "x" boundaries: [1e9, 2e9] embedding_dim: 4}')
    )
    d = bk.parse({"x": pa.array([T0_SECONDS, 5], pa.int64())})
    assert d.values.tolist() == [1, 0]  # bucketized ids; no int64 view for ids
    # a null takes the default, in both views
    (dflt,) = create_features(feature_configs('raw_feature {feature_name: "x" default_value: "7"}'))
    d = dflt.parse({"x": pa.array([T0_SECONDS, None], pa.int64())})
    assert d.int64_values.reshape(-1).tolist() == [T0_SECONDS, 7]
    assert d.values.reshape(-1).tolist() == [np.float32(T0_SECONDS), 7.0]


def test_int64_features_survive_worker_pickling(feature_configs, data_config, write_parquet):
    path = write_parquet(
        "t.parquet",
        {"pv": pa.array([T0_MILLIS + i for i in range(8)], pa.int64())},
    )
    dc = data_config("dataset_type: ParquetDataset batch_size: 4 num_workers: 1")
    fs = create_features(feature_configs('raw_feature {feature_name: "pv"}'), dc)
    ds = ParquetDataset(dc, fs, path, mode="eval")
    got = [v for b in ds.make_dataloader() for v in b.int64_features["pv"].reshape(-1).tolist()]
    assert got == [T0_MILLIS + i for i in range(8)]
