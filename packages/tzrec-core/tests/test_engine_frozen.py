"""``trainable: false`` on an id feature freezes its table: bit-identical after training."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core import build
from tzrec.core.config import parse_pipeline_config
from tzrec.core.engine.distributed import init_distributed, seed_everything
from tzrec.core.engine.engine import Engine
from tzrec.core.errors import ConfigError

CONFIG = """
train_input_path: "{data}"
model_dir: "{model_dir}"
train_config {{
  sparse_optimizer {{ adagrad_optimizer {{ lr: 0.1 }} constant_learning_rate {{}} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.01 }} constant_learning_rate {{}} }}
}}
data_config {{
  batch_size: 8
  dataset_type: ParquetDataset
  label_fields: "clk"
  num_workers: 0
}}
feature_configs {{
  id_feature {{ feature_name: "user_id" num_buckets: 20 embedding_dim: 4 {user} }}
}}
feature_configs {{
  id_feature {{ feature_name: "item_id" num_buckets: 20 embedding_dim: 4 }}
}}
feature_configs {{
  sequence_feature {{
    sequence_name: "click_seq"
    sequence_length: 3
    features {{ id_feature {{ feature_name: "cat" num_buckets: 10 embedding_dim: 4
      {seq} }} }}
  }}
}}
model_config {{
  feature_groups {{
    group_name: "all" feature_names: ["user_id", "item_id", "click_seq__cat"]
    group_type: DEEP
  }}
  multi_tower {{ towers {{ input: "all" mlp {{ hidden_units: [8] }} }} final {{ hidden_units: [4] }} }}
  losses {{ binary_cross_entropy {{}} }}
}}
"""


def _data(tmp_path):
    rng = np.random.default_rng(5)
    users = rng.integers(0, 20, 32)
    seqs = [";".join(str(v) for v in rng.integers(0, 10, 3)) for _ in range(32)]
    path = tmp_path / "rows.parquet"
    table = {
        "user_id": users,
        "item_id": rng.integers(0, 20, 32),
        "click_seq__cat": seqs,
        "clk": (users % 2).astype(np.int64),
    }
    pq.write_table(pa.table(table), path)
    return str(path)


def _weights(engine):
    out = {}
    for k, v in engine.dmp.state_dict().items():
        t = v.local_shards()[0].tensor if hasattr(v, "local_shards") else v
        out[k] = t.detach().clone()
    return out


def _train(tmp_path, user="", seq=""):
    data = _data(tmp_path)
    text = CONFIG.format(data=data, model_dir=tmp_path / "m", user=user, seq=seq)
    config = parse_pipeline_config(text)
    device = init_distributed()
    seed_everything(3)
    ds = build.build_dataset(config, build.create_features(config), data, "train")
    engine = Engine(config, build.build_model(config, ds.features), device, train=True)
    before = _weights(engine)
    for batch in ds.make_dataloader():
        engine.train_step(batch)
    return before, _weights(engine)


def _table(weights, name):
    (key,) = [k for k in weights if k.endswith(f".{name}.weight")]
    return key


def test_frozen_tables_keep_their_weights_while_trainable_ones_move(tmp_path):
    before, after = _train(tmp_path, user="trainable: false", seq="trainable: false")
    for frozen in ("user_id_emb", "click_seq__cat_emb"):
        key = _table(before, frozen)
        assert torch.equal(before[key], after[key]), key
    moved = _table(before, "item_id_emb")
    assert not torch.equal(before[moved], after[moved])
    dense = [k for k in before if "mlp" in k or "final" in k]
    assert dense and any(not torch.equal(before[k], after[k]) for k in dense)


def test_default_trainable_tables_all_move(tmp_path):
    before, after = _train(tmp_path)
    for name in ("user_id_emb", "item_id_emb", "click_seq__cat_emb"):
        key = _table(before, name)
        assert not torch.equal(before[key], after[key]), key


def test_shared_table_with_mixed_trainable_is_one_line(tmp_path):
    text = CONFIG.format(
        data="x.parquet",
        model_dir=tmp_path,
        user='trainable: false embedding_name: "shared"',
        seq="",
    ).replace(
        'feature_name: "item_id" num_buckets: 20',
        'feature_name: "item_id" embedding_name: "shared" num_buckets: 20',
    )
    config = parse_pipeline_config(text)
    features = build.create_features(config)
    with pytest.raises(ConfigError, match="embedding 'shared' is shared by .*trainable"):
        build.build_model(config, features)


def test_the_schema_walk_accepts_trainable():
    from tzrec.core.support import check_supported_fields
    from tzrec.protos import pipeline_pb2

    config = pipeline_pb2.EasyRecConfig()
    feature = config.feature_configs.add().id_feature
    feature.feature_name = "f"
    feature.trainable = False
    assert check_supported_fields(config, "p.config", allow_unsupported=False) == []
