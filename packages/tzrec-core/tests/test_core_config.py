import json
import logging

import pytest
from google.protobuf import text_format

from tzrec.core.config import (
    edit_config,
    load_pipeline_config,
    parse_pipeline_config,
    save_message,
    validate_pipeline_config,
)
from tzrec.core.errors import ConfigError
from tzrec.protos import data_pb2, model_pb2, pipeline_pb2

MINIMAL = """
train_input_path: "train.parquet"
eval_input_path: "eval.parquet"
model_dir: "m"
data_config { batch_size: 8 dataset_type: ParquetDataset label_fields: "clk" }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 10 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 10 embedding_dim: 4 } }
feature_configs {
  sequence_feature {
    sequence_name: "click_seq"
    sequence_length: 5
    features { id_feature { feature_name: "item_id" num_buckets: 10 embedding_dim: 4 } }
  }
}
model_config {
  feature_groups { group_name: "user" feature_names: "user_id" group_type: DEEP }
  feature_groups { group_name: "item" feature_names: "item_id" group_type: DEEP }
  feature_groups { group_name: "seq" feature_names: "click_seq__item_id" group_type: SEQUENCE }
  dssm {
    user_tower { input: "user" mlp { hidden_units: [8] } }
    item_tower { input: "item" mlp { hidden_units: [8] } }
  }
}
"""


def write(tmp_path, text, name="pipeline.config"):
    p = tmp_path / name
    p.write_text(text)
    return p


# -- loading -----------------------------------------------------------------------------


def test_text_config_loads_with_upstream_defaults(tmp_path):
    config = load_pipeline_config(write(tmp_path, MINIMAL))
    assert config.model_config.WhichOneof("model") == "dssm"
    assert config.data_config.batch_size == 8
    assert config.data_config.num_workers == 8  # upstream default
    assert config.model_config.dssm.temperature == 1.0
    assert config.model_config.kernel == model_pb2.PYTORCH


def test_json_config_loads_the_same_message(tmp_path):
    text_config = load_pipeline_config(write(tmp_path, MINIMAL))
    from google.protobuf import json_format

    as_json = json_format.MessageToJson(text_config, preserving_proto_field_name=True)
    json_config = load_pipeline_config(write(tmp_path, as_json, "pipeline.json"))
    assert json_config == text_config


def test_example_configs_in_upstream_layout_parse_and_validate(hstu_config_path, dssm_config_path):
    hstu = load_pipeline_config(hstu_config_path)
    validate_pipeline_config(hstu, str(hstu_config_path))
    assert hstu.model_config.hstu_match.user_tower.hstu.stu.num_heads == 2
    uih = hstu.model_config.hstu_match.user_tower.hstu.input_preprocessor.uih_preprocessor
    assert list(uih.action_encoder.simple_action_encoder.action_weights) == [1, 2, 4, 8]
    dssm = load_pipeline_config(dssm_config_path)
    validate_pipeline_config(dssm, str(dssm_config_path))
    assert list(dssm.data_config.negative_sampler.attr_fields) == ["item_id", "cate_id", "brand"]


def test_parse_error_names_file_line_and_column(tmp_path):
    bad = MINIMAL.replace("batch_size: 8", "batch_sise: 8")
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:5:")
    assert "batch_sise" in msg and "DataConfig" in msg
    assert "\n" not in msg


def test_bad_enum_value_is_one_line_with_location(tmp_path):
    path = write(tmp_path, MINIMAL.replace("ParquetDataset", "ParquetDatasett"))
    with pytest.raises(ConfigError, match=r":5:\d+: .*ParquetDatasett"):
        load_pipeline_config(path)


def test_invalid_json_names_the_file(tmp_path):
    path = write(tmp_path, '{"model_dir": "m", "nope": 1}', "p.json")
    with pytest.raises(ConfigError, match=r"p\.json: .*nope"):
        load_pipeline_config(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="pipeline config not found"):
        load_pipeline_config(tmp_path / "absent.config")


def test_fg_dag_config_is_read_as_columns_with_a_warning(tmp_path, caplog):
    path = write(tmp_path, MINIMAL.replace("batch_size: 8", "batch_size: 8 fg_mode: FG_DAG"))
    with caplog.at_level(logging.WARNING):
        config = load_pipeline_config(path)
    assert config.data_config.fg_mode == data_pb2.FG_DAG
    assert "FG_DAG" in caplog.text and "FG_NONE" in caplog.text


def test_deprecated_fg_encoded_maps_to_fg_mode_like_upstream():
    text = MINIMAL.replace("batch_size: 8", "batch_size: 8 fg_encoded: true")
    assert parse_pipeline_config(text).data_config.fg_mode == data_pb2.FG_NONE
    text = MINIMAL.replace("batch_size: 8", "batch_size: 8 fg_encoded: false fg_threads: 2")
    assert parse_pipeline_config(text).data_config.fg_mode == data_pb2.FG_DAG
    text = MINIMAL.replace("batch_size: 8", "batch_size: 8 fg_encoded: false fg_threads: 0")
    assert parse_pipeline_config(text).data_config.fg_mode == data_pb2.FG_NORMAL


def test_save_round_trips_and_leaves_no_temp_files(tmp_path):
    config = parse_pipeline_config(MINIMAL)
    out = tmp_path / "sub" / "saved.config"
    save_message(config, out)
    assert load_pipeline_config(out) == config
    assert [p.name for p in out.parent.iterdir()] == ["saved.config"]


# -- validation --------------------------------------------------------------------------


def test_unknown_feature_in_group_is_named_with_a_suggestion():
    config = parse_pipeline_config(MINIMAL.replace('"user_id" group_type', '"usr_id" group_type'))
    with pytest.raises(ConfigError) as err:
        validate_pipeline_config(config, "p.config")
    assert "feature_groups[0] ('user')" in str(err.value)
    assert "'usr_id' is not defined" in str(err.value)
    assert "did you mean user_id" in str(err.value)


def test_sequence_sub_feature_is_named_sequence__feature():
    config = parse_pipeline_config(MINIMAL.replace("click_seq__item_id", "item_id_seq"))
    with pytest.raises(ConfigError, match="'item_id_seq' is not defined"):
        validate_pipeline_config(config)


def test_duplicate_feature_names_are_rejected():
    text = MINIMAL + 'feature_configs { raw_feature { feature_name: "user_id" } }'
    with pytest.raises(ConfigError, match="'user_id' is already defined by feature_configs"):
        validate_pipeline_config(parse_pipeline_config(text))


def test_duplicate_group_names_are_rejected():
    config = parse_pipeline_config(MINIMAL.replace('group_name: "item"', 'group_name: "user"'))
    with pytest.raises(ConfigError, match="group_name is used by another group"):
        validate_pipeline_config(config)


def test_config_without_a_model_lists_the_choices():
    config = parse_pipeline_config(MINIMAL)
    config.model_config.ClearField("dssm")
    with pytest.raises(ConfigError, match=r"sets no model; expected one of .*hstu_match"):
        validate_pipeline_config(config)


def test_missing_input_paths_are_listed():
    config = parse_pipeline_config(MINIMAL)
    config.ClearField("model_dir")
    config.ClearField("eval_input_path")
    with pytest.raises(ConfigError, match="missing required field.*eval_input_path, model_dir"):
        validate_pipeline_config(config)
    validate_pipeline_config(config, require_input_paths=False)


def test_feature_without_a_type_is_reported():
    config = parse_pipeline_config(MINIMAL)
    config.feature_configs.add()
    with pytest.raises(ConfigError, match=r"feature_configs\[3\]: sets no feature type"):
        validate_pipeline_config(config)


# -- edit_config -------------------------------------------------------------------------


@pytest.fixture
def config():
    return parse_pipeline_config(MINIMAL)


def test_edit_plain_field_converts_type(config):
    edit_config(config, {"data_config.batch_size": "32", "model_config.dssm.temperature": 0.1})
    assert config.data_config.batch_size == 32
    assert config.model_config.dssm.temperature == pytest.approx(0.1)


def test_edit_by_index_range_and_all(config):
    edit_config(config, {"feature_configs[0].id_feature.embedding_dim": 7})
    assert [f.id_feature.embedding_dim for f in config.feature_configs[:2]] == [7, 4]
    edit_config(config, {"feature_configs[-2].id_feature.embedding_dim": 9})
    assert config.feature_configs[1].id_feature.embedding_dim == 9
    edit_config(config, {"feature_configs[0:2].id_feature.num_buckets": 99})
    assert [f.id_feature.num_buckets for f in config.feature_configs[:2]] == [99, 99]
    edit_config(config, {"model_config.feature_groups[:].group_type": "WIDE"})
    assert {g.group_type for g in config.model_config.feature_groups} == {model_pb2.WIDE}


def test_edit_by_bracket_selector_looks_inside_the_oneof(config):
    edit_config(config, {"feature_configs[feature_name=item_id].id_feature.embedding_dim": 12})
    assert config.feature_configs[1].id_feature.embedding_dim == 12
    assert config.feature_configs[0].id_feature.embedding_dim == 4
    # the oneof member can be skipped in the path too
    edit_config(config, {"feature_configs[feature_name=user_id].embedding_dim": 3})
    assert config.feature_configs[0].id_feature.embedding_dim == 3


def test_edit_by_comparison_selector(config):
    edit_config(config, {"feature_configs[:2].id_feature.embedding_dim": 1})
    config.feature_configs[1].id_feature.embedding_dim = 8
    edit_config(config, {"feature_configs[embedding_dim>=5].id_feature.num_buckets": 55})
    assert [f.id_feature.num_buckets for f in config.feature_configs[:2]] == [10, 55]


def test_edit_several_keys_at_once(config):
    edit_config(config, {"data_config.batch_size;model_dir": "16;out"})
    assert (config.data_config.batch_size, config.model_dir) == (16, "out")


def test_edit_enum_repeated_and_message_values(config):
    edit_config(
        config,
        {
            "model_config.feature_groups[group_name=seq].group_type": "JAGGED_SEQUENCE",
            "data_config.label_fields": '["a", "b"]',
            "model_config.dssm.user_tower.mlp": "{hidden_units: [16, 8] activation: 'nn.ReLU'}",
            "model_config.dssm.item_tower.mlp": {"hidden_units": [5]},
        },
    )
    assert config.model_config.feature_groups[2].group_type == model_pb2.JAGGED_SEQUENCE
    assert list(config.data_config.label_fields) == ["a", "b"]
    assert list(config.model_config.dssm.user_tower.mlp.hidden_units) == [16, 8]
    assert config.model_config.dssm.user_tower.mlp.activation == "nn.ReLU"
    assert list(config.model_config.dssm.item_tower.mlp.hidden_units) == [5]


def test_edit_bool_accepts_upstream_spellings(config):
    edit_config(config, {"data_config.shuffle": "True"})
    assert config.data_config.shuffle is True
    edit_config(config, {"data_config.shuffle": "false"})
    assert config.data_config.shuffle is False


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ({"data_config.batch_sise": 1}, "DataConfig has no field 'batch_sise'"),
        ({"data_config.batch_size": "x"}, "'x' is not an integer for field 'batch_size'"),
        ({"data_config.shuffle": "maybe"}, "'maybe' is not a bool"),
        ({"data_config.dataset_type": "Parquet"}, "expected one of OdpsDataset"),
        ({"feature_configs[7].id_feature.embedding_dim": 1}, "index [7] out of range"),
        ({"feature_configs.id_feature.embedding_dim": 1}, "'feature_configs' is repeated"),
        ({"feature_configs[feature_name=x].embedding_dim": 1}, "matches no element"),
        ({"data_config[0].batch_size": 1}, "not a repeated field"),
        ({"data_config.batch_size.x": 1}, "'batch_size' is not a message"),
        ({"a;b": "1"}, "2 keys but 1 ';'-separated values"),
        ({"model_config.dssm.user_tower.mlp": "{hidden_units: x}"}, "not a valid MLP"),
        ({"train_config.num_steps": -1}, "not valid for field 'num_steps': Value out of range"),
        ({"data_config.label_fields": "[1, 2"}, "not valid for field 'label_fields'"),
        ({"model_config.feature_groups[feature_names=a].group_name": "x"}, "compares a repeated"),
    ],
)
def test_edit_errors_are_one_line_naming_the_key(config, edits, expected):
    with pytest.raises(ConfigError) as err:
        edit_config(config, edits)
    msg = str(err.value)
    assert msg.startswith("edit_config_json key '")
    assert expected in msg
    assert "\n" not in msg


def test_load_applies_edits(tmp_path):
    path = write(tmp_path, MINIMAL)
    config = load_pipeline_config(path, edits={"train_config.num_epochs": 3})
    assert config.train_config.num_epochs == 3


def test_edited_config_survives_text_round_trip(config):
    edit_config(config, json.loads('{"model_config.dssm.temperature": 0.5}'))
    again = pipeline_pb2.EasyRecConfig()
    text_format.Parse(text_format.MessageToString(config), again)
    assert again.model_config.dssm.temperature == 0.5


@pytest.mark.parametrize(
    ("text", "where", "names"),
    [
        ("model_config { dssm { } multi_tower { } }", "1:25", "dssm and multi_tower"),
        (
            "model_config { dssm { } }\nmodel_config { multi_tower { } }",
            "2:16",
            "dssm and multi_tower",
        ),
        (
            "data_config { negative_sampler { num_sample: 1 } hard_negative_sampler { } }",
            "1:50",
            "negative_sampler and hard_negative_sampler",
        ),
    ],
)
def test_two_choices_of_one_oneof_are_refused_at_parse_time(tmp_path, text, where, names):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{where}: ")
    assert f"sets both {names}" in msg and "\n" not in msg
    if "model_config" in text:
        assert "but a config holds one model" in msg


def test_a_oneof_member_given_twice_merges_and_a_repeated_scalar_keeps_the_last():
    config = parse_pipeline_config(
        "train_config { num_steps: 1 num_steps: 2 }\n"
        "model_config { dssm { output_dim: 4 } dssm { temperature: 0.5 } }"
    )
    assert config.train_config.num_steps == 2
    assert config.model_config.WhichOneof("model") == "dssm"
    assert (config.model_config.dssm.output_dim, config.model_config.dssm.temperature) == (4, 0.5)


def test_two_models_in_json_are_refused():
    with pytest.raises(ConfigError, match=r"^p.json: .*multiple \"model\" oneof fields"):
        parse_pipeline_config('{"model_config": {"dssm": {}, "multi_tower": {}}}', "p.json", "json")


def test_a_builtin_model_and_a_plugin_model_extension_are_two_models():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.Default()
    name = "two_models_ext_test.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        fdp = descriptor_pb2.FileDescriptorProto(
            name=name, package="two_models_ext_test", syntax="proto2"
        )
        fdp.dependency.append("tzrec/protos/model.proto")
        fdp.message_type.add(name="ExtModel")
        fdp.extension.add(
            name="ext_model",
            number=10077,
            type=11,
            label=1,
            type_name=".two_models_ext_test.ExtModel",
            extendee=".tzrec.protos.ModelConfig",
        )
        pool.Add(fdp)
    message_factory.GetMessageClassesForFiles([name], pool)
    for text in (
        "model_config { dssm { } [two_models_ext_test.ext_model] { } }",
        "model_config { [two_models_ext_test.ext_model] { } dssm { } }",
    ):
        with pytest.raises(ConfigError) as err:
            parse_pipeline_config(text, "p.config")
        assert "ModelConfig sets both" in str(err.value)
        assert "[two_models_ext_test.ext_model]" in str(err.value)
    as_json = '{"model_config": {"dssm": {}, "[two_models_ext_test.ext_model]": {}}}'
    with pytest.raises(ConfigError, match=r"^p.json: ModelConfig sets both dssm and \[two_"):
        parse_pipeline_config(as_json, "p.json", "json")
