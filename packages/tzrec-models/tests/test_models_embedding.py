import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core.config import parse_pipeline_config
from tzrec.core.errors import ConfigError
from tzrec.data import ParquetDataset, create_features
from tzrec.models.embedding import EmbeddingGroup

CONFIG = """
train_input_path: "x" eval_input_path: "x" model_dir: "m"
data_config { batch_size: 4 dataset_type: ParquetDataset label_fields: "clk" num_workers: 0 }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 50 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 50 embedding_dim: 6
                               embedding_name: "item_emb" } }
feature_configs { raw_feature { feature_name: "price" } }
feature_configs {
  sequence_feature {
    sequence_name: "click_seq"
    sequence_length: 3
    sequence_delim: ";"
    features { id_feature { feature_name: "item_id" num_buckets: 50 embedding_dim: 6
                             embedding_name: "item_emb" } }
    features { raw_feature { feature_name: "ts" } }
  }
}
model_config {
  feature_groups {
    group_name: "deep" feature_names: ["user_id", "item_id", "price"] group_type: DEEP
  }
  feature_groups {
    group_name: "seq"
    feature_names: ["item_id", "click_seq__item_id", "click_seq__ts"]
    group_type: SEQUENCE
  }
  feature_groups {
    group_name: "jag" feature_names: ["click_seq__item_id"] group_type: JAGGED_SEQUENCE
  }
  multi_tower { final { hidden_units: [4] } }
}
"""


@pytest.fixture
def dataset(tmp_path):
    table = pa.table(
        {
            "user_id": [1, 2, 3, 4],
            "item_id": [5, 6, 7, 8],
            "price": [0.5, 1.0, 1.5, 2.0],
            "click_seq__item_id": ["5;6", "", "7;8;9;10", "11"],
            "click_seq__ts": ["1;2", "", "3;4;5;6", "7"],
            "clk": [0, 1, 0, 1],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    config = parse_pipeline_config(CONFIG)
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, str(tmp_path / "d.parquet"), mode="eval")
    return config, ds


def test_group_shapes_and_dims(dataset):
    config, ds = dataset
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    out = eg(next(iter(ds)))
    assert eg.group_total_dim("deep") == 4 + 6 + 1
    assert out["deep"].shape == (4, 11)
    assert eg.query_dim("seq") == 6 and eg.sequence_dim("seq") == 7
    assert out["seq.query"].shape == (4, 6)
    # truncation keeps the 3 most recent items; row 1 is empty
    assert out["seq.sequence_length"].tolist() == [2, 0, 3, 1]
    assert out["seq.sequence"].shape == (4, 3, 7)
    assert out["jag.sequence"].shape == (6, 6)
    assert "jag.query" not in out


def test_shared_embedding_name_uses_one_table(dataset):
    config, ds = dataset
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    out = eg(next(iter(ds)))
    weights = [n for n, _ in eg.named_parameters() if "item_emb" in n]
    assert len(weights) == 1
    # item 5 as a pooled id (row 0) equals item 5 as the first sequence item of row 0
    assert torch.allclose(out["deep"][0, 4:10], out["seq.sequence"][0, 0, :6])
    # jagged and padded views agree: row 2 keeps items 8, 9, 10 (jagged rows 2..4)
    assert torch.allclose(out["jag.sequence"][2:5], out["seq.sequence"][2, :, :6])
    # raw sequence values ride along as the last column
    assert out["seq.sequence"][2, :, 6].tolist() == [4.0, 5.0, 6.0]
    assert out["seq.sequence"][1].abs().sum() == 0  # zero-length row is all padding


def test_gradients_reach_the_shared_table(dataset):
    config, ds = dataset
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    out = eg(next(iter(ds)))
    (out["deep"].sum() + out["seq.sequence"].sum()).backward()
    grads = [p.grad for n, p in eg.named_parameters() if "item_emb" in n]
    assert grads[0] is not None and grads[0].abs().sum() > 0


def test_mismatched_shared_dim_is_a_config_error(dataset):
    config, ds = dataset
    for f in ds.features:
        if f.name == "item_id":
            f.config.embedding_dim = 8
    with pytest.raises(
        ConfigError, match=r"embedding 'item_emb' is shared by .*\(embedding_dim 8\)"
    ):
        EmbeddingGroup(ds.features, config.model_config.feature_groups)


def test_unknown_feature_in_group_is_named(dataset):
    config, ds = dataset
    config.model_config.feature_groups[0].feature_names.append("nope")
    with pytest.raises(ConfigError, match="feature group 'deep': feature\\(s\\) nope"):
        EmbeddingGroup(ds.features, config.model_config.feature_groups)


def test_sequence_feature_in_deep_group_is_a_type_mismatch(dataset):
    config, ds = dataset
    config.model_config.feature_groups[0].feature_names.append("click_seq__ts")
    with pytest.raises(ConfigError, match="is DEEP but has sequence feature"):
        EmbeddingGroup(ds.features, config.model_config.feature_groups)


def test_unknown_group_lists_groups(dataset):
    config, ds = dataset
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    with pytest.raises(ConfigError, match="groups: deep, seq, jag"):
        eg.group_total_dim("other")


def test_mean_pooling_of_a_shared_table_gives_zero_for_an_empty_row(tmp_path):
    config = parse_pipeline_config(CONFIG)
    config.feature_configs[1].id_feature.pooling = "mean"
    table = pa.table(
        {
            "user_id": [1, 2],
            "item_id": pa.array([5, None], pa.int64()),
            "price": [0.5, 1.0],
            "click_seq__item_id": ["5;6", "7"],
            "click_seq__ts": ["1;2", "3"],
            "clk": [0, 1],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, str(tmp_path / "d.parquet"), mode="eval")
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    out = eg(next(iter(ds)))
    assert torch.isfinite(out["deep"]).all()
    assert out["deep"][1, 4:10].abs().sum() == 0
    assert out["deep"][0, 4:10].abs().sum() > 0


def test_wide_group_uses_its_own_narrow_tables(dataset):
    config, ds = dataset
    wide = config.model_config.feature_groups.add()
    wide.group_name = "wide"
    wide.feature_names.extend(["user_id", "item_id"])
    wide.group_type = 1  # WIDE
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups, wide_embedding_dim=3)
    out = eg(next(iter(ds)))
    assert eg.group_total_dim("wide") == 6
    assert out["wide"].shape == (4, 6)
    names = [n for n, _ in eg.named_parameters()]
    assert any(n.endswith("user_id_emb_wide.weight") for n in names)
    assert any(n.endswith("item_emb_wide.weight") for n in names)
    # the DEEP lookups are untouched by the wide tables
    assert out["deep"].shape == (4, 11)
    assert not torch.allclose(out["wide"][:, :3], out["deep"][:, :3])


def test_raw_feature_in_a_wide_group_is_a_config_error(dataset):
    config, ds = dataset
    wide = config.model_config.feature_groups.add()
    wide.group_name = "wide"
    wide.feature_names.append("price")
    wide.group_type = 1
    with pytest.raises(ConfigError, match="feature 'price' is in a WIDE group but has no ids"):
        EmbeddingGroup(ds.features, config.model_config.feature_groups)


def _deep_seq_dataset(tmp_path, pooling):
    text = CONFIG.replace(
        'group_name: "deep" feature_names: ["user_id", "item_id", "price"] group_type: DEEP',
        'group_name: "deep" feature_names: ["user_id", "click_seq__item_id"] group_type: DEEP',
    ).replace(
        'features { id_feature { feature_name: "item_id" num_buckets: 50 embedding_dim: 6\n'
        '                             embedding_name: "item_emb" } }',
        'features { id_feature { feature_name: "item_id" num_buckets: 50 embedding_dim: 6\n'
        f'                             embedding_name: "seq_emb" pooling: "{pooling}" }} }}',
    )
    config = parse_pipeline_config(text)
    # only the DEEP group: the sequence table is read pooled only (an EmbeddingBag lookup)
    del config.model_config.feature_groups[1:]
    table = pa.table(
        {
            "user_id": [1, 2, 3],
            "item_id": [5, 6, 7],
            "price": [0.5, 1.0, 1.5],
            "click_seq__item_id": ["5;6", "", "7;8;9;10"],
            "click_seq__ts": ["1;2", "", "3;4;5;6"],
            "clk": [0, 1, 0],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, str(tmp_path / "d.parquet"), mode="eval")
    return config, ds


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_sequence_id_feature_in_a_deep_group_is_pooled_over_its_items(tmp_path, pooling):
    config, ds = _deep_seq_dataset(tmp_path, pooling)
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    assert eg.group_total_dim("deep") == 4 + 6
    assert eg.layout.tables["seq_emb"].sequence is False  # pooled: EmbeddingBagCollection
    out = eg(next(iter(ds)))["deep"]
    weight = eg.impls["__BASE__"].ebc.embedding_bags["seq_emb"].weight.detach()
    # sequence_length 3 keeps the 3 most recent items: 8, 9, 10 in row 2
    rows = [[5, 6], [], [8, 9, 10]]
    for row, ids in enumerate(rows):
        want = weight[ids].sum(0) if ids else torch.zeros(6)
        if pooling == "mean" and ids:
            want = want / len(ids)
        torch.testing.assert_close(out[row, 4:], want)
