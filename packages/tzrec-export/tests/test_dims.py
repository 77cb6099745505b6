"""Which sequence groups share a torch.export Dim, decided from group membership."""

import torch
from torch.export import Dim

from tzrec.data import create_features
from tzrec.export.dims import dynamic_shapes, sequence_share_keys
from tzrec.protos import feature_pb2, model_pb2

JAGGED, SEQUENCE, DEEP = model_pb2.JAGGED_SEQUENCE, model_pb2.SEQUENCE, model_pb2.DEEP


def features():
    configs = []
    fc = feature_pb2.FeatureConfig()
    seq = fc.sequence_feature
    seq.sequence_name = "clicks"
    seq.features.add().id_feature.feature_name = "item"
    seq.features[0].id_feature.num_buckets = 10
    seq.features.add().raw_feature.feature_name = "price"
    seq.features[1].raw_feature.value_dim = 3  # three values per item: wider, not longer
    configs.append(fc)
    fc = feature_pb2.FeatureConfig()
    fc.sequence_feature.sequence_name = "buys"
    fc.sequence_feature.features.add().id_feature.feature_name = "item"
    fc.sequence_feature.features[0].id_feature.num_buckets = 10
    configs.append(fc)
    fc = feature_pb2.FeatureConfig()
    fc.sequence_id_feature.feature_name = "tags"
    fc.sequence_id_feature.num_buckets = 5
    configs.append(fc)
    fc = feature_pb2.FeatureConfig()
    fc.id_feature.feature_name = "user"
    fc.id_feature.num_buckets = 5
    configs.append(fc)
    return create_features(configs)


def group(name, names, gtype):
    return model_pb2.FeatureGroupConfig(group_name=name, feature_names=names, group_type=gtype)


def test_groups_of_one_sequence_share_and_others_do_not():
    groups = [
        group("click_items", ["clicks__item"], JAGGED),
        group("click_prices", ["clicks__price"], JAGGED),
        group("buys", ["buys__item"], JAGGED),
        group("tags", ["tags"], SEQUENCE),
        group("user", ["user"], DEEP),
    ]
    keys = sequence_share_keys(features(), groups)
    assert keys == {
        "click_items": "clicks",
        "click_prices": "clicks",
        "buys": "buys",
        "tags": "tags",
    }


def test_a_group_mixing_parents_ties_them_together_whatever_its_first_feature():
    groups = [
        group("buys", ["buys__item"], JAGGED),
        group("tags", ["tags"], JAGGED),
        # first feature from "tags", second from "buys": both parents must now share
        group("mixed", ["tags", "buys__item"], JAGGED),
        group("clicks", ["clicks__item", "clicks__price"], JAGGED),
    ]
    keys = sequence_share_keys(features(), groups)
    assert keys["buys"] == keys["tags"] == keys["mixed"] == "buys+tags"
    assert keys["clicks"] == "clicks"


def test_a_scalar_view_of_a_sequence_group_has_no_sequence_axis():
    groups = [group("candidate", ["user"], JAGGED)]
    assert sequence_share_keys(features(), groups) == {}


def test_dynamic_shapes_put_items_on_axis_0_and_lengths_on_axis_1():
    groups = [
        group("click_items", ["clicks__item"], JAGGED),
        group("click_prices", ["clicks__price"], JAGGED),
        group("tags", ["tags"], SEQUENCE),
        group("user", ["user"], DEEP),
    ]
    grouped = {
        "click_items.sequence": torch.zeros(7, 4),
        "click_items.sequence_length": torch.zeros(3),
        "click_prices.sequence": torch.zeros(7, 3),
        "click_prices.sequence_length": torch.zeros(3),
        "tags.sequence": torch.zeros(3, 5, 4),
        "tags.sequence_length": torch.zeros(3),
        "user": torch.zeros(3, 4),
    }
    spec = dynamic_shapes(grouped, features(), groups)
    items = spec["click_items.sequence"][0]
    assert spec["click_prices.sequence"][0] is items
    assert isinstance(items, type(Dim("x")))
    batch = spec["user"][0]
    assert spec["tags.sequence"][0] is batch and spec["tags.sequence"][1] is not items
    assert spec["click_items.sequence_length"] == {0: batch}


MIXED_DIN = """
train_input_path: "x" eval_input_path: "x" model_dir: "m"
data_config { batch_size: 6 dataset_type: ParquetDataset label_fields: "clk" num_workers: 0 }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 20 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 30 embedding_dim: 8
                               embedding_name: "item_emb" } }
feature_configs { id_feature { feature_name: "cate_id" num_buckets: 10 embedding_dim: 4
                               embedding_name: "cate_emb" } }
feature_configs {
  sequence_feature {
    sequence_name: "click_seq" sequence_length: 5 sequence_delim: ";"
    features { id_feature { feature_name: "item_id" num_buckets: 30 embedding_dim: 8
                            embedding_name: "item_emb" } }
    features { id_feature { feature_name: "cate_id" num_buckets: 10 embedding_dim: 4
                            embedding_name: "cate_emb" } }
  }
}
model_config {
  feature_groups { group_name: "deep" feature_names: ["user_id", "item_id"] group_type: DEEP }
  feature_groups {
    group_name: "seq" group_type: SEQUENCE
    feature_names: ["item_id", "cate_id", "click_seq__item_id", "click_seq__cate_id"]
  }
  multi_tower_din {
    towers { input: "deep" mlp { hidden_units: [8] } }
    din_towers { input: "seq" attn_mlp { hidden_units: [8] } }
    final { hidden_units: [4] }
  }
  metrics { auc {} }
  losses { binary_cross_entropy {} }
}
"""


def test_multi_tower_din_with_mixed_sequence_dims_exports_aot(tmp_path):
    """Sub-features of dims 8 and 4 in one sequence group: one table collection per dim."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tzrec.core.build import build_dataset, build_model
    from tzrec.core.build import create_features as build_features
    from tzrec.core.config import parse_pipeline_config
    from tzrec.export.artifact import load_exported
    from tzrec.export.exporter import write_artefact
    from tzrec.export.wrappers import export_modules
    from tzrec.models.inference import inputs_from_batch

    config = parse_pipeline_config(MIXED_DIN)
    rows = {
        "user_id": [1, 2, 3, 4, 5, 6],
        "item_id": [1, 2, 3, 4, 5, 6],
        "cate_id": [1, 2, 3, 1, 2, 3],
        "click_seq__item_id": ["1;2", "", "3;4;5;6;7", "8", "9;10;11", "12"],
        "click_seq__cate_id": ["1;2", "", "3;4;5;6;7", "8", "9;1;2", "3"],
        "clk": [0, 1, 0, 1, 1, 0],
    }
    pq.write_table(pa.table(rows), tmp_path / "d.parquet")
    features = build_features(config)
    ds = build_dataset(config, features, str(tmp_path / "d.parquet"), "eval")
    torch.manual_seed(0)
    model = build_model(config, ds.features)
    assert sorted(model.embedding_group.impls["__BASE__"].ec) == ["dim4", "dim8"]
    model.eval()
    model.set_is_inference(True)
    (module,) = export_modules(model)
    batch = next(iter(ds.make_dataloader()))
    inputs = inputs_from_batch(batch, module.features)
    with torch.no_grad():
        eager = model.predict(batch)
    (tmp_path / "out").mkdir()
    write_artefact(module, config, inputs, tmp_path / "out", True, tmp_path / "ckpt")
    got = load_exported(tmp_path / "out")(inputs)
    torch.testing.assert_close(got["probs"], eager["probs"], atol=1e-5, rtol=0)


def test_deep_group_sequence_encoders_run_in_the_exported_dense_part(tmp_path):
    """A DEEP group's sequence_groups + din_encoder: AOT (padded sub-group, dynamic length)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tzrec.core.build import build_dataset, build_model
    from tzrec.core.build import create_features as build_features
    from tzrec.core.config import parse_pipeline_config
    from tzrec.export.artifact import load_exported
    from tzrec.export.exporter import write_artefact
    from tzrec.export.wrappers import export_modules
    from tzrec.models.inference import inputs_from_batch

    text = MIXED_DIN.replace(
        'feature_groups { group_name: "deep" feature_names: ["user_id", "item_id"] '
        "group_type: DEEP }",
        'feature_groups { group_name: "deep" feature_names: ["user_id", "item_id"] '
        "group_type: DEEP\n"
        '  sequence_groups { group_name: "hist" feature_names: ["item_id", "cate_id", '
        '"click_seq__item_id", "click_seq__cate_id"] }\n'
        '  sequence_encoders { din_encoder { input: "hist" attn_mlp { hidden_units: [4] } } }\n'
        '  sequence_encoders { pooling_encoder { input: "hist" } } }',
    )
    config = parse_pipeline_config(text)
    rows = {
        "user_id": [1, 2, 3, 4, 5, 6] * 2,
        "item_id": [1, 2, 3, 4, 5, 6] * 2,
        "cate_id": [1, 2, 3, 1, 2, 3] * 2,
        "click_seq__item_id": ["1;2", "", "3;4;5;6;7", "8", "9;10;11", "12"]
        + ["1", "2;3", "", "4", "5", "6;7"],
        "click_seq__cate_id": ["1;2", "", "3;4;5;6;7", "8", "9;1;2", "3"]
        + ["1", "2;3", "", "4", "5", "6;7"],
        "clk": [0, 1, 0, 1, 1, 0] * 2,
    }
    pq.write_table(pa.table(rows), tmp_path / "d.parquet")
    features = build_features(config)
    ds = build_dataset(config, features, str(tmp_path / "d.parquet"), "eval")
    torch.manual_seed(0)
    model = build_model(config, ds.features)
    assert model.embedding_group.group_total_dim("deep") == 4 + 8 + 12 + 12
    model.eval()
    model.set_is_inference(True)
    (module,) = export_modules(model)
    first, second = list(ds.make_dataloader())
    (tmp_path / "out").mkdir()
    inputs = inputs_from_batch(first, module.features)
    write_artefact(module, config, inputs, tmp_path / "out", True, tmp_path / "ckpt")
    artefact = load_exported(tmp_path / "out")
    for batch in (first, second):  # longest history 5, then 2: the length axis is dynamic
        with torch.no_grad():
            eager = model.predict(batch)
        got = artefact(inputs_from_batch(batch, module.features))
        torch.testing.assert_close(got["probs"], eager["probs"], atol=1e-5, rtol=0)
