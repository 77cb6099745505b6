"""Serving lookups (InferenceEmbeddingGroup) equal the training EmbeddingGroup.

Both read one GroupLayout; these tests pin that the two produce the same keys, shapes and
values (eager and TorchScript) for every group type and table kind.
"""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core.config import parse_pipeline_config
from tzrec.core.errors import ConfigError
from tzrec.data import ParquetDataset, create_features
from tzrec.models.embedding import EmbeddingGroup
from tzrec.models.inference import InferenceEmbeddingGroup, inputs_from_batch
from tzrec.models.layout import (
    GroupLayout,
    query_key,
    sequence_key,
    sequence_length_key,
    split_key,
)

CONFIG = """
train_input_path: "x" eval_input_path: "x" model_dir: "m"
data_config { batch_size: 5 dataset_type: ParquetDataset label_fields: "clk" num_workers: 0 }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 50 embedding_dim: 4
                               pooling: "mean" } }
feature_configs { id_feature { feature_name: "tags" num_buckets: 30 embedding_dim: 3
                               weighted: true } }
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
    features { id_feature { feature_name: "cate" num_buckets: 20 embedding_dim: 2 } }
    features { raw_feature { feature_name: "ts" } }
  }
}
model_config {
  feature_groups {
    group_name: "deep" feature_names: ["user_id", "tags", "item_id", "price"] group_type: DEEP
  }
  feature_groups {
    group_name: "wide" feature_names: ["user_id", "item_id"] group_type: WIDE
  }
  feature_groups {
    group_name: "seq"
    feature_names: ["item_id", "click_seq__item_id", "click_seq__cate", "click_seq__ts"]
    group_type: SEQUENCE
  }
  feature_groups {
    group_name: "jag" feature_names: ["click_seq__item_id"] group_type: JAGGED_SEQUENCE
  }
  multi_tower { final { hidden_units: [4] } }
}
"""

ROWS = {
    "user_id": [1, 2, 3, 4, 5],
    "tags": ["1:0.5\x032:2.0", "", "3:1.0", "4:0.25\x035:1.0\x036:3.0", "7:1.0"],
    "item_id": [5, 6, 7, 8, 9],
    "price": [0.5, 1.0, 1.5, 2.0, 2.5],
    "click_seq__item_id": ["5;6", "", "7;8;9;10", "11", "12;13"],
    "click_seq__cate": ["1;2", "", "3;4;5;6", "7", "8;9"],
    "click_seq__ts": ["1;2", "", "3;4;5;6", "7", "8;9"],
    "clk": [0, 1, 0, 1, 1],
}


def dataset(tmp_path, text=CONFIG, rows=ROWS):
    """(config, dataset) over one parquet file of ``rows``."""
    pq.write_table(pa.table(rows), tmp_path / "d.parquet")
    config = parse_pipeline_config(text)
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, str(tmp_path / "d.parquet"), mode="eval")
    return config, ds


def assert_parity(eg, features, groups, batch):
    """Eager and scripted serving lookups equal the training group (atol 1e-6)."""
    serving = InferenceEmbeddingGroup.from_embedding_group(eg, features, groups)
    scripted = torch.jit.script(serving)
    inputs = inputs_from_batch(batch, serving.input_features)
    with torch.no_grad():
        expected = eg(batch)
        for got in (serving(inputs), scripted(inputs)):
            assert sorted(got) == sorted(expected)
            for key, value in expected.items():
                torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0, msg=key)
    return expected


def test_serving_lookups_equal_training_for_every_group_type(tmp_path):
    config, ds = dataset(tmp_path)
    groups = list(config.model_config.feature_groups)
    torch.manual_seed(0)
    eg = EmbeddingGroup(ds.features, groups, wide_embedding_dim=3)
    out = assert_parity(eg, ds.features, groups, next(iter(ds)))
    assert out["deep"].shape == (5, 4 + 3 + 6 + 1)
    assert out["wide"].shape == (5, 6)
    assert out[sequence_key("seq")].shape == (5, 3, 6 + 2 + 1)
    assert out[query_key("seq")].shape == (5, 6)
    assert out[sequence_length_key("jag")].tolist() == [2, 0, 3, 1, 2]
    assert out[sequence_key("jag")].shape == (8, 6)


def test_serving_lookups_of_a_group_subset_read_the_same_tables(tmp_path):
    config, ds = dataset(tmp_path)
    groups = list(config.model_config.feature_groups)
    eg = EmbeddingGroup(ds.features, groups)
    batch = next(iter(ds))
    serving = InferenceEmbeddingGroup.from_embedding_group(eg, ds.features, groups[2:3])
    with torch.no_grad():
        got = serving(inputs_from_batch(batch, serving.input_features))
        want = eg(batch)
    assert sorted(got) == [query_key("seq"), sequence_key("seq"), sequence_length_key("seq")]
    torch.testing.assert_close(got[sequence_key("seq")], want[sequence_key("seq")])


def test_a_missing_trained_table_is_named(tmp_path):
    config, ds = dataset(tmp_path)
    groups = list(config.model_config.feature_groups)
    tables = InferenceEmbeddingGroup.tables_of(EmbeddingGroup(ds.features, groups))
    del tables["item_emb"]
    with pytest.raises(ConfigError, match="embedding 'item_emb' is not among the trained"):
        InferenceEmbeddingGroup(ds.features, groups, tables)


def test_layout_keys_round_trip():
    assert split_key(sequence_key("a.b")) == ("a.b", "sequence")
    assert split_key(query_key("g")) == ("g", "query")
    assert split_key(sequence_length_key("g")) == ("g", "sequence_length")
    assert split_key("deep") == ("deep", "")


def test_layout_lists_output_keys_and_tables(tmp_path):
    config, ds = dataset(tmp_path)
    layout = GroupLayout(ds.features, config.model_config.feature_groups, 3)
    assert layout.output_keys() == [
        "deep",
        "wide",
        query_key("seq"),
        sequence_key("seq"),
        sequence_length_key("seq"),
        sequence_key("jag"),
        sequence_length_key("jag"),
    ]
    tables = layout.tables
    assert tables["item_emb"].sequence and not tables["user_id_emb"].sequence
    assert tables["user_id_emb_wide"].wide and tables["user_id_emb_wide"].dim == 3
    assert [f.name for f in tables["item_emb"].features] == ["item_id", "click_seq__item_id"]


def test_shared_pooled_table_with_two_poolings_is_refused(tmp_path):
    text = CONFIG.replace(
        'feature_configs { id_feature { feature_name: "tags" num_buckets: 30 embedding_dim: 3',
        'feature_configs { id_feature { feature_name: "tags" num_buckets: 30 embedding_dim: 4 '
        'embedding_name: "user_id_emb"',
    )
    config, ds = dataset(tmp_path, text)
    groups = config.model_config.feature_groups[:1]
    with pytest.raises(ConfigError, match="embedding 'user_id_emb' is shared by features with"):
        GroupLayout(ds.features, groups)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_serving_pools_a_sequence_id_feature_in_a_deep_group_like_training(tmp_path, pooling):
    text = (
        CONFIG.replace(
            'feature_names: ["user_id", "tags", "item_id", "price"] group_type: DEEP',
            'feature_names: ["user_id", "click_seq__cate", "price", "click_seq__item_id"] '
            "group_type: DEEP",
        )
        .replace(
            'features { id_feature { feature_name: "cate" num_buckets: 20 embedding_dim: 2 } }',
            'features { id_feature { feature_name: "cate" num_buckets: 20 embedding_dim: 2 '
            f'pooling: "{pooling}" }} }}',
        )
        .replace(
            'feature_names: ["item_id", "click_seq__item_id", "click_seq__cate", "click_seq__ts"]',
            'feature_names: ["item_id", "click_seq__item_id", "click_seq__ts"]',
        )
    )
    config, ds = dataset(tmp_path, text)
    groups = list(config.model_config.feature_groups)
    eg = EmbeddingGroup(ds.features, groups)
    # click_seq__cate is read pooled only (EmbeddingBag); click_seq__item_id's table is also
    # a sequence table (pooled here from the per-item lookups)
    assert not eg.layout.tables["click_seq__cate_emb"].sequence
    assert eg.layout.tables["item_emb"].sequence
    out = assert_parity(eg, ds.features, groups, next(iter(ds)))
    assert out["deep"].shape == (5, 4 + 2 + 1 + 6)
    assert out["deep"][1, 4:6].abs().sum() == 0  # an empty history pools to zeros


def test_fp16_tables_store_half_precision_and_serve_like_training(tmp_path):
    text = CONFIG.replace(
        'embedding_name: "item_emb" } }', 'embedding_name: "item_emb" data_type: "FP16" } }'
    )
    config, ds = dataset(tmp_path, text)
    groups = list(config.model_config.feature_groups)
    eg = EmbeddingGroup(ds.features, groups)
    weights = InferenceEmbeddingGroup.tables_of(eg)
    assert weights["item_emb"].dtype == torch.float16
    assert weights["user_id_emb"].dtype == torch.float32
    out = assert_parity(eg, ds.features, groups, next(iter(ds)))
    assert out["deep"].dtype == torch.float32
    # the looked-up values are the stored half-precision rows
    row = weights["item_emb"][5].float()
    torch.testing.assert_close(out["deep"][0, 7:13], row)


@pytest.mark.parametrize("data_type", ["BF16", "INT8"])
def test_unsupported_table_data_types_are_one_line(tmp_path, data_type):
    text = CONFIG.replace(
        'feature_name: "user_id" num_buckets: 50',
        f'feature_name: "user_id" num_buckets: 50 data_type: "{data_type}"',
    )
    config, ds = dataset(tmp_path, text)
    with pytest.raises(
        ConfigError,
        match=f"feature 'user_id': data_type {data_type} is not supported; use one of FP32, FP16",
    ):
        GroupLayout(ds.features, config.model_config.feature_groups)


@pytest.mark.parametrize("quant", [("INT8", "FP32"), ("FP16", "FP16"), ("INT8", "INT8")])
def test_quantized_serving_lookups_stay_within_the_stated_tolerance(tmp_path, quant):
    """QUANT_EMB (pooled tables) / QUANT_EC_EMB (sequence tables) storage on export.

    Tolerance per looked-up value: INT8 row-wise ``(max - min) / 255 / 2`` of its row (sums
    add one bound per pooled id); FP16 ``2**-11`` relative.
    """
    from tzrec.models.inference import quant_types_from_env

    config, ds = dataset(tmp_path)
    groups = list(config.model_config.feature_groups)
    torch.manual_seed(0)
    eg = EmbeddingGroup(ds.features, groups)
    batch = next(iter(ds))
    exact = InferenceEmbeddingGroup.from_embedding_group(eg, ds.features, groups)
    served = InferenceEmbeddingGroup.from_embedding_group(eg, ds.features, groups, quant)
    scripted = torch.jit.script(served)
    inputs = inputs_from_batch(batch, exact.input_features)
    tables = InferenceEmbeddingGroup.tables_of(eg)
    with torch.no_grad():
        want = exact(inputs)
        got = scripted(inputs)
    # storage: uint8 rows for INT8 tables, half for FP16
    pooled_kind, seq_kind = quant
    dtype = {"INT8": torch.uint8, "FP16": torch.float16, "FP32": torch.float32}
    assert served.tables["user_id_emb"].dtype == dtype[pooled_kind]
    assert served.tables["item_emb"].dtype == dtype[seq_kind]  # read per sequence item
    # the largest INT8 step of any table, times the most ids a pooled value sums (3)
    step = max(float((t.max(1).values - t.min(1).values).max()) / 255 for t in tables.values())
    for key, value in want.items():
        if value.dtype != torch.float32:
            assert torch.equal(got[key], value), key
            continue
        bound = 3 * step / 2 + 1e-6 if "INT8" in quant else 2**-11 * 3 * value.abs().max() + 1e-6
        assert (got[key] - value).abs().max() <= bound, key
    # the quantized storage is really read: the DEEP group (user_id_emb) is not exact
    assert not torch.equal(got["deep"], want["deep"])
    assert quant_types_from_env({}) == ("INT8", "FP32")  # upstream's default on export
    assert quant_types_from_env({"QUANT_EMB": "0"}) == ("FP32", "FP32")
    assert quant_types_from_env({"QUANT_EMB": "1", "QUANT_EC_EMB": "fp16"}) == ("INT8", "FP16")
    with pytest.raises(ConfigError, match="QUANT_EMB='INT4' is not supported"):
        quant_types_from_env({"QUANT_EMB": "INT4"})
