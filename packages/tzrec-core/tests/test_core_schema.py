"""The schema keeps TorchEasyRec's field numbers and defaults (wire and text compatibility)."""

import subprocess
import sys

import pytest

from tzrec.core.config import provided_by
from tzrec.core.schema import proto_include_dir
from tzrec.protos import data_pb2, feature_pb2, model_pb2, module_pb2, pipeline_pb2, plugin_pb2
from tzrec.protos.models import match_model_pb2


def number(message_cls, field):
    return message_cls.DESCRIPTOR.fields_by_name[field].number


@pytest.mark.parametrize(
    ("message_cls", "field", "expected"),
    [
        (pipeline_pb2.EasyRecConfig, "train_input_path", 1),
        (pipeline_pb2.EasyRecConfig, "feature_configs", 8),
        (pipeline_pb2.EasyRecConfig, "model_config", 9),
        (model_pb2.ModelConfig, "feature_groups", 1),
        (model_pb2.ModelConfig, "multi_tower_din", 103),
        (model_pb2.ModelConfig, "dlrm_hstu", 205),
        (model_pb2.ModelConfig, "dssm", 301),
        (model_pb2.ModelConfig, "hstu_match", 304),
        (model_pb2.ModelConfig, "kernel", 12),
        (data_pb2.DataConfig, "negative_sampler", 101),
        (data_pb2.DataConfig, "hard_negative_sampler_v2", 104),
        (data_pb2.DataConfig, "fg_mode", 20),
        (feature_pb2.FeatureConfig, "sequence_feature", 6),
        (feature_pb2.FeatureConfig, "sequence_id_feature", 101),
        (module_pb2.GRInputPreprocessor, "uih_preprocessor", 22),
        (module_pb2.GROutputPostprocessor, "l2norm_postprocessor", 31),
    ],
)
def test_field_numbers_match_upstream(message_cls, field, expected):
    assert number(message_cls, field) == expected


def test_upstream_defaults():
    data = data_pb2.DataConfig()
    assert data.batch_size == 1024
    assert data.num_workers == 8
    assert data.fg_encoded_multival_sep == "\x03"
    assert data.fg_mode == data_pb2.FG_NONE
    assert model_pb2.ModelConfig().kernel == model_pb2.PYTORCH
    assert model_pb2.ModelConfig().num_class == 1
    assert feature_pb2.SequenceFeature().sequence_delim == ";"
    assert match_model_pb2.HSTUMatch().temperature == 1.0
    assert [model_pb2.Kernel.Name(i) for i in range(3)] == ["TRITON", "PYTORCH", "CUTLASS"]


@pytest.mark.parametrize(
    "message_cls",
    [
        model_pb2.ModelConfig,
        data_pb2.DataConfig,
        feature_pb2.FeatureConfig,
        module_pb2.GRInputPreprocessor,
        module_pb2.GROutputPostprocessor,
    ],
)
def test_plugin_extension_range_is_open(message_cls):
    ranges = message_cls.DESCRIPTOR.extension_ranges
    assert any(lo <= 10000 and hi > 10000 for lo, hi in ranges)
    highest = max(f.number for f in message_cls.DESCRIPTOR.fields)
    assert highest < 10000


def test_provided_by_names_the_implementing_distribution():
    mc = model_pb2.ModelConfig()
    assert provided_by(mc, "hstu_match") == "tzrec-hstu"
    assert provided_by(mc, "dssm") == "tzrec-models"
    assert provided_by(data_pb2.DataConfig(), "negative_sampler") == "tzrec-data"
    assert provided_by(mc, "tdm") == "tzrec-tdm"
    assert provided_by(mc, "sid_rqvae") is None  # no distribution implements it
    assert provided_by(mc, "no_such_field") is None
    assert plugin_pb2.provided_by.number == 51000


def test_proto_include_dir_holds_the_sources():
    root = proto_include_dir()
    assert (root / "tzrec" / "protos" / "model.proto").is_file()
    out = subprocess.run(
        [sys.executable, "-m", "tzrec.core.cli", "plugins", "--proto-path"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(root)
