"""``tzrec synth-data``: data with exactly the columns, types and ranges a config reads."""

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tzrec.core.config import load_pipeline_config, parse_pipeline_config
from tzrec.core.errors import ConfigError
from tzrec.data.features import create_features
from tzrec.data.readers.csv import CsvDataset
from tzrec.data.readers.parquet import ParquetDataset
from tzrec.data.samplers.tables import EdgeTable, NodeTable
from tzrec.data.synth import BASE_TIME, SynthOptions, synthesize
from tzrec.data.synth_command import SynthDataCommand

DSSM = """
train_input_path: "odps://p/tables/train" eval_input_path: "odps://p/tables/eval"
data_config {
  batch_size: 64 dataset_type: ParquetDataset label_fields: "clk"
  negative_sampler {
    input_path: "odps://p/tables/items" num_sample: 16 item_id_field: "item_id"
    attr_fields: "item_id" attr_fields: "cate" attr_fields: "price" attr_delimiter: "\\x02"
  }
}
feature_configs { id_feature { feature_name: "user_id" num_buckets: 100000 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "gender" vocab_list: ["m", "f"] embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "pid" hash_bucket_size: 5 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 500 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "cate" num_buckets: 40 embedding_dim: 8 } }
feature_configs { raw_feature { feature_name: "price" boundaries: [1, 10, 100] embedding_dim: 4 } }
feature_configs { sequence_feature {
  sequence_name: "click_seq" sequence_length: 6 sequence_delim: "|"
  features { id_feature { feature_name: "item_id" num_buckets: 500 embedding_dim: 8 } }
  features { id_feature { feature_name: "cate" num_buckets: 40 embedding_dim: 8 } }
} }
"""

HSTU = """
train_input_path: "train.parquet" eval_input_path: "eval.parquet"
data_config {
  batch_size: 16 dataset_type: ParquetDataset fg_mode: FG_DAG
  label_fields: ["cand_seq__action_weight", "cand_seq__watch_time"]
  negative_sampler {
    input_path: "items.txt" num_sample: 8 attr_fields: "video_id"
    item_id_field: "cand_seq__video_id" attr_delimiter: "\\t"
  }
}
feature_configs { id_feature {
  feature_name: "user_id" expression: "user:user_id" num_buckets: 10000000 embedding_dim: 8 } }
feature_configs { sequence_feature {
  sequence_name: "uih_seq" sequence_length: 4096 sequence_delim: "|"
  features { id_feature { feature_name: "video_id" expression: "item:video_id"
    embedding_name: "video_id_emb" num_buckets: 10000000 embedding_dim: 8 } }
  features { raw_feature { feature_name: "action_timestamp" expression: "user:action_timestamp" } }
  features { raw_feature { feature_name: "action_weight" expression: "user:action_weight" } }
  features { raw_feature { feature_name: "watch_time" expression: "user:watch_time" } }
} }
feature_configs { sequence_feature {
  sequence_name: "cand_seq" sequence_length: 10 sequence_delim: "|"
  features { id_feature { feature_name: "video_id" expression: "item:video_id"
    embedding_name: "video_id_emb" num_buckets: 10000000 embedding_dim: 8 } }
  features { raw_feature { feature_name: "query_time" expression: "user:request_time" } }
} }
feature_configs { raw_feature { feature_name: "request_time" expression: "user:request_time" } }
"""

RANK = """
train_input_path: "t" eval_input_path: "e"
data_config {
  batch_size: 32 dataset_type: ParquetDataset label_fields: ["clk", "dwell"]
  sample_weight_fields: "w"
}
feature_configs { id_feature { feature_name: "tags" hash_bucket_size: 50 weighted: true
  embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "cat" num_buckets: 20 embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "emb" value_dim: 3 } }
feature_configs { raw_feature { feature_name: "event_ts_ms" } }
feature_configs { sequence_id_feature { feature_name: "hist" sequence_length: 4
  sequence_delim: ";" num_buckets: 30 embedding_dim: 4 } }
model_config {
  feature_groups { group_name: "all" feature_names: ["tags", "cat", "emb"] group_type: DEEP }
  multi_tower {
    towers { input: "all" mlp { hidden_units: [8] } }
    final { hidden_units: [4] }
  }
  losses { binary_cross_entropy {} }
}
"""


def _config(text):
    return parse_pipeline_config(text)


def _read(config, path, **kw):
    dc = config.data_config
    features = create_features(config.feature_configs, dc)
    return list(ParquetDataset(dc, features, path, mode="eval", **kw))


def _seq_lengths(col, delim):
    return np.array([len(v.split(delim)) for v in col.to_pylist()])


def test_dssm_columns_types_and_ranges(tmp_path):
    cfg = _config(DSSM)
    res = synthesize(cfg, tmp_path, SynthOptions(rows=300, seed=1, max_seq_len=50))
    t = pq.read_table(res.files["train"])
    assert t.schema.field("user_id").type == pa.int64()
    assert t.schema.field("gender").type == pa.string()
    assert t.schema.field("price").type == pa.float32()
    assert t.schema.field("click_seq__item_id").type == pa.string()
    assert set(t.column_names) == {
        "user_id", "gender", "pid", "item_id", "cate", "price",
        "click_seq__item_id", "click_seq__cate", "clk",
    }  # fmt: skip
    assert set(t.column("gender").to_pylist()) <= {"m", "f"}
    assert 0 <= pc_min(t, "pid") and pc_max(t, "pid") < 5
    assert pc_max(t, "user_id") < 1000  # capped at --max_id for learnable embeddings
    assert pc_max(t, "item_id") < 500
    price = t.column("price").to_numpy()
    assert (
        price.min() >= 0
        and price.max() < 101
        and len(np.unique(np.digitize(price, [1, 10, 100]))) == 4
    )
    lengths = _seq_lengths(t.column("click_seq__item_id"), "|")
    assert lengths.min() >= 1 and lengths.max() <= 6 and len(set(lengths)) > 1
    cate_lengths = _seq_lengths(t.column("click_seq__cate"), "|")
    assert (lengths == cate_lengths).all()  # sub-features of one group share lengths
    items = np.array(
        [int(v) for s in t.column("click_seq__item_id").to_pylist() for v in s.split("|")]
    )
    assert items.min() >= 0 and items.max() < 500
    assert set(t.column("clk").to_pylist()) == {1}  # retrieval data: positive pairs
    assert pq.read_table(res.files["eval"]).num_rows == 75
    assert res.config_paths == {
        "train_input_path": res.files["train"],
        "eval_input_path": res.files["eval"],
        "data_config.negative_sampler.input_path": res.files["sampler items"],
    }


def pc_min(t, name):
    return int(np.min(t.column(name).to_numpy()))


def pc_max(t, name):
    return int(np.max(t.column(name).to_numpy()))


def test_dssm_item_table_matches_row_attributes_and_parses(tmp_path):
    cfg = _config(DSSM)
    res = synthesize(cfg, tmp_path, SynthOptions(rows=200))
    nodes = NodeTable(
        res.files["sampler items"], ["item_id", "cate", "price"], attr_delimiter="\x02"
    )
    assert nodes.ids.tolist() == list(range(500))
    t = pq.read_table(res.files["train"])
    idx = nodes.index_of(t.column("item_id").to_numpy())
    assert (idx >= 0).all()
    # a row's item attributes are those of its item in the sampler table
    assert nodes.attrs["cate"].take(pa.array(idx)).cast(pa.int64()).to_pylist() == (
        t.column("cate").to_pylist()
    )
    price = nodes.attrs["price"].take(pa.array(idx)).cast(pa.float32()).to_numpy()
    np.testing.assert_allclose(price, t.column("price").to_numpy(), rtol=1e-5)
    cfg.data_config.negative_sampler.input_path = res.files["sampler items"]
    (batch,) = _read(cfg, res.files["train"], batch_size=200)
    assert batch.batch_size == 200


def test_clusters_plant_a_learnable_signal(tmp_path):
    res = synthesize(_config(RANK), tmp_path, SynthOptions(rows=4000, seed=3))
    t = pq.read_table(res.files["train"])
    cat = t.column("cat").to_numpy()
    clk = t.column("clk").to_numpy()
    # lower half of the groups (cat % 8 < 4) click far more often than the upper half
    low = clk[(cat % 8) < 4].mean()
    high = clk[(cat % 8) >= 4].mean()
    assert low > 0.6 and high < 0.4


def test_hstu_timestamps_actions_and_sequence_labels(tmp_path):
    cfg = _config(HSTU)
    res = synthesize(cfg, tmp_path, SynthOptions(rows=200, max_seq_len=30))
    t = pq.read_table(res.files["train"])
    assert t.schema.field("request_time").type == pa.int64()
    assert t.schema.field("uih_seq__action_timestamp").type == pa.string()
    req = t.column("request_time").to_numpy()
    assert (req >= BASE_TIME).all() and (req < BASE_TIME + 31 * 86400).all()
    hist = t.column("uih_seq__action_timestamp").to_pylist()
    lengths = _seq_lengths(t.column("uih_seq__video_id"), "|")
    assert lengths.max() <= 30 and len(set(lengths)) > 5
    for r, cell in enumerate(hist):
        ts = np.array([int(v) for v in cell.split("|")])
        assert len(ts) == lengths[r]
        assert (np.diff(ts) >= 0).all() and ts.max() < req[r] and ts.min() > BASE_TIME - 31 * 86400
    # FG_DAG reads the expression's column (grouped: prefixed by the sequence name); the
    # candidates' query time is the request time; labels follow the candidate sequence
    assert "cand_seq__query_time" not in t.column_names
    cand = _seq_lengths(t.column("cand_seq__video_id"), "|")
    query = t.column("cand_seq__request_time").to_pylist()
    assert all(set(map(int, q.split("|"))) == {int(req[r])} for r, q in enumerate(query))
    assert (_seq_lengths(t.column("cand_seq__action_weight"), "|") == cand).all()
    assert (_seq_lengths(t.column("cand_seq__watch_time"), "|") == cand).all()
    actions = [int(v) for s in t.column("uih_seq__action_weight").to_pylist() for v in s.split("|")]
    assert 0 <= min(actions) and max(actions) < 256
    # the sampler's candidate ids come from the item table
    nodes = NodeTable(res.files["sampler items"], ["video_id"], attr_delimiter="\t")
    cand_ids = {int(v) for s in t.column("cand_seq__video_id").to_pylist() for v in s.split("|")}
    assert cand_ids <= set(nodes.ids.tolist())
    # one row per item under the bare attribute name: the item tower's export input
    items = pq.read_table(res.files["items (tzrec export --item_input_path)"])
    assert items.column_names == ["video_id"] and items.column("video_id").type == pa.int64()
    assert items.column("video_id").to_pylist() == nodes.ids.tolist()
    assert "request_time" in res.columns and res.columns["request_time"] == "int64"


def test_rank_shapes_weights_and_ms_timestamps(tmp_path):
    cfg = _config(RANK)
    res = synthesize(cfg, tmp_path, SynthOptions(rows=100))
    t = pq.read_table(res.files["train"])
    assert t.schema.field("emb").type == pa.list_(pa.float32())
    assert {len(v) for v in t.column("emb").to_pylist()} == {3}
    tags = t.column("tags").to_pylist()
    assert all(len(v.split(":")) == 2 and 0 <= int(v.split(":")[0]) < 50 for v in tags)
    ms = t.column("event_ts_ms").to_numpy()
    assert t.schema.field("event_ts_ms").type == pa.int64() and ms.min() >= BASE_TIME * 1000
    w = t.column("w").to_numpy()
    assert t.schema.field("w").type == pa.float32() and w.min() >= 0.5 and w.max() <= 1.5
    assert set(t.column("clk").to_pylist()) == {0, 1}
    hist = _seq_lengths(t.column("hist"), ";")
    assert hist.max() <= 4
    (batch,) = _read(cfg, res.files["train"], batch_size=100)
    assert batch.sample_weights["w"].shape == (100,)


def test_regression_and_multiclass_labels_follow_the_losses(tmp_path):
    text = RANK.replace("losses { binary_cross_entropy {} }", "losses { l2_loss {} }")
    t = pq.read_table(
        synthesize(_config(text), tmp_path / "a", SynthOptions(rows=50)).files["train"]
    )
    assert t.schema.field("clk").type == pa.float32()
    text = RANK.replace("multi_tower {", "num_class: 5 multi_tower {").replace(
        "binary_cross_entropy", "softmax_cross_entropy"
    )
    t = pq.read_table(
        synthesize(_config(text), tmp_path / "b", SynthOptions(rows=400)).files["train"]
    )
    assert set(t.column("clk").to_pylist()) == set(range(5))


def test_list_sequence_format(tmp_path):
    cfg = _config(HSTU)
    res = synthesize(cfg, tmp_path, SynthOptions(rows=64, sequence_format="list"))
    t = pq.read_table(res.files["train"])
    assert t.schema.field("uih_seq__video_id").type == pa.list_(pa.int64())
    assert t.schema.field("uih_seq__watch_time").type == pa.list_(pa.float32())
    assert t.schema.field("uih_seq__action_timestamp").type == pa.list_(pa.int64())


def test_hard_negative_sampler_tables(tmp_path):
    text = DSSM.replace("negative_sampler {", "hard_negative_sampler_v2 {").replace(
        'input_path: "odps://p/tables/items" num_sample: 16',
        'user_input_path: "u" item_input_path: "i" pos_edge_input_path: "p" '
        'hard_neg_edge_input_path: "h" num_sample: 16 num_hard_sample: 2 user_id_field: "user_id"',
    )
    res = synthesize(_config(text), tmp_path, SynthOptions(rows=100, max_id=64))
    keys = set(res.config_paths)
    assert {
        "data_config.hard_negative_sampler_v2.item_input_path",
        "data_config.hard_negative_sampler_v2.user_input_path",
        "data_config.hard_negative_sampler_v2.pos_edge_input_path",
        "data_config.hard_negative_sampler_v2.hard_neg_edge_input_path",
    } <= keys
    users = NodeTable(res.files["sampler users"])
    assert users.ids.tolist() == list(range(64))
    pos = EdgeTable(res.files["sampler positive edges"])
    hard = EdgeTable(res.files["sampler hard negative edges"])
    assert (pos.dst % 8 == pos.src % 8).all()  # positives from the user's group
    assert (hard.dst % 8 != hard.src % 8).all()  # hard negatives from other groups


def test_csv_dataset_with_input_fields(tmp_path):
    text = RANK.replace(
        "dataset_type: ParquetDataset",
        'dataset_type: CsvDataset delimiter: "," '
        + " ".join(
            f'input_fields {{ input_name: "{n}" }}'
            for n in ["extra", "tags", "cat", "emb", "event_ts_ms", "hist", "clk", "dwell", "w"]
        ),
    )
    cfg = _config(text)
    with pytest.raises(ConfigError, match="csv dataset cannot hold list columns"):
        synthesize(cfg, tmp_path / "x", SynthOptions(rows=10))
    cfg.feature_configs[2].raw_feature.value_dim = 1
    res = synthesize(cfg, tmp_path, SynthOptions(rows=40))
    assert res.files["train"].endswith(".csv")
    head = open(res.files["train"]).readline().rstrip("\n").split(",")
    assert len(head) == 9 and head[0] == "0"  # no header; unread columns hold "0"
    t = pcsv.read_csv(
        res.files["train"], read_options=pcsv.ReadOptions(column_names=[f"c{i}" for i in range(9)])
    )
    assert t.num_rows == 40
    ds = CsvDataset(
        cfg.data_config, create_features(cfg.feature_configs, cfg.data_config), res.files["train"]
    )
    assert sum(b.batch_size for b in ds) == 40


def test_write_config_changes_only_paths(tmp_path):
    src = tmp_path / "dssm.config"
    src.write_text(DSSM)
    out = tmp_path / "synth.config"
    cmd = SynthDataCommand()
    import argparse

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args(
        ["--pipeline_config_path", str(src), "--rows", "50", "--out", str(tmp_path / "d"),
         "--write_config", str(out)]
    )  # fmt: skip
    assert cmd.run(args) == 0
    before, after = load_pipeline_config(src), load_pipeline_config(out)
    assert after.train_input_path == str(tmp_path / "d" / "train.parquet")
    assert after.data_config.negative_sampler.input_path == str(tmp_path / "d/sampler_items.txt")
    after.train_input_path = before.train_input_path
    after.eval_input_path = before.eval_input_path
    after.data_config.negative_sampler.input_path = before.data_config.negative_sampler.input_path
    assert after == before


def test_unsupported_feature_is_one_line_error(tmp_path):
    text = DSSM + 'feature_configs { combo_feature { feature_name: "c" expression: ["user:a"] } }'
    with pytest.raises(ConfigError) as err:
        synthesize(_config(text), tmp_path, SynthOptions(rows=10))
    msg = str(err.value)
    assert "\n" not in msg and "cannot synthesise" in msg and "combo_feature" in msg


def test_bad_rows_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="--rows must be >= 1"):
        synthesize(_config(DSSM), tmp_path, SynthOptions(rows=0))


def test_same_seed_same_data(tmp_path):
    a = synthesize(_config(HSTU), tmp_path / "a", SynthOptions(rows=50, seed=7))
    b = synthesize(_config(HSTU), tmp_path / "b", SynthOptions(rows=50, seed=7))
    assert pq.read_table(a.files["train"]).equals(pq.read_table(b.files["train"]))
