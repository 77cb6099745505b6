"""Zero-collision hashing: torchrec managed-collision (MCH) tables, training and serving."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core.config import parse_pipeline_config
from tzrec.core.errors import ConfigError
from tzrec.data import ParquetDataset, create_features
from tzrec.models.embedding import EmbeddingGroup, mch_modules
from tzrec.models.inference import InferenceEmbeddingGroup, inputs_from_batch
from tzrec.models.layout import GroupLayout, sequence_key

CONFIG = """
train_input_path: "x" eval_input_path: "x" model_dir: "m"
data_config { batch_size: 4 dataset_type: ParquetDataset label_fields: "clk" num_workers: 0 }
feature_configs { id_feature { feature_name: "user_id" embedding_dim: 4
                               zch { zch_size: 16 eviction_interval: 2 %s } } }
feature_configs {
  sequence_feature {
    sequence_name: "click_seq" sequence_length: 3 sequence_delim: ";"
    features { id_feature { feature_name: "item_id" embedding_dim: 6
                            zch { zch_size: 32 eviction_interval: 2 lfu {} } } }
  }
}
model_config {
  feature_groups { group_name: "deep" feature_names: ["user_id"] group_type: DEEP }
  feature_groups { group_name: "seq" feature_names: ["click_seq__item_id"] group_type: SEQUENCE }
  multi_tower { towers { input: "deep" } final { hidden_units: [4] } }
}
"""

BIG = 10**12  # raw ids far beyond zch_size: the managed-collision module remaps them


def dataset(tmp_path, policy="lfu {}"):
    rows = {
        "user_id": [BIG + 1, BIG + 2, BIG + 3, BIG + 1],
        "click_seq__item_id": [f"{BIG + 5};{BIG + 6}", "", f"{BIG + 7}", f"{BIG + 5}"],
        "clk": [0, 1, 0, 1],
    }
    pq.write_table(pa.table(rows), tmp_path / "d.parquet")
    config = parse_pipeline_config(CONFIG % policy)
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, str(tmp_path / "d.parquet"), mode="eval")
    return config, ds


@pytest.mark.parametrize("policy", ["lfu {}", "lru { decay_exponent: 2 }", "distance_lfu {}"])
def test_zch_tables_are_torchrec_mch_modules_with_the_configured_policy(tmp_path, policy):
    config, ds = dataset(tmp_path, policy)
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    modules = mch_modules(eg)
    assert sorted(modules) == ["click_seq__item_id_emb", "user_id_emb"]
    user = modules["user_id_emb"]
    assert user._zch_size == 16 and user._eviction_interval == 2
    assert (
        type(user._eviction_policy).__name__
        == {
            "lfu {}": "LFU_EvictionPolicy",
            "lru { decay_exponent: 2 }": "LRU_EvictionPolicy",
            "distance_lfu {}": "DistanceLFU_EvictionPolicy",
        }[policy]
    )
    if policy.startswith("lru"):
        assert user._eviction_policy._decay_exponent == 2
    # every zch table is a managed-collision EmbeddingCollection (pooled ones pooled by the
    # group): torchrec shards those on CPU, its managed-collision bag collection it does not
    assert eg.impls["__BASE__"].mc_ebc is None
    assert sorted(eg.impls["__BASE__"].mc_ec) == ["dim4", "dim6"]


def test_trained_ids_get_their_own_rows_and_serving_remaps_them_identically(tmp_path):
    config, ds = dataset(tmp_path)
    groups = list(config.model_config.feature_groups)
    eg = EmbeddingGroup(ds.features, groups)
    batch = next(iter(ds))
    eg.train()
    for _ in range(4):  # eviction_interval 2: the seen ids are admitted into the tables
        eg(batch)
    eg.eval()
    user = mch_modules(eg)["user_id_emb"]
    raw = torch.tensor([BIG + 1, BIG + 2, BIG + 3, 7])
    rows = user.remap({"u": _jt(raw)})["u"].values()
    assert len(set(rows[:3].tolist())) == 3  # zero collisions among the seen ids
    assert rows[3].item() == 15  # an unseen id reads the last row (torchrec's default)
    with torch.no_grad():
        expected = eg(batch)
    assert expected["deep"][0].equal(expected["deep"][3])  # same raw id, same row
    assert not expected["deep"][0].equal(expected["deep"][1])
    serving = InferenceEmbeddingGroup.from_embedding_group(eg, ds.features, groups)
    scripted = torch.jit.script(serving)
    inputs = inputs_from_batch(batch, serving.input_features)
    with torch.no_grad():
        for got in (serving(inputs), scripted(inputs)):
            assert sorted(got) == sorted(expected)
            for key, value in expected.items():
                torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0, msg=key)
    assert expected[sequence_key("seq")].shape == (4, 2, 6)


def _jt(values):
    from torchrec import JaggedTensor

    return JaggedTensor(values=values, lengths=torch.ones_like(values))


@pytest.mark.parametrize(
    ("zch", "message"),
    [
        ("", "zch needs an eviction policy \\(lfu, lru, distance_lfu\\)"),
        ('lfu {} threshold_filtering_func: "lambda x: x"', "zch\\.threshold_filtering_func is not"),
    ],
)
def test_unsupported_zch_settings_are_one_line(tmp_path, zch, message):
    config, ds = dataset(tmp_path, zch)
    with pytest.raises(ConfigError, match=f"feature 'user_id': {message}"):
        GroupLayout(ds.features, config.model_config.feature_groups)


def test_zch_under_several_processes_is_refused_in_one_line(tmp_path):
    from tzrec.core.engine.engine import _refuse_distributed_zch

    config, ds = dataset(tmp_path)
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    _refuse_distributed_zch(EmbeddingGroup(ds.features, []), 2)  # no zch table: fine
    with pytest.raises(ConfigError) as err:
        _refuse_distributed_zch(eg, 2)
    msg = str(err.value)
    assert "tables click_seq__item_id_emb, user_id_emb train in one process only" in msg
    assert "this run has 2" in msg and "\n" not in msg
