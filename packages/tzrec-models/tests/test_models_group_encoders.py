"""DEEP groups' ``sequence_groups`` + ``sequence_encoders``, built as upstream builds them."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core.config import parse_pipeline_config
from tzrec.core.errors import ConfigError
from tzrec.data import ParquetDataset, create_features
from tzrec.models.embedding import EmbeddingGroup
from tzrec.models.inference import InferenceEmbeddingGroup, inputs_from_batch
from tzrec.models.layout import query_key, sequence_key, sequence_length_key

FEATURES = """
train_input_path: "x" eval_input_path: "x" model_dir: "m"
data_config { batch_size: 4 dataset_type: ParquetDataset label_fields: "clk" num_workers: 0 }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 50 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 50 embedding_dim: 6
                               embedding_name: "item_emb" } }
feature_configs {
  sequence_feature {
    sequence_name: "click_seq" sequence_length: 4 sequence_delim: ";"
    features { id_feature { feature_name: "item_id" num_buckets: 50 embedding_dim: 6
                            embedding_name: "item_emb" } }
    features { raw_feature { feature_name: "ts" } }
  }
}
"""

GROUP = """
model_config {
  feature_groups {
    group_name: "user" feature_names: ["user_id"] group_type: DEEP
    sequence_groups { feature_names: ["item_id", "click_seq__item_id", "click_seq__ts"] }
    %s
  }
  multi_tower { towers { input: "user" } final { hidden_units: [4] } }
}
"""

# one entry per registered encoder: (sequence_encoders text, width it adds); sequence width
# is 6 + 1 (item embedding + ts), query width 6
ENCODERS = {
    "din_encoder": ("din_encoder { attn_mlp { hidden_units: [4] } }", 7),
    "simple_attention": ("simple_attention {}", 7),
    "pooling_encoder": ('pooling_encoder { pooling_type: "mean" }', 7),
    "self_attention_encoder": (
        "self_attention_encoder { multihead_attn_dim: 8 num_heads: 2 }",
        8,
    ),
    "multi_window_din_encoder": (
        "multi_window_din_encoder { attn_mlp { hidden_units: [4] } windows_len: [1, 3] }",
        7 * 3,
    ),
}

ROWS = {
    "user_id": [1, 2, 3, 4],
    "item_id": [5, 6, 7, 8],
    "click_seq__item_id": ["5;6", "", "7;8;9;10", "11"],
    "click_seq__ts": ["1;2", "", "3;4;5;6", "7"],
    "clk": [0, 1, 0, 1],
}


def build(tmp_path, encoders):
    """(config, dataset) of the DEEP group with ``encoders`` as its sequence_encoders."""
    pq.write_table(pa.table(ROWS), tmp_path / "d.parquet")
    config = parse_pipeline_config(FEATURES + GROUP % encoders)
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, str(tmp_path / "d.parquet"), mode="eval")
    return config, ds


def encoder_text(name):
    return f"sequence_encoders {{ {ENCODERS[name][0]} }}"


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_registered_encoder_extends_its_deep_group(tmp_path, name):
    config, ds = build(tmp_path, encoder_text(name))
    groups = list(config.model_config.feature_groups)
    eg = EmbeddingGroup(ds.features, groups)
    (encoder,) = eg.sequence_encoders.encoders["user"]
    assert (
        type(encoder).__name__
        == {
            "din_encoder": "DINEncoder",
            "simple_attention": "SimpleAttention",
            "pooling_encoder": "PoolingEncoder",
            "self_attention_encoder": "SelfAttentionEncoder",
            "multi_window_din_encoder": "MultiWindowDINEncoder",
        }[name]
    )
    width = ENCODERS[name][1]
    assert eg.group_total_dim("user") == 4 + width
    assert eg.group_names() == ["user"]  # the sequence group is not a feature group
    batch = next(iter(ds))
    eg.eval()
    with torch.no_grad():
        out = eg(batch)
        lookups = eg.lookup(batch)
    assert out["user"].shape == (4, 4 + width)
    # the encoder reads the unnamed sequence group, which takes the DEEP group's name
    assert lookups[sequence_key("user")].shape == (4, 4, 7)
    assert lookups[query_key("user")].shape == (4, 6)
    torch.testing.assert_close(out["user"][:, :4], lookups["user"])
    torch.testing.assert_close(out["user"][:, 4:], encoder(lookups))
    # serving stops before the encoders and gives the same lookups
    serving = torch.jit.script(
        InferenceEmbeddingGroup.from_embedding_group(eg, ds.features, groups)
    )
    with torch.no_grad():
        got = serving(inputs_from_batch(batch, ds.features))
    assert sorted(got) == sorted(lookups)
    for key, value in lookups.items():
        torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0)


def test_pooling_encoder_output_is_the_mean_of_the_items(tmp_path):
    config, ds = build(tmp_path, encoder_text("pooling_encoder"))
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    batch = next(iter(ds))
    with torch.no_grad():
        out = eg(batch)["user"][:, 4:]
        seq = eg.lookup(batch)[sequence_key("user")]
        lengths = eg.lookup(batch)[sequence_length_key("user")]
    assert lengths.tolist() == [2, 0, 4, 1]
    for row, n in enumerate(lengths.tolist()):
        want = seq[row, :n].mean(0) if n else torch.zeros(7)
        torch.testing.assert_close(out[row], want)
    assert out[2, 6] == pytest.approx((3 + 4 + 5 + 6) / 4)  # the ts column


def test_two_named_sequence_groups_each_with_an_encoder_in_config_order(tmp_path):
    text = (FEATURES + GROUP % "").replace(
        'sequence_groups { feature_names: ["item_id", "click_seq__item_id", "click_seq__ts"] }',
        'sequence_groups { group_name: "a" feature_names: ["click_seq__item_id"] }\n'
        'sequence_groups { group_name: "b" feature_names: ["click_seq__ts"] }\n'
        'sequence_encoders { pooling_encoder { input: "b" pooling_type: "sum" } }\n'
        'sequence_encoders { pooling_encoder { input: "a" pooling_type: "sum" } }',
    )
    pq.write_table(pa.table(ROWS), tmp_path / "d.parquet")
    config = parse_pipeline_config(text)
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, str(tmp_path / "d.parquet"), mode="eval")
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    assert eg.group_total_dim("user") == 4 + 1 + 6
    out = eg(next(iter(ds)))["user"]
    assert out[:, 4].tolist() == [3.0, 0.0, 18.0, 7.0]  # b (ts sums) comes first


@pytest.mark.parametrize(
    ("encoders", "message"),
    [
        ("", "has sequence_groups but no sequence_encoders"),
        (
            'sequence_encoders { pooling_encoder { input: "other" } }',
            "pooling_encoder.input 'other' is not one of its sequence_groups \\(user\\)",
        ),
    ],
)
def test_inconsistent_sequence_groups_and_encoders_are_one_line(tmp_path, encoders, message):
    config, ds = build(tmp_path, encoders)
    with pytest.raises(ConfigError, match=message):
        EmbeddingGroup(ds.features, config.model_config.feature_groups)


def test_sequence_groups_outside_a_deep_group_are_refused(tmp_path):
    config, ds = build(tmp_path, encoder_text("pooling_encoder"))
    config.model_config.feature_groups[0].group_type = 1  # WIDE
    with pytest.raises(ConfigError, match="is WIDE: sequence_groups and sequence_encoders"):
        EmbeddingGroup(ds.features, config.model_config.feature_groups)


def test_embedding_name_suffix_gives_a_group_its_own_tables(tmp_path):
    config, ds = build(tmp_path, encoder_text("pooling_encoder"))
    other = config.model_config.feature_groups.add()
    other.group_name = "other"
    other.feature_names.extend(["user_id", "item_id"])
    other.embedding_name_suffix = "x"
    eg = EmbeddingGroup(ds.features, config.model_config.feature_groups)
    tables = set(eg.layout.tables)
    assert {"user_id_emb", "item_emb", "user_id_emb_x", "item_emb_x"} <= tables
    out = eg(next(iter(ds)))
    # same ids, different tables: different embeddings
    assert not torch.allclose(out["other"][:, :4], out["user"][:, :4])
