"""Which rows the exporter traces and checks each artefact with."""

from tzrec.export.exporter import _input_for, target_config
from tzrec.protos import pipeline_pb2


def config(sampler_path: str = "") -> pipeline_pb2.EasyRecConfig:
    cfg = pipeline_pb2.EasyRecConfig(train_input_path="train.parquet", eval_input_path="e.parquet")
    if sampler_path:
        cfg.data_config.negative_sampler.input_path = sampler_path
    return cfg


def test_item_input_path_goes_to_the_item_tower_only():
    cfg = config()
    assert _input_for(cfg, "item_tower", "items.parquet") == ("items.parquet", "--item_input_path")
    assert _input_for(cfg, "user_tower", "items.parquet")[0] == "train.parquet"
    assert _input_for(cfg, "", "items.parquet")[0] == "train.parquet"


def test_item_tower_falls_back_to_a_parquet_sampler_table_then_the_training_data():
    assert _input_for(config("items.parquet"), "item_tower", None)[0] == "items.parquet"
    # a text node table is not readable by the tower's dataset: training rows instead
    assert _input_for(config("items.txt"), "item_tower", None)[0] == "train.parquet"
    assert _input_for(config("items.parquet"), "user_tower", None)[0] == "train.parquet"


def test_target_config_drops_the_sampler_and_keeps_only_the_artefacts_features():
    from tzrec.data import create_features
    from tzrec.protos import model_pb2

    cfg = config("items.parquet")
    for name in ("user_id", "item_id"):
        fc = cfg.feature_configs.add()
        fc.id_feature.feature_name = name
        fc.id_feature.num_buckets = 10
        fc.id_feature.embedding_dim = 4

    class Module:
        features = [f for f in create_features(cfg.feature_configs) if f.name == "item_id"]
        feature_groups = [
            model_pb2.FeatureGroupConfig(group_name="item", feature_names=["item_id"])
        ]

    out = target_config(cfg, Module())
    assert out.data_config.WhichOneof("sampler") is None
    assert [fc.id_feature.feature_name for fc in out.feature_configs] == ["item_id"]
    assert [g.group_name for g in out.model_config.feature_groups] == ["item"]
    # the source config is untouched
    assert cfg.data_config.WhichOneof("sampler") == "negative_sampler"


def test_a_model_without_the_export_contract_is_refused_in_one_line():
    import pytest
    import torch

    from tzrec.core.errors import ConfigError
    from tzrec.export.wrappers import export_modules

    class Plain(torch.nn.Module):
        def forward(self, batch):
            return {}

    with pytest.raises(
        ConfigError, match="Plain cannot be exported: it needs an `embedding_group`"
    ):
        export_modules(Plain())
