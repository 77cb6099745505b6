import types

import pytest

from tzrec.core import plugins
from tzrec.core.builtin_commands import resolve_model
from tzrec.core.config import parse_pipeline_config
from tzrec.core.errors import PluginError
from tzrec.core.hookspecs import hookimpl


class ToyModel:
    """A stand-in model class for registry tests."""


def make_plugin(**hooks):
    """A plugin module whose hooks register the given {kind: {name: obj}}."""
    module = types.ModuleType("toy_plugin")
    for kind, entries in hooks.items():

        def impl(register, entries=entries):
            for name, obj in entries.items():
                register(name, obj)

        impl.__name__ = f"register_{kind}"
        setattr(module, impl.__name__, hookimpl(impl))
    return module


def test_first_party_plugins_load_through_entry_points():
    manager = plugins.load_plugins()
    by_dist = {p.distribution: p for p in manager.plugins()}
    assert {"tzrec-core", "tzrec-export", "tzrec-hstu", "tzrec-data"} <= set(by_dist)
    assert by_dist["tzrec-hstu"].version == "0.1.0"
    reg = manager.registry("models")["hstu_match"]
    assert (reg.distribution, reg.plugin) == ("tzrec-hstu", "hstu")
    assert {"train", "eval", "run", "plugins", "export", "predict"} <= set(
        manager.registry("commands")
    )


def test_load_plugins_is_idempotent():
    first = plugins.load_plugins()
    count = len(first.plugins())
    assert plugins.load_plugins() is first
    assert len(first.plugins()) == count


def test_registered_object_is_returned_by_name():
    manager = plugins.get_plugin_manager()
    manager.add_plugin(make_plugin(models={"toy": ToyModel}), "toy", "toy-dist", "1.0")
    assert manager.get("models", "toy") is ToyModel


def test_lazy_reference_is_imported_on_first_use():
    manager = plugins.get_plugin_manager()
    manager.add_plugin(make_plugin(losses={"lazy": "collections:OrderedDict"}), "lazy", "lazy-dist")
    reg = manager.registry("losses")["lazy"]
    assert reg.target == "collections:OrderedDict"
    import collections

    assert manager.get("losses", "lazy") is collections.OrderedDict


def test_broken_lazy_reference_names_plugin_and_target():
    manager = plugins.get_plugin_manager()
    manager.add_plugin(make_plugin(metrics={"bad": "no_such_module_xyz:Thing"}), "b", "bad-dist")
    with pytest.raises(PluginError) as err:
        manager.get("metrics", "bad")
    msg = str(err.value)
    assert "metric 'bad' from bad-dist" in msg and "no_such_module_xyz:Thing" in msg


def test_duplicate_name_error_names_both_distributions():
    manager = plugins.get_plugin_manager()
    manager.add_plugin(make_plugin(models={"twin": ToyModel}), "one", "dist-one", "1")
    manager.add_plugin(make_plugin(models={"twin": object}), "two", "dist-two", "1")
    with pytest.raises(PluginError) as err:
        manager.registry("models")
    msg = str(err.value)
    assert "model 'twin' is registered by both" in msg
    assert "dist-one" in msg and "dist-two" in msg


def test_duplicate_plugin_name_is_rejected():
    manager = plugins.get_plugin_manager()
    manager.add_plugin(make_plugin(), "same", "dist-a")
    with pytest.raises(PluginError, match="'same' is used by both dist-a and dist-b"):
        manager.add_plugin(make_plugin(), "same", "dist-b")


def test_unknown_name_lists_what_is_installed():
    manager = plugins.get_plugin_manager()
    manager.add_plugin(make_plugin(samplers={"mine": ToyModel}), "toy", "toy-dist")
    with pytest.raises(PluginError) as err:
        manager.get("samplers", "nope")
    assert str(err.value).startswith("no installed plugin provides sampler 'nope'")
    assert "mine" in str(err.value)


def test_unknown_name_with_known_provider_says_what_to_install(monkeypatch):
    with pytest.raises(PluginError, match=r"model 'x' is provided by tzrec-nowhere: pip install"):
        plugins.get("models", "x", provided_by="tzrec-nowhere")
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "tzrec-hstu")
    plugins.reset_plugin_manager()
    with pytest.raises(PluginError, match=r"tzrec-models: it is installed but TZREC_LOAD_PLUGINS"):
        plugins.get("models", "dssm", provided_by="tzrec-models")


def test_name_missing_from_an_installed_provider_says_it_is_not_implemented():
    with pytest.raises(PluginError) as err:
        plugins.get("models", "sid_rqvae", provided_by="tzrec-models")
    msg = str(err.value)
    assert msg.startswith(
        "model 'sid_rqvae' is not implemented by the installed tzrec-models 0.1.0"
    )
    assert "dssm" in msg


def test_config_model_resolves_through_the_schema_provider_hint(monkeypatch, hstu_config_path):
    config = parse_pipeline_config(hstu_config_path.read_text())
    name, cls = resolve_model(config)
    assert name == "hstu_match"
    assert cls.__module__ == "tzrec.hstu.hstu_match"
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "tzrec-export")
    plugins.reset_plugin_manager()
    with pytest.raises(PluginError, match="provided by tzrec-hstu: it is installed but"):
        resolve_model(config)


def test_load_plugins_env_empty_loads_only_core(monkeypatch):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "")
    manager = plugins.load_plugins()
    assert [p.distribution for p in manager.plugins()] == ["tzrec-core"]
    assert "run" in manager.registry("commands")
    assert manager.registry("models") == {}


def test_load_plugins_env_accepts_distribution_or_entry_point_names(monkeypatch):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "tzrec-hstu, export")
    dists = {p.distribution for p in plugins.load_plugins().plugins()}
    assert dists == {"tzrec-core", "tzrec-hstu", "tzrec-export"}


def test_load_plugins_env_with_unknown_name_fails_clearly(monkeypatch):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "tzrec-hstu,not-a-plugin")
    with pytest.raises(PluginError, match="names not-a-plugin, which no installed plugin"):
        plugins.load_plugins()


def test_describe_lists_hooks_and_registrations():
    rows = {row["distribution"]: row for row in plugins.load_plugins().describe()}
    hstu = rows["tzrec-hstu"]
    assert "register_models" in hstu["hooks"]
    assert "hstu_match" in hstu["registers"]["models"]
    assert rows["tzrec-models"]["registers"]["models"] == ["dssm", "multi_tower", "multi_tower_din"]
    assert "commands" in rows["tzrec-core"]["registers"]


_added_files: set[str] = set()


def test_plugin_extension_message_resolves_like_a_oneof_member():
    """A third-party config message lives in a proto2 extension of ModelConfig."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.Default()
    fdp = descriptor_pb2.FileDescriptorProto(
        name="toy_ext_test.proto", package="toy_ext_test", syntax="proto2"
    )
    fdp.dependency.append("tzrec/protos/model.proto")
    msg = fdp.message_type.add(name="ToyModelConfig")
    msg.field.add(name="width", number=1, type=5, label=1)  # optional int32
    fdp.extension.add(
        name="toy_model",
        number=10001,
        type=11,
        label=1,
        type_name=".toy_ext_test.ToyModelConfig",
        extendee=".tzrec.protos.ModelConfig",
    )
    if "toy_ext_test.proto" not in _added_files:
        pool.Add(fdp)
        _added_files.add("toy_ext_test.proto")
    message_factory.GetMessageClassesForFiles(["toy_ext_test.proto"], pool)
    manager = plugins.get_plugin_manager()
    manager.add_plugin(make_plugin(models={"toy_model": ToyModel}), "toyext", "toy-dist")
    text = (
        'train_input_path: "a" eval_input_path: "b" model_dir: "c" '
        "model_config { [toy_ext_test.toy_model] { width: 3 } }"
    )
    config = parse_pipeline_config(text)
    name, cls = resolve_model(config)
    assert (name, cls) == ("toy_model", ToyModel)


def _spec_plugin():
    """A plugin defining its own ``register_widgets`` hook through ``HOOKSPECS``."""
    from tzrec.core.hookspecs import hookspec

    module = types.ModuleType("widget_specs")

    class HOOKSPECS:  # noqa: N801
        @staticmethod
        @hookspec
        def register_widgets(register):
            """Widgets by name."""

    module.HOOKSPECS = HOOKSPECS
    return module


def test_a_plugin_defines_its_own_hook_and_others_implement_it():
    manager = plugins.get_plugin_manager()
    # the implementing plugin may load before the one defining the hook
    manager.add_plugin(make_plugin(widgets={"gear": ToyModel}), "widget-impl", "dist-impl")
    assert "widgets" not in manager.kinds
    manager.add_plugin(_spec_plugin(), "widget-specs", "dist-specs", "1.0")
    try:
        assert "widgets" in manager.kinds
        assert manager.get("widgets", "gear") is ToyModel
        with pytest.raises(PluginError, match="no installed plugin provides widget 'cog'"):
            manager.get("widgets", "cog")
        row = {r["name"]: r for r in manager.describe()}["widget-impl"]
        assert row["registers"] == {"widgets": ["gear"]}
    finally:
        manager.remove_plugin("widget-impl")
        manager.remove_plugin("widget-specs")


def test_hstu_only_hooks_are_defined_by_tzrec_hstu():
    from tzrec.core import hookspecs

    assert not hasattr(hookspecs, "register_input_preprocessors")
    assert not hasattr(hookspecs, "register_output_postprocessors")
    manager = plugins.load_plugins()
    assert {"input_preprocessors", "output_postprocessors"} <= set(manager.kinds)
    reg = manager.registry("input_preprocessors")["uih_preprocessor"]
    assert reg.distribution == "tzrec-hstu"


def test_without_tzrec_hstu_its_hooks_are_not_registry_kinds(monkeypatch):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "models")
    manager = plugins.load_plugins()
    assert "input_preprocessors" not in manager.kinds
    with pytest.raises(ValueError, match="unknown registry kind 'input_preprocessors'"):
        manager.registry("input_preprocessors")


def test_invalid_hook_specs_name_the_plugin():
    from tzrec.core.hookspecs import hookspec

    module = types.ModuleType("bad_specs")

    class HOOKSPECS:  # noqa: N801
        @staticmethod
        @hookspec(firstresult=True)
        def register_models(register):
            """Clashes with tzrec-core's own register_models spec."""

    module.HOOKSPECS = HOOKSPECS
    with pytest.raises(PluginError, match="plugin 'bad' from bad-dist defines invalid hook specs"):
        plugins.get_plugin_manager().add_plugin(module, "bad", "bad-dist")
