"""The supported-fields walk: every set config field is honoured by a package or refused.

The cases are generated from the installed packages' declaration lists and the proto
descriptors: each declared field is set (alone) on a config and must pass; each field of a
reachable message that nothing declares is set and must be refused naming its path.
"""

import logging
from collections import deque

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tzrec.core import plugins, support
from tzrec.core.config import parse_pipeline_config, validate_pipeline_config
from tzrec.core.errors import ConfigError, PluginError
from tzrec.core.hookspecs import hookimpl
from tzrec.core.support import (
    ALLOW_UNSUPPORTED_ENV,
    FieldSupport,
    Provider,
    check_supported_fields,
    field_support,
    walk_config,
)
from tzrec.protos import pipeline_pb2

ROOT = pipeline_pb2.EasyRecConfig


@pytest.fixture(scope="module")
def installed() -> FieldSupport:
    """The declarations of every installed first-party package, resolved."""
    return field_support()


def _paths(sup: FieldSupport) -> dict[str, list[FieldDescriptor]]:
    """For each message type: a shortest path of supported fields from EasyRecConfig."""
    paths: dict[str, list[FieldDescriptor]] = {ROOT.DESCRIPTOR.full_name: []}
    queue = deque([ROOT.DESCRIPTOR])
    while queue:
        desc = queue.popleft()
        for fd in desc.fields:
            mt = fd.message_type
            if mt is None or mt.GetOptions().map_entry or not sup.providers(fd):
                continue
            if mt.full_name not in paths:
                paths[mt.full_name] = [*paths[desc.full_name], fd]
                queue.append(mt)
    return paths


def _set(msg: Message, fd: FieldDescriptor) -> None:
    """Give ``fd`` a valid, positive value on ``msg``."""
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key_fd, value_fd = (fd.message_type.fields_by_name[k] for k in ("key", "value"))
        key = "x" if key_fd.cpp_type == FieldDescriptor.CPPTYPE_STRING else 1
        if value_fd.message_type is not None:
            getattr(msg, fd.name)[key].SetInParent()
        else:
            getattr(msg, fd.name)[key] = _scalar(value_fd)
        return
    if fd.message_type is not None:
        if fd.is_repeated:
            getattr(msg, fd.name).add()
        else:
            getattr(msg, fd.name).SetInParent()
        return
    value = _scalar(fd)
    if fd.is_repeated:
        getattr(msg, fd.name).append(value)
    else:
        setattr(msg, fd.name, value)


def _scalar(fd: FieldDescriptor) -> object:
    if fd.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        return fd.enum_type.values[-1].number
    if fd.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return True
    if fd.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return b"x" if fd.type == FieldDescriptor.TYPE_BYTES else "x"
    if fd.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return 0.5
    return 1


def _config_setting(path: list[FieldDescriptor], fd: FieldDescriptor) -> tuple[Message, str]:
    """A config (or the path's root message) where only ``path`` + ``fd`` is set."""
    root_desc = path[0].containing_type if path else fd.containing_type
    msg = root = ROOT() if root_desc is ROOT.DESCRIPTOR else _new(root_desc)
    names = []
    for step in path:
        if step.is_repeated:
            msg = getattr(msg, step.name).add()
            names.append(f"{step.name}[0]")
        else:
            msg = getattr(msg, step.name)
            names.append(step.name)
    _set(msg, fd)
    names.append(fd.name)
    return root, ".".join(names)


def _new(desc):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)()


def _cases(sup: FieldSupport):
    """(config, path, field, supported) for every field of every reachable message."""
    roots = _paths(sup)
    # declared messages no supported field leads to yet (e.g. sequence encoders): walked
    # from the message itself
    for full in set(sup.owners) - set(roots):
        roots[full] = []
    pool = ROOT.DESCRIPTOR.file.pool
    for full, path in sorted(roots.items()):
        for fd in pool.FindMessageTypeByName(full).fields:
            config, where = _config_setting(path, fd)
            yield config, where, fd, bool(sup.providers(fd))


def test_every_first_party_declaration_names_a_real_field(installed):
    assert len(installed.fields) + len(installed.messages) > 300
    dists = {p.distribution for ps in installed.fields.values() for p in ps}
    assert {"tzrec-core", "tzrec-data", "tzrec-models", "tzrec-hstu", "tzrec-export"} <= dists


def test_each_declared_field_set_alone_is_accepted(installed):
    checked = 0
    for config, where, _fd, supported in _cases(installed):
        if not supported:
            continue
        findings = list(walk_config(config, installed))
        assert findings == [], f"{where}: {findings}"
        checked += 1
    assert checked > 300


def test_each_undeclared_field_set_alone_is_refused_naming_its_path(installed):
    refused = 0
    for config, where, fd, supported in _cases(installed):
        if supported or support._provider_missing(fd, installed):
            continue
        findings = list(walk_config(config, installed))
        assert [(f.kind, f.path) for f in findings] == [("unsupported", where)], where
        assert "not supported by tzrec-" in findings[0].reason, findings[0]
        refused += 1
    assert refused > 100


def test_each_size_declared_positive_refuses_zero(installed):
    paths = _paths(installed)
    pool = ROOT.DESCRIPTOR.file.pool
    checked = 0
    for name in sorted(installed.positive):
        message_name, field_name = name.rsplit(".", 1)
        desc = pool.FindMessageTypeByName(message_name)
        fd = desc.fields_by_name[field_name]
        config, where = _config_setting(paths.get(message_name, []), fd)
        holder = config
        for part in where.split(".")[:-1]:
            base, _, idx = part.partition("[")
            holder = getattr(holder, base)
            holder = holder[0] if idx else holder
        if fd.is_repeated:
            getattr(holder, fd.name)[0] = 0
        else:
            setattr(holder, fd.name, 0)
        findings = list(walk_config(config, installed))
        assert [(f.kind, f.path) for f in findings] == [("invalid", where)], name
        assert findings[0].reason == f"must be > 0, got {[0] if fd.is_repeated else 0}"
        checked += 1
    assert checked >= 20


MINIMAL = """
train_input_path: "a" eval_input_path: "b" model_dir: "m"
train_config { num_steps: 1 }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 10 embedding_dim: 4 } }
model_config {
  feature_groups { group_name: "all" feature_names: "user_id" group_type: DEEP }
  multi_tower { towers { input: "all" } final { hidden_units: 4 } }
}
"""


def _fake_support() -> FieldSupport:
    core = Provider("tzrec-core", "9.9")
    return FieldSupport.from_declarations(
        [
            ("EasyRecConfig.train_config", "core", core),
            ("TrainConfig.num_steps>0", "core", core),
            ("TrainConfig.sparse_optimizer", "core", core),
        ],
        [core],
    )


def test_unsupported_field_error_names_path_package_and_version():
    config = parse_pipeline_config('train_config { num_steps: 2 mixed_precision: "BF16" }')
    with pytest.raises(ConfigError) as err:
        check_supported_fields(config, "p.config", support=_fake_support())
    msg = str(err.value)
    assert msg.startswith(
        "p.config: train_config.mixed_precision: not supported by tzrec-core 9.9; remove it"
    )
    assert "--allow_unsupported_fields" in msg and ALLOW_UNSUPPORTED_ENV in msg
    assert "\n" not in msg


def test_several_unsupported_fields_are_one_line_with_a_count():
    config = parse_pipeline_config(
        'model_dir: "m" train_config { gradient_accumulation_steps: 4 mixed_precision: "FP16" '
        "grad_scaler { init_scale: 2 } }"
    )
    with pytest.raises(ConfigError) as err:
        check_supported_fields(config, "p", support=_fake_support())
    msg = str(err.value)
    assert "model_dir: not supported by tzrec-core 9.9 (also: train_config.mixed_precision" in msg
    assert "train_config.gradient_accumulation_steps" in msg
    assert "train_config.grad_scaler," in msg  # its subtree is not listed field by field
    assert "init_scale" not in msg


def test_allow_flag_and_env_turn_the_refusal_into_one_warning_per_field(monkeypatch, caplog):
    config = parse_pipeline_config('train_config { mixed_precision: "BF16" }')
    with caplog.at_level(logging.WARNING, logger="tzrec.core.support"):
        warned = check_supported_fields(config, "p", True, support=_fake_support())
    assert [f.path for f in warned] == ["train_config.mixed_precision"]
    assert "train_config.mixed_precision: not supported by tzrec-core 9.9" in caplog.text
    monkeypatch.setenv(ALLOW_UNSUPPORTED_ENV, "1")
    assert len(check_supported_fields(config, "p", support=_fake_support())) == 1
    monkeypatch.setenv(ALLOW_UNSUPPORTED_ENV, "0")
    with pytest.raises(ConfigError, match="mixed_precision: not supported"):
        check_supported_fields(config, "p", support=_fake_support())


def test_sizes_are_errors_even_when_unsupported_fields_are_allowed():
    config = parse_pipeline_config("train_config { num_steps: 0 }")
    with pytest.raises(ConfigError, match=r"^p: train_config.num_steps: must be > 0, got 0$"):
        check_supported_fields(config, "p", True, support=_fake_support())


def test_validate_runs_the_walk_on_the_installed_packages(monkeypatch):
    monkeypatch.delenv(ALLOW_UNSUPPORTED_ENV, raising=False)
    config = parse_pipeline_config(MINIMAL)
    validate_pipeline_config(config, "p.config")
    config.train_config.is_profiling = True
    with pytest.raises(ConfigError, match=r"train_config.is_profiling: not supported by"):
        validate_pipeline_config(config, "p.config")
    validate_pipeline_config(config, "p.config", allow_unsupported_fields=True)


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        ("data_config { batch_size: 0 }", "data_config.batch_size"),
        (
            "feature_configs { id_feature { feature_name: 'x' num_buckets: 3 embedding_dim: 0 } }",
            "feature_configs[1].id_feature.embedding_dim",
        ),
        (
            "data_config { negative_sampler { input_path: 'i' num_sample: 0 } }",
            "data_config.negative_sampler.num_sample",
        ),
        (
            "feature_configs { sequence_feature { sequence_name: 's' sequence_length: 0 "
            "features { id_feature { feature_name: 'y' num_buckets: 3 embedding_dim: 2 } } } }",
            "feature_configs[1].sequence_feature.sequence_length",
        ),
    ],
)
def test_zero_sizes_are_refused_at_validation_naming_the_field(edit, path):
    config = parse_pipeline_config(MINIMAL + edit)
    with pytest.raises(ConfigError) as err:
        validate_pipeline_config(config, "p.config")
    assert str(err.value).startswith(f"p.config: {path}: must be > 0, got 0")


def test_zero_hidden_unit_is_refused_naming_the_list():
    config = parse_pipeline_config(MINIMAL.replace("hidden_units: 4", "hidden_units: [4, 0]"))
    with pytest.raises(ConfigError) as err:
        validate_pipeline_config(config, "p.config")
    assert str(err.value) == (
        "p.config: model_config.multi_tower.final.hidden_units: must be > 0, got [4, 0]"
    )


def _declaring_plugin(*names):
    import types

    module = types.ModuleType("declaring_plugin")

    def register_supported_fields(declare):
        declare(*names)

    module.register_supported_fields = hookimpl(register_supported_fields)
    return module


def test_a_plugin_declaration_makes_its_field_supported():
    manager = plugins.get_plugin_manager()
    config = parse_pipeline_config(MINIMAL + "model_config { use_pareto_loss_weight: true }")
    with pytest.raises(ConfigError, match="use_pareto_loss_weight: not supported by tzrec-models"):
        validate_pipeline_config(config, "p.config")
    manager.add_plugin(
        _declaring_plugin("ModelConfig.use_pareto_loss_weight"), "pareto", "tzrec-pareto", "1.0"
    )
    try:
        validate_pipeline_config(config, "p.config")
        assert field_support().providers(
            config.model_config.DESCRIPTOR.fields_by_name["use_pareto_loss_weight"]
        ) == [Provider("tzrec-pareto", "1.0")]
    finally:
        manager.remove_plugin("pareto")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("TrainConfig.no_such_field", "declares config field 'TrainConfig.no_such_field'"),
        ("NoSuchMessage.*", "declares config field 'NoSuchMessage.*'"),
        ("TrainConfig.fine_tune_checkpoint>0", "'>0' needs a numeric field"),
        ("TrainConfig.*>0", "'>0' applies to one field"),
    ],
)
def test_a_bad_declaration_names_the_plugin(name, expected):
    manager = plugins.get_plugin_manager()
    manager.add_plugin(_declaring_plugin(name), "typo", "tzrec-typo", "1.0")
    try:
        with pytest.raises(PluginError) as err:
            field_support()
        assert "plugin 'typo' from tzrec-typo" in str(err.value)
        assert expected in str(err.value)
    finally:
        manager.remove_plugin("typo")


def test_a_field_of_an_uninstalled_provider_is_left_to_the_install_hint():
    installed_only_core = FieldSupport.from_declarations(
        [("EasyRecConfig.model_config", "core", Provider("tzrec-core"))], [Provider("tzrec-core")]
    )
    config = parse_pipeline_config('model_config { hstu_match { } kernel: TRITON } model_dir: "m"')
    findings = [(f.kind, f.path) for f in walk_config(config, installed_only_core)]
    assert findings == [
        ("unsupported", "model_dir"),
        ("unsupported", "model_config.kernel"),
        ("provider_missing", "model_config.hstu_match"),
    ]
    # nothing is refused before the plugin lookup says: pip install tzrec-hstu
    assert check_supported_fields(config, "p", support=installed_only_core) == []


def test_cli_flag_allows_unsupported_fields_and_refuses_a_zero_batch_size(tmp_path, capsys):
    from tzrec.core.cli import main

    path = tmp_path / "p.config"
    path.write_text(
        'train_input_path: "a" eval_input_path: "b" model_dir: "m"\n'
        "train_config { is_profiling: true }\n"
    )
    assert main(["train", "--pipeline_config_path", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tzrec: error: {path}: train_config.is_profiling: not supported by")
    assert "\n" not in err
    flag = "--allow_unsupported_fields"
    assert main(["train", "--pipeline_config_path", str(path), flag]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "train_config.is_profiling: not supported by" in err[0]  # the warning
    assert err[-1].startswith(f"tzrec: error: {path}: model_config sets no model")
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--batch_size", "0", "--checkpoint_path", str(tmp_path)])
    assert exit_.value.code == 2
    assert "argument --batch_size: must be > 0, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit",
    [
        "model_config.hstu_match.user_tower.hstu.stu.num_heads",
        "model_config.hstu_match.user_tower.max_seq_len",
        "model_config.hstu_match.user_tower.hstu.stu.embedding_dim",
        "data_config.negative_sampler.num_sample",
        "feature_configs[3].sequence_feature.sequence_length",
        "feature_configs[0].id_feature.embedding_dim",
    ],
)
def test_zero_sizes_of_the_hstu_example_are_refused_naming_the_field(edit, hstu_config_path):
    from tzrec.core.config import edit_config, load_pipeline_config

    source = str(hstu_config_path)
    config = load_pipeline_config(source)
    validate_pipeline_config(config, source)
    edit_config(config, {edit: 0})
    with pytest.raises(ConfigError) as err:
        validate_pipeline_config(config, source)
    assert str(err.value) == f"{source}: {edit}: must be > 0, got 0"


def _extension_config():
    """A config using a plugin extension of ModelConfig defined at runtime."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.Default()
    name = "support_ext_test.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        fdp = descriptor_pb2.FileDescriptorProto(
            name=name, package="support_ext_test", syntax="proto2"
        )
        fdp.dependency.append("tzrec/protos/model.proto")
        msg = fdp.message_type.add(name="ExtModel")
        msg.field.add(name="width", number=1, type=13, label=1)  # optional uint32
        msg.field.add(name="unread", number=2, type=13, label=1)
        fdp.extension.add(
            name="ext_model",
            number=10078,
            type=11,
            label=1,
            type_name=".support_ext_test.ExtModel",
            extendee=".tzrec.protos.ModelConfig",
        )
        pool.Add(fdp)
    message_factory.GetMessageClassesForFiles([name], pool)
    return parse_pipeline_config(
        "model_config { [support_ext_test.ext_model] { width: 0 unread: 3 } }"
    )


def test_plugin_extension_fields_are_walked_with_the_plugin_declarations():
    config = _extension_config()
    models = Provider("tzrec-models", "1")
    base = [("EasyRecConfig.model_config", "models", models)]
    undeclared = FieldSupport.from_declarations(base, [models])
    (finding,) = walk_config(config, undeclared)
    assert finding.path == "model_config.[support_ext_test.ext_model]"
    assert "extension from proto package 'support_ext_test'" in finding.reason
    ext = Provider("tzrec-ext", "2.0")
    declared = FieldSupport.from_declarations(
        [
            *base,
            ("support_ext_test.ext_model", "ext", ext),
            ("support_ext_test.ExtModel.width>0", "ext", ext),
        ],
        [models, ext],
    )
    assert [str(f) for f in walk_config(config, declared)] == [
        "model_config.[support_ext_test.ext_model].width: must be > 0, got 0",
        "model_config.[support_ext_test.ext_model].unread: not supported by tzrec-ext 2.0",
    ]
