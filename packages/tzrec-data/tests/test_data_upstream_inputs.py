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


# ---- typed and multi-value inputs (issue: accept what upstream accepts) -----------------

ID_CFG = 'id_feature {feature_name: "tag" embedding_dim: 4 num_buckets: 100}'


@pytest.mark.parametrize(
    "column",
    [
        pa.array([1, 2, 3], pa.int64()),
        pa.array([1, 2, 3], pa.int32()),
        pa.array(["1", "2", "3"]),
        pa.array(["1", "2", "3"], pa.large_string()),
        pa.array([[1], [2], [3]], pa.list_(pa.int64())),
        pa.array([["1"], ["2"], ["3"]], pa.list_(pa.string())),
        pa.array(["1", "2", "3"]).dictionary_encode(),
        pa.array([[(1, 0.5)], [(2, 1.0)], [(3, 2.0)]], pa.map_(pa.int64(), pa.float32())),
    ],
    ids=["int64", "int32", "string", "large_string", "list<int>", "list<string>", "dict", "map"],
)
def test_fg_none_id_columns_of_every_upstream_type_give_the_same_ids(feature_configs, column):
    (f,) = create_features(feature_configs(ID_CFG))
    d = f.parse({"tag": column})
    assert d.values.tolist() == [1, 2, 3] and d.lengths.tolist() == [1, 1, 1]


def test_fg_none_multi_value_strings_split_by_fg_encoded_multival_sep(feature_configs, data_config):
    default = create_features(feature_configs(ID_CFG), data_config())[0]
    assert default.parse({"tag": pa.array(["1\x032", "", "3"])}).lengths.tolist() == [2, 0, 1]
    dc = data_config('fg_encoded_multival_sep: ","')
    (f,) = create_features(feature_configs(ID_CFG), dc)
    d = f.parse({"tag": pa.array(["1,2", "", "3,4,5"])})
    assert d.values.tolist() == [1, 2, 3, 4, 5] and d.lengths.tolist() == [2, 0, 3]
    # multi-value list<string> cells are lists already, like upstream
    d = f.parse({"tag": pa.array([["1", "2"], [], ["3"]], pa.list_(pa.string()))})
    assert d.values.tolist() == [1, 2, 3] and d.lengths.tolist() == [2, 0, 1]


def test_map_ids_carry_their_weights_when_weighted(feature_configs):
    (f,) = create_features(
        feature_configs(
            'id_feature {feature_name: "tag" embedding_dim: 4 num_buckets: 100 weighted: true}'
        )
    )
    m = pa.array([[(1, 0.5), (4, 2.0)], None, [(3, 1.5)]], pa.map_(pa.int64(), pa.float64()))
    d = f.parse({"tag": m.slice(0)})
    assert d.values.tolist() == [1, 4, 3] and d.lengths.tolist() == [2, 0, 1]
    assert d.weights.tolist() == [0.5, 2.0, 1.5]
    d = f.parse({"tag": m.slice(2)})  # a sliced map column keeps its own cells
    assert d.values.tolist() == [3] and d.weights.tolist() == [1.5]


@pytest.mark.parametrize("mode", ["FG_DAG", "FG_NORMAL"])
def test_fg_dag_raw_inputs_split_by_the_feature_separator(
    feature_configs, data_config, write_parquet, mode
):
    # upstream FG_DAG/FG_NORMAL inputs are raw fg inputs: multi-values joined by each
    # feature's `separator` (default \x1d), e.g. '0\x1d2'
    path = write_parquet(
        "raw.parquet",
        {
            "tags": pa.array(["0\x1d2", "", "5"]),
            "scores": pa.array(["0.5|1.5", "2|3", "4|5"]),
            "click": pa.array([1, 0, 1]),
        },
    )
    dc = data_config(
        f'dataset_type: ParquetDataset batch_size: 3 fg_mode: {mode} label_fields: "click"'
    )
    fs = create_features(
        feature_configs(
            'id_feature {feature_name: "tag" expression: "item:tags" embedding_dim: 4 '
            "num_buckets: 10}",
            'raw_feature {feature_name: "score" expression: "item:scores" value_dim: 2 '
            'separator: "|"}',
        ),
        dc,
    )
    (b,) = list(ParquetDataset(dc, fs, path, mode="eval"))
    tag = b.sparse_features["__BASE__"]["tag"]
    assert tag.values().tolist() == [0, 2, 5] and tag.lengths().tolist() == [2, 0, 1]
    assert b.dense_features["__BASE__"]["score"].tolist() == [[0.5, 1.5], [2, 3], [4, 5]]
    # FG_NONE keeps splitting on fg_encoded_multival_sep: '0\x1d2' is not an integer there
    none = create_features(
        feature_configs(
            'id_feature {feature_name: "tag" expression: "item:tags" embedding_dim: 4 '
            "num_buckets: 10}"
        ),
        data_config("batch_size: 3"),
    )
    assert none[0].multival_sep == "\x03"


@pytest.mark.parametrize(
    "column, values, dtype",
    [
        (pa.array([[1, 0], [], [2]], pa.list_(pa.int64())), [1, 0, 2], torch.int64),
        (pa.array([[0.5, 1.0], [], [2.0]], pa.list_(pa.float32())), [0.5, 1.0, 2.0], None),
        (pa.array([[0.5, 1.0], [], [2.0]], pa.list_(pa.float64())), [0.5, 1.0, 2.0], None),
    ],
    ids=["list<int>", "list<float>", "list<double>"],
)
def test_list_labels_under_any_name_are_jagged_like_upstream(
    feature_configs, data_config, write_parquet, column, values, dtype
):
    path = write_parquet(
        "l.parquet",
        {"tag": pa.array([1, 2, 3]), "item_action_weight": column, "click": pa.array([1, 0, 1])},
    )
    dc = data_config(
        'dataset_type: ParquetDataset batch_size: 3 label_fields: ["click", "item_action_weight"]'
    )
    fs = create_features(feature_configs(ID_CFG), dc)
    (b,) = list(ParquetDataset(dc, fs, path, mode="eval"))
    jt = b.sequence_dense_features["item_action_weight"]
    assert jt.lengths().tolist() == [2, 0, 1] and jt.values().tolist() == values
    assert jt.values().dtype == (dtype or torch.float32)
    assert "item_action_weight" not in b.labels
    # scalar labels: int stays int64 (as upstream), float is float32
    assert b.labels["click"].dtype == torch.int64


def test_float64_scalar_label_is_float32_and_unsupported_types_are_one_line(
    feature_configs, data_config, write_parquet
):
    from tzrec.core.errors import DataError

    path = write_parquet(
        "x.parquet",
        {
            "tag": pa.array([1, 2]),
            "ctr": pa.array([0.25, 1e-50]),
            "flag": pa.array([True, False]),
        },
    )
    dc = data_config('dataset_type: ParquetDataset batch_size: 2 label_fields: "ctr"')
    fs = create_features(feature_configs(ID_CFG), dc)
    (b,) = list(ParquetDataset(dc, fs, path, mode="eval"))
    assert b.labels["ctr"].dtype == torch.float32 and b.labels["ctr"].tolist() == [0.25, 0.0]
    # a bool label, and a bool id column, are refused as upstream refuses them: one line
    dc = data_config('dataset_type: ParquetDataset batch_size: 2 label_fields: "flag"')
    with pytest.raises(DataError) as err:
        list(ParquetDataset(dc, fs, path, mode="eval"))
    msg = str(err.value)
    assert "\n" not in msg and "x.parquet: column 'flag' (label): type bool" in msg
    flag = create_features(
        feature_configs('id_feature {feature_name: "flag" embedding_dim: 4 num_buckets: 9}'), dc
    )
    dc = data_config("dataset_type: ParquetDataset batch_size: 2")
    with pytest.raises(DataError, match=r"column 'flag' \(flag\): type bool is not supported"):
        list(ParquetDataset(dc, flag, path, mode="eval"))


# ---- sub-feature naming as upstream derives it in every fg_mode ------------------------

# upstream's dlrm_hstu rtp kuairand shape: FG_DAG, RTP-style names (single underscore)
RTP_CONFIG = """
data_config {
    batch_size: 2
    dataset_type: ParquetDataset
    fg_mode: FG_DAG
    label_fields: ["cand_seq_action_weight"]
}
feature_configs {
    sequence_feature {
        sequence_name: "uih_seq"
        sequence_length: 10
        sequence_delim: "|"
        features { id_feature { feature_name: "video_id" expression: "item:video_id"
            embedding_name: "video_id_emb" embedding_dim: 4 num_buckets: 100 } }
        features { raw_feature { feature_name: "action_timestamp"
            expression: "user:action_timestamp" } }
    }
}
feature_configs {
    sequence_feature {
        sequence_name: "cand_seq"
        sequence_length: 10
        sequence_delim: "|"
        features { id_feature { feature_name: "video_id" expression: "item:video_id"
            embedding_name: "video_id_emb" embedding_dim: 4 num_buckets: 100 } }
    }
}
feature_configs {
    id_feature { feature_name: "user_id" expression: "user:user_id" embedding_dim: 4
        num_buckets: 100 }
}
model_config {
    feature_groups { group_name: "uih" feature_names: "uih_seq_video_id" group_type: DEEP }
    feature_groups { group_name: "candidate" feature_names: "cand_seq_video_id"
        group_type: DEEP }
    multi_tower { }
}
"""


def _rtp_data(write_parquet):
    return write_parquet(
        "rtp.parquet",
        {
            "uih_seq_video_id": pa.array(["1|2", "3"]),
            "uih_seq_action_timestamp": pa.array([f"{T0_SECONDS}|{T0_SECONDS + 1}", "5"]),
            "cand_seq_video_id": pa.array(["7|8", "9"]),
            "user_id": pa.array([1, 2]),
            "cand_seq_action_weight": pa.array(["1|0", "2"]),
        },
    )


def test_rtp_names_use_one_underscore_with_use_rtp(monkeypatch, write_parquet):
    from tzrec.core.config import feature_names, parse_pipeline_config

    monkeypatch.setenv("USE_RTP", "1")
    config = parse_pipeline_config(RTP_CONFIG)
    assert {"uih_seq_video_id", "uih_seq_action_timestamp", "cand_seq_video_id"} <= set(
        feature_names(config)
    )
    fs = create_features(config.feature_configs, config.data_config)
    assert [f.name for f in fs] == [
        "uih_seq_video_id",
        "uih_seq_action_timestamp",
        "cand_seq_video_id",
        "user_id",
    ]
    # FG_DAG reads the expression column, prefixed by the group like the name
    assert [f.input_names[0] for f in fs] == [f.name for f in fs]
    (b,) = list(ParquetDataset(config.data_config, fs, _rtp_data(write_parquet), mode="eval"))
    kjt = b.sparse_features["__BASE__"]
    assert kjt["uih_seq_video_id"].lengths().tolist() == [2, 1]
    assert kjt["cand_seq_video_id"].values().tolist() == [7, 8, 9]
    ts = b.int64_features["uih_seq_action_timestamp"].values().reshape(-1).tolist()
    assert ts[1] - ts[0] == 1
    # the RTP-named candidate label is split by its group's delimiter, kept jagged
    label = b.sequence_dense_features["cand_seq_action_weight"]
    assert label.lengths().tolist() == [2, 1] and label.values().tolist() == [1.0, 0.0, 2.0]


def test_default_names_use_two_underscores_and_rtp_names_hint_at_use_rtp(monkeypatch):
    from tzrec.core.config import feature_names, parse_pipeline_config, validate_pipeline_config
    from tzrec.core.errors import ConfigError

    monkeypatch.delenv("USE_RTP", raising=False)
    config = parse_pipeline_config(RTP_CONFIG)
    assert "uih_seq__video_id" in feature_names(config)
    fs = create_features(config.feature_configs, config.data_config)
    assert fs[0].name == "uih_seq__video_id" and fs[0].input_names[0] == "uih_seq__video_id"
    with pytest.raises(ConfigError, match=r"'uih_seq_video_id' is not defined.*USE_RTP=1"):
        validate_pipeline_config(config, require_input_paths=False, allow_unsupported_fields=True)


@pytest.mark.parametrize(
    "mode, first", [("FG_NONE", "vid"), ("FG_BUCKETIZE", "vid"), ("FG_DAG", "video_id")]
)
def test_column_preference_follows_fg_mode(feature_configs, data_config, mode, first):
    # upstream reads the feature-name column in FG_NONE and the expression column in FG_DAG
    (f,) = create_features(
        feature_configs(
            'id_feature {feature_name: "vid" expression: "item:video_id" embedding_dim: 4 '
            "num_buckets: 10}"
        ),
        data_config(f"fg_mode: {mode}"),
    )
    assert f.input_names[0] == first
    assert f.resolve_input({"vid", "video_id"}) == first


# ---- dataset types upstream has and tzrec does not ship --------------------------------

ODPS_CONFIG = """
train_input_path: "odps://project/tables/train"
eval_input_path: "odps://project/tables/eval"
model_dir: "{model_dir}"
train_config {{
  sparse_optimizer {{ adagrad_optimizer {{ lr: 0.01 }} constant_learning_rate {{}} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.001 }} constant_learning_rate {{}} }}
  num_epochs: 1
}}
data_config {{ batch_size: 8 dataset_type: {dataset_type} label_fields: "clk" num_workers: 0 }}
feature_configs {{ id_feature {{ feature_name: "user_id" embedding_dim: 4 num_buckets: 10 }} }}
model_config {{
  feature_groups {{ group_name: "all" feature_names: "user_id" group_type: DEEP }}
  multi_tower {{ towers {{ input: "all" mlp {{ hidden_units: [4] }} }} final {{ hidden_units: [2] }} }}
  metrics {{ auc {{}} }}
  losses {{ binary_cross_entropy {{}} }}
}}
"""


@pytest.mark.parametrize("dataset_type", ["OdpsDataset", "OdpsDatasetV1", "KafkaDataset"])
def test_upstream_only_dataset_types_are_one_line_naming_the_switch(tmp_path, capsys, dataset_type):
    from tzrec.core.cli import main

    cfg = tmp_path / "odps.config"
    cfg.write_text(ODPS_CONFIG.format(model_dir=tmp_path / "m", dataset_type=dataset_type))
    code = main(["train", "--pipeline_config_path", str(cfg)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert f"data_config.dataset_type {dataset_type}:" in err
    assert "installed datasets: CsvDataset, ParquetDataset" in err
    assert '--edit_config_json \'{"data_config.dataset_type": "ParquetDataset"}\'' in err


def test_the_documented_switch_selects_the_parquet_reader(tmp_path):
    from tzrec.core.build import dataset_class
    from tzrec.core.config import load_pipeline_config
    from tzrec.data import ParquetDataset as Parquet

    cfg = tmp_path / "odps.config"
    cfg.write_text(ODPS_CONFIG.format(model_dir=tmp_path / "m", dataset_type="OdpsDataset"))
    config = load_pipeline_config(cfg, edits={"data_config.dataset_type": "ParquetDataset"})
    assert dataset_class(config) is Parquet


def test_a_set_separator_is_honoured_not_refused_by_the_config_check():
    from tzrec.core.config import parse_pipeline_config, validate_pipeline_config

    config = parse_pipeline_config(
        RTP_CONFIG.replace(
            'expression: "item:video_id"', 'expression: "item:video_id" separator: ","', 1
        )
        .replace("uih_seq_video_id", "uih_seq__video_id")
        .replace("cand_seq_video_id", "cand_seq__video_id")
    )
    validate_pipeline_config(config, require_input_paths=False, allow_unsupported_fields=False)
    (f, *_) = create_features(config.feature_configs, config.data_config)
    assert f.multival_sep == ","
