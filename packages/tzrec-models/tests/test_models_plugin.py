from tzrec.core import plugins
from tzrec.protos import loss_pb2, metric_pb2, seq_encoder_pb2


def _oneof_names(message, oneof):
    return {f.name for f in message.DESCRIPTOR.oneofs_by_name[oneof].fields}


def test_models_plugin_registers_every_sequence_encoder_the_schema_assigns_to_it():
    pm = plugins.get_plugin_manager()
    registry = pm.registry("sequence_encoders")
    assert _oneof_names(seq_encoder_pb2.SeqEncoderConfig, "seq_module") <= set(registry)
    assert all(registry[n].distribution == "tzrec-models" for n in registry)


def test_models_plugin_registers_losses_and_metrics_lazily_under_config_names():
    pm = plugins.get_plugin_manager()
    losses = pm.registry("losses")
    assert _oneof_names(loss_pb2.LossConfig, "loss") <= set(losses)
    metrics = pm.registry("metrics")
    expected = {
        "auc",
        "recall_at_k",
        "grouped_auc",
        "mean_absolute_error",
        "mean_squared_error",
        "accuracy",
        "multiclass_auc",
        "xauc",
        "grouped_xauc",
        "normalized_entropy",
    }
    assert expected <= set(metrics)
    assert expected <= _oneof_names(metric_pb2.MetricConfig, "metric")
    assert all(isinstance(r.target, str) for r in [*losses.values(), *metrics.values()])
    for reg in [*losses.values(), *metrics.values()]:
        assert reg.load() is not None


def test_plugin_module_imports_no_torch_code():
    import subprocess
    import sys

    code = (
        "import sys, tzrec.models.plugin; "
        "print(any(m.startswith('tzrec.models.') and m != 'tzrec.models.plugin' "
        "for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
