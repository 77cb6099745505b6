"""UltraHSTU: DlrmHSTU equivalence, channels, SLA and truncation in the model, recomputation."""

import json
from pathlib import Path

import pytest
import torch

from tzrec.core import plugins
from tzrec.core.build import build_model
from tzrec.core.config import load_pipeline_config
from tzrec.core.errors import ConfigError
from tzrec.data import create_features
from tzrec.data.readers.parquet import ParquetDataset
from tzrec.hstu.stu import STULayer, STUStack, truncation_index
from tzrec.kernels import padded_sla_mha
from tzrec.protos import model_pb2, module_pb2

CONFIG = Path(__file__).resolve().parents[3] / "docs/examples/dlrm_hstu_kuairand.config"
HISTORY = ("", "_action", "_watchtime", "_timestamp")
SEQ = {"": "video_id", "_action": "action_weight", "_watchtime": "watch_time",
       "_timestamp": "action_timestamp"}  # fmt: skip


@pytest.fixture(scope="module")
def rank_data(tmp_path_factory):
    from tzrec.hstu.synthetic import write_dlrm_hstu_data

    return write_dlrm_hstu_data(
        tmp_path_factory.mktemp("ultra") / "data",
        num_rows=64,
        num_eval_rows=32,
        max_history=6,
        max_candidates=4,
        empty_fraction=0.2,
    )


def ultra_config(channels=("",), sla=(0, 0), truncation=(0, 0)):
    """The DlrmHSTU example as ultra_hstu: one channel per name, all on uih_seq."""
    config = load_pipeline_config(str(CONFIG))
    mc = config.model_config
    dlrm = model_pb2.ModelConfig().dlrm_hstu.__class__()
    dlrm.CopyFrom(mc.dlrm_hstu)
    for field in ("fusion_mtl_tower", "max_seq_len", "item_embedding_hidden_dim"):
        value = getattr(dlrm, field)
        if isinstance(value, int):
            setattr(mc.ultra_hstu, field, value)
        else:
            getattr(mc.ultra_hstu, field).CopyFrom(value)
    for name in channels:
        ch = mc.ultra_hstu.hstu.add()
        ch.CopyFrom(dlrm.hstu)
        ch.name = name
        ch.stu.sla_k1, ch.stu.sla_k2 = sla
        ch.attn_truncation_split_layer, ch.attn_truncation_tail_len = truncation
        if name:
            for suffix in HISTORY:
                mc.feature_groups.add(
                    group_name=name + suffix,
                    feature_names=[f"uih_seq__{SEQ[suffix]}"],
                    group_type=model_pb2.JAGGED_SEQUENCE,
                )
    return config


def build(config, paths, seed=0):
    config.data_config.batch_size = 16
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, paths["train"], mode="train")
    torch.manual_seed(seed)
    return build_model(config, ds.features), next(iter(ds))


def test_plugin_registers_ultra_hstu():
    assert plugins.get("models", "ultra_hstu").__name__ == "UltraHSTU"


def test_single_unnamed_channel_is_dlrm_hstu(rank_data):
    dlrm, batch = build(load_pipeline_config(str(CONFIG)), rank_data)
    ultra, _ = build(ultra_config(), rank_data, seed=1)
    ultra.load_state_dict(dlrm.state_dict())  # same parameter names, strict
    dlrm.eval()
    ultra.eval()
    want, got = dlrm.predict(batch), ultra.predict(batch)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=0, rtol=0)


def test_two_channels_concatenate_their_candidate_outputs(rank_data):
    model, batch = build(ultra_config(("uih_click", "uih_view")), rank_data)
    assert len(model.encoders) == 2 and model.embedding_dim == 32
    assert model.item_mlp[-1].normalized_shape == (32,)
    model.eval()
    grouped = model.embedding_group(batch)
    # channel 1's output is the first 16 columns of the user embedding: perturbing channel
    # 2's history changes predictions, and each channel's tower reads its own groups
    base = model.dense_forward(grouped)["logits_is_click"]
    changed = dict(grouped)
    changed["uih_view.sequence"] = grouped["uih_view.sequence"] + 1.0
    moved = model.dense_forward(changed)["logits_is_click"]
    assert not torch.allclose(base, moved)
    losses = model.loss(model.predict(batch), batch)
    sum(losses.values()).backward()
    for enc in model.encoders:
        assert enc.stu.layers[0].uvqk_weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("channels", "message"),
    [((), "at least one channel"), (("a", ""), "unique non-empty name"),
     (("a", "a"), "unique non-empty name")],
)  # fmt: skip
def test_bad_channels_are_config_errors(rank_data, channels, message):
    config = ultra_config(())
    for name in channels:
        ch = config.model_config.ultra_hstu.hstu.add()
        ch.CopyFrom(load_pipeline_config(str(CONFIG)).model_config.dlrm_hstu.hstu)
        ch.name = name
    with pytest.raises(ConfigError, match=message):
        build(config, rank_data)


def test_missing_channel_group_and_names_outside_ultra_are_refused(rank_data):
    config = ultra_config(("uih_click",))
    del config.model_config.feature_groups[-4:]
    with pytest.raises(ConfigError, match="feature group named 'uih_click'"):
        build(config, rank_data)
    config = load_pipeline_config(str(CONFIG))
    config.model_config.dlrm_hstu.hstu.name = "uih_click"
    with pytest.raises(ConfigError, match="only ultra_hstu reads"):
        build(config, rank_data)


def test_sla_and_truncation_in_the_model_change_only_what_they_should(rank_data):
    full, batch = build(ultra_config(), rank_data)
    # a window covering every row is full causal attention among the history, but SLA
    # targets see the whole history and not themselves: predictions differ
    sla, _ = build(ultra_config(sla=(100, 0)), rank_data)
    sla.load_state_dict(full.state_dict())
    full.eval()
    sla.eval()
    assert not torch.allclose(full.predict(batch)["logits_is_click"],
                              sla.predict(batch)["logits_is_click"])  # fmt: skip
    # truncation keeping more history than any row has changes nothing
    wide, _ = build(ultra_config(truncation=(1, 50)), rank_data)
    wide.load_state_dict(full.state_dict())
    wide.eval()
    for key, value in full.predict(batch).items():
        torch.testing.assert_close(wide.predict(batch)[key], value)
    tight, _ = build(ultra_config(truncation=(1, 1)), rank_data)
    tight.load_state_dict(full.state_dict())
    tight.eval()
    assert (
        tight.predict(batch)["logits_is_click"].shape
        == full.predict(batch)["logits_is_click"].shape
    )


def test_truncation_index_keeps_contextual_tail_and_targets():
    # rows: c=2 contextual, then history, then targets
    offsets = torch.tensor([0, 10, 13, 13, 20])  # lengths 10, 3, 0, 7
    targets = torch.tensor([3, 1, 0, 2])
    kept, new_offsets = truncation_index(offsets, targets, 2, 2, 20)
    # row 0: history 5 (2..6) → keep 5, 6; targets 7..9
    # row 1: history 0 → all kept; row 3: history 3 (15..17) → keep 16, 17; targets 18, 19
    assert kept.tolist() == [0, 1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19]
    assert new_offsets.tolist() == [0, 7, 10, 10, 16]


def test_truncating_stack_equals_running_the_tail_layers_on_the_kept_tokens():
    torch.manual_seed(0)
    cfg = module_pb2.STU(embedding_dim=8, num_heads=2, hidden_dim=4, attention_dim=4,
                         output_dropout_ratio=0.0)  # fmt: skip
    stack = STUStack(cfg, 3, truncate_split_layer=2, truncate_tail_len=3).eval()
    offsets = torch.tensor([0, 9, 14])
    targets = torch.tensor([2, 1])
    x = torch.randn(14, 8)
    out, new_offsets, kept = stack.encode(x, offsets, 16, 1, targets)
    h = stack.layers[1](stack.layers[0](x, offsets, 16, 1, targets), offsets, 16, 1, targets)
    ref_offsets = torch.tensor([0, 6, 11])  # 1 + 3 + 2, 1 + 3 + 1
    assert new_offsets.tolist() == ref_offsets.tolist()
    want = stack.layers[2](h.index_select(0, kept), ref_offsets, 16, 1, targets)
    torch.testing.assert_close(out, want)
    with pytest.raises(RuntimeError, match="encode"):
        stack(x, offsets, 16, 1, targets)


@pytest.mark.parametrize(("split", "tail", "message"), [(1, 0, "both be > 0"),
                                                       (3, 2, "must be in")])  # fmt: skip
def test_bad_truncation_is_a_config_error(split, tail, message):
    cfg = module_pb2.STU(embedding_dim=8, num_heads=2, hidden_dim=4, attention_dim=4)
    with pytest.raises(ConfigError, match=message):
        STUStack(cfg, 3, truncate_split_layer=split, truncate_tail_len=tail)


def test_sla_layer_uses_the_semi_local_rule():
    torch.manual_seed(1)
    cfg = module_pb2.STU(embedding_dim=8, num_heads=2, hidden_dim=4, attention_dim=4,
                         output_dropout_ratio=0.0, sla_k1=2, sla_k2=1)  # fmt: skip
    layer = STULayer(cfg, scaling_seqlen=12).eval()
    offsets = torch.tensor([0, 12])
    x = torch.randn(12, 8)
    out = layer(x, offsets, 12, 0, torch.tensor([2]))
    # recompute the attention with the dense SLA reference from the layer's projections
    captured = {}
    original = padded_sla_mha
    import tzrec.hstu.stu as stu_module

    def spy(*args, **kw):
        captured["out"] = original(*args[:8], num_targets=kw["num_targets"],
                                   contextual_seq_len=kw["contextual_seq_len"])  # fmt: skip
        return captured["out"]

    stu_module.sla_hstu_mha, saved = spy, stu_module.sla_hstu_mha
    try:
        ref = layer(x, offsets, 12, 0, torch.tensor([2]))
    finally:
        stu_module.sla_hstu_mha = saved
    torch.testing.assert_close(out, ref)
    with pytest.raises(ConfigError, match="max_attn_len"):
        STULayer(module_pb2.STU(embedding_dim=8, num_heads=2, hidden_dim=4, attention_dim=4,
                                sla_k1=2, max_attn_len=3))  # fmt: skip


def _saved_bytes(model, x, offsets, targets):
    """Bytes of tensors autograd saves for backward during the forward (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x, offsets, 64, 0, targets)
    return out, sum(seen.values())


def test_recompute_keeps_gradients_and_saves_less():
    torch.manual_seed(2)
    offsets = torch.tensor([0, 60, 100])
    targets = torch.tensor([3, 2])
    x = torch.randn(100, 16, requires_grad=True)
    results = {}
    for recompute in (False, True):
        cfg = module_pb2.STU(embedding_dim=16, num_heads=2, hidden_dim=8, attention_dim=8,
                             output_dropout_ratio=0.0, recompute_normed_x=recompute,
                             recompute_uvqk=recompute, recompute_y=recompute)  # fmt: skip
        torch.manual_seed(3)
        stack = STUStack(cfg, 2).train()
        out, saved = _saved_bytes(stack, x, offsets, targets)
        grads = torch.autograd.grad(out.square().sum(), [x, *stack.parameters()])
        results[recompute] = (out.detach(), grads, saved)
    torch.testing.assert_close(results[True][0], results[False][0])
    for a, b in zip(results[True][1], results[False][1], strict=True):
        torch.testing.assert_close(a, b)
    # measured: 4 LN/uvqk/y activations per layer dropped → about a third less saved
    assert results[True][2] < 0.8 * results[False][2], (results[True][2], results[False][2])


@pytest.fixture(scope="module")
def trained(rank_data, tmp_path_factory):
    """`tzrec train` of a config shaped as upstream's ultra_hstu_cutlass_kuairand_1k."""
    from google.protobuf import text_format

    from tzrec.core.cli import main

    root = tmp_path_factory.mktemp("ultra_e2e")
    # two channels, SLA (K1 3, K2 1), truncation after layer 1 keeping 3 history tokens
    config = ultra_config(("uih_click", "uih_view"), sla=(3, 1), truncation=(1, 3))
    config.model_config.kernel = model_pb2.PYTORCH
    path = root / "ultra_hstu.config"
    path.write_text(text_format.MessageToString(config))
    edits = {
        "train_input_path": rank_data["train"],
        "eval_input_path": rank_data["eval"],
        "model_dir": str(root / "model"),
        "data_config.batch_size": 16,
        "data_config.num_workers": 0,
    }
    args = ["train", "--pipeline_config_path", str(path), "--edit_config_json"]
    assert main([*args, json.dumps(edits)]) == 0
    return root / "model", main


def test_ultra_hstu_trains_evaluates_and_exports_with_parity(trained, tmp_path, monkeypatch):
    from tzrec.core.build import build_dataset
    from tzrec.data.testing import assert_outputs_close
    from tzrec.export.artifact import load_exported
    from tzrec.export.exporter import load_trained_model, resolve_checkpoint
    from tzrec.models.inference import inputs_from_batch

    monkeypatch.setenv("QUANT_EMB", "0")  # FP32 tables: exact parity with the eager model
    model_dir, main = trained
    result = json.loads((model_dir / "train_eval_result.txt").read_text().splitlines()[-1])
    assert {"auc_is_click", "grouped_auc_is_like", "mean_absolute_error_watchtime"} <= set(result)
    assert 0.0 <= result["auc_is_click"] <= 1.0
    config_path = str(model_dir / "pipeline.config")
    assert main(["eval", "--pipeline_config_path", config_path]) == 0
    out = tmp_path / "export"
    assert main(["export", "--pipeline_config_path", config_path, "--export_dir", str(out)]) == 0
    meta = json.loads((out / "model_meta.json").read_text())
    assert meta["format"] == "torchscript" and meta["parity_max_abs_diff"] <= 1e-5
    config = load_pipeline_config(config_path)
    model, features = load_trained_model(config, resolve_checkpoint(config, None))
    model.set_is_inference(True)
    artefact = load_exported(out)
    ds = build_dataset(config, features, config.eval_input_path, "eval")
    batch = next(iter(ds.make_dataloader()))
    with torch.no_grad():
        eager = model.predict(batch)
    assert_outputs_close(eager, artefact(inputs_from_batch(batch, features)))
