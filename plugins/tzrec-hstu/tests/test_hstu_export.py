"""HSTUMatch export: both towers as TorchScript and AOT, equal to eager on any lengths."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tzrec.core.build import build_model
from tzrec.core.config import load_pipeline_config
from tzrec.data import create_features
from tzrec.data.readers.parquet import ParquetDataset
from tzrec.data.testing import assert_outputs_close, random_inputs
from tzrec.export import dims
from tzrec.export.artifact import load_exported
from tzrec.export.scripting import export_dense, script_sparse, to_torchscript
from tzrec.export.wrappers import TowerWoEGWrapper, export_modules
from tzrec.models.inference import feature_tensor_names

EXAMPLE = Path(__file__).resolve().parents[3] / "docs/examples/hstu_match_kuairand.config"


def build(paths, watchtime: bool = False):
    config = load_pipeline_config(str(EXAMPLE))
    config.train_input_path = paths["train"]
    config.data_config.negative_sampler.input_path = paths["items"]
    config.data_config.batch_size = 8
    config.data_config.negative_sampler.num_sample = 8 * 3
    if watchtime:  # actions | (watch_time >= 30): an op across two sequence groups
        enc = config.model_config.hstu_match.user_tower.hstu.input_preprocessor
        enc = enc.uih_preprocessor.action_encoder.simple_action_encoder
        enc.watchtime_to_action_thresholds.append(30)
        enc.watchtime_to_action_weights.append(16)
        group = config.model_config.feature_groups.add()
        group.group_name = "uih_watchtime"
        group.feature_names.append("uih_seq__watch_time")
        group.group_type = 3  # JAGGED_SEQUENCE
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, paths["train"], mode="train")
    torch.manual_seed(0)
    model = build_model(config, ds.features)
    model.eval()
    model.set_is_inference(True)
    return model, next(iter(ds))


def save_and_load(module, inputs, tmp: Path, aot: bool):
    tmp.mkdir(parents=True, exist_ok=True)
    grouped = module.sparse(inputs)
    if aot:
        torch.jit.save(script_sparse(module), str(tmp / "scripted_sparse_model.pt"))
        torch.export.save(export_dense(module, grouped), str(tmp / "aot_dense_model.pt2"))
    else:
        torch.jit.save(to_torchscript(module, grouped), str(tmp / "scripted_model.pt"))
    meta = {
        "format": "aot" if aot else "torchscript",
        "inputs": [n for f in module.features for n in feature_tensor_names(f)],
    }
    (tmp / "model_meta.json").write_text(json.dumps(meta))
    return load_exported(tmp)


@pytest.fixture(scope="module")
def exported(small_data, tmp_path_factory):
    """Eager user/item towers and their loaded TorchScript and AOT artefacts."""
    model, _ = build(small_data, watchtime=True)
    tmp = tmp_path_factory.mktemp("hstu_artefacts")
    out = {}
    for module in export_modules(model):
        inputs = random_inputs(module.features, {"uih_seq": [3, 5, 1, 4]}, seed=1)
        if module.name == "item_tower":
            inputs = random_inputs(module.features, batch=4, seed=1)
        out[module.name] = (
            module,
            save_and_load(module, inputs, tmp / module.name / "ts", aot=False),
            save_and_load(module, inputs, tmp / module.name / "aot", aot=True),
        )
    return out


def test_towers_use_the_shared_tables_and_the_scalar_item_view(small_data):
    model, _ = build(small_data)
    user, item = export_modules(model)
    assert isinstance(user, TowerWoEGWrapper) and isinstance(item, TowerWoEGWrapper)
    assert user.name == "user_tower" and item.name == "item_tower"
    assert [f.name for f in item.features] == ["video_id"]
    assert "uih_seq__video_id" in [f.name for f in user.features]
    assert not any(f.name.startswith("cand_seq") for f in user.features)
    # the item tower's scalar video_id reads the table the sequences trained
    assert item.sparse.tables.keys() == {"video_id_emb"}
    torch.testing.assert_close(
        item.sparse.tables["video_id_emb"], user.sparse.tables["video_id_emb"]
    )


def test_wrapping_before_set_is_inference_is_refused(small_data):
    model, _ = build(small_data)
    model.set_is_inference(False)
    with pytest.raises(Exception, match="set_is_inference"):
        export_modules(model)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    lengths=st.lists(st.integers(0, 8), min_size=1, max_size=5),
    seed=st.integers(0, 1000),
)
@example(lengths=[0], seed=0)  # batch 1, empty history
@example(lengths=[7], seed=0)  # batch 1
@example(lengths=[0, 0, 0], seed=1)  # every history empty: no uih items at all
@example(lengths=[8, 0, 1, 8, 2], seed=2)
def test_user_tower_artefacts_match_eager_on_any_lengths(exported, lengths, seed):
    module, scripted, aot = exported["user_tower"]
    inputs = random_inputs(module.features, {"uih_seq": lengths}, seed=seed)
    with torch.no_grad():
        eager = module(inputs)
    assert eager["user_tower_emb"].shape == (len(lengths), 16)
    assert torch.isfinite(eager["user_tower_emb"]).all()
    assert_outputs_close(eager, scripted(inputs))
    assert_outputs_close(eager, aot(inputs))


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.integers(1, 40), seed=st.integers(0, 1000))
@example(batch=1, seed=0)
def test_item_tower_artefacts_match_eager_on_any_batch(exported, batch, seed):
    module, scripted, aot = exported["item_tower"]
    inputs = random_inputs(module.features, batch=batch, seed=seed)
    with torch.no_grad():
        eager = module(inputs)
    assert eager["item_tower_emb"].shape == (batch, 16)
    assert_outputs_close(eager, scripted(inputs))
    assert_outputs_close(eager, aot(inputs))


def test_item_artefact_embeds_an_item_like_training_embeds_it_as_a_candidate(small_data, exported):
    """The scalar export view and the candidate-sequence training view agree per item."""
    model, batch = build(small_data, watchtime=True)
    module, scripted, _ = exported["item_tower"]
    # the fixture built its own model from the same seed: same weights
    model.set_is_inference(False)
    with torch.no_grad():
        grouped = model.embedding_group(batch)
        training = model.item_embedding(grouped)
    ids = batch.sparse_features["__BASE__"].to_dict()["cand_seq__video_id"].values()
    n = ids.numel()
    inputs = {"video_id.values": ids, "video_id.lengths": torch.ones(n, dtype=torch.int64)}
    assert_outputs_close({"e": training[:n]}, {"e": scripted(inputs)["item_tower_emb"]})


def test_sequence_groups_of_one_parent_share_a_dim(small_data):
    model, _ = build(small_data, watchtime=True)
    user, _ = export_modules(model)
    keys = dims.sequence_share_keys(user.features, user.feature_groups)
    assert keys == {g: "uih_seq" for g in ("uih", "uih_action", "uih_timestamp", "uih_watchtime")}


def test_independent_dims_break_the_watchtime_export_shared_dims_do_not(small_data, monkeypatch):
    """Seed 002's regression: ``actions | watchtime >= t`` ties two groups' item counts."""
    model, _ = build(small_data, watchtime=True)
    user, _ = export_modules(model)
    inputs = random_inputs(user.features, {"uih_seq": [3, 5, 1, 4]}, seed=3)
    grouped = user.sparse(inputs)
    export_dense(user, grouped)  # shared: exports
    monkeypatch.setattr(
        dims,
        "sequence_share_keys",
        lambda features, groups: {
            g.group_name: g.group_name for g in groups if g.group_type == 3 and g.group_name
        },
    )
    with pytest.raises(Exception, match="uih"):
        export_dense(user, grouped)


def test_cli_export_predict_and_retrieval_on_a_trained_model(small_data, tmp_path):
    """train → export (TorchScript, AOT) → predict both towers → eval-retrieval."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    model_dir = tmp_path / "model"
    edits = {
        "train_input_path": small_data["train"],
        "eval_input_path": small_data["eval"],
        "model_dir": str(model_dir),
        "data_config.negative_sampler.input_path": small_data["items"],
        "data_config.num_workers": 0,
        "data_config.batch_size": 16,
        "data_config.negative_sampler.num_sample": 16 * 7,
        "data_config.negative_sampler.num_eval_sample": 16 * 7,
        "train_config.num_steps": 4,
    }

    def tzrec(*args):
        cmd = [sys.executable, "-m", "tzrec.core.cli", *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    tzrec("train", "--pipeline_config_path", str(EXAMPLE), "--edit_config_json", json.dumps(edits))
    config = str(model_dir / "pipeline.config")
    # no --item_input_path: the item tower reads the sampler's one-row-per-item parquet
    tzrec("export", "--pipeline_config_path", config, "--export_dir", str(tmp_path / "ts"))
    tzrec(
        "export", "--pipeline_config_path", config, "--export_dir", str(tmp_path / "aot"), "--aot"
    )
    for fmt in ("ts", "aot"):
        for tower in ("user", "item"):
            meta = json.loads((tmp_path / fmt / tower / "model_meta.json").read_text())
            assert meta["parity_max_abs_diff"] <= 1e-5, meta
    out = tzrec(
        "predict",
        "--scripted_model_path",
        str(tmp_path / "aot" / "item"),
        "--predict_input_path",
        small_data["items"],
        "--predict_output_path",
        str(tmp_path / "items.parquet"),
        "--reserved_columns",
        "video_id",
    )
    items = pq.read_table(tmp_path / "items.parquet")
    assert items.num_rows == pq.read_table(small_data["items"]).num_rows
    assert f"{items.num_rows} rows in, {items.num_rows} rows out" in out
    emb = np.asarray(items.column("item_tower_emb").to_pylist())
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)  # COSINE
    # a fresh process loads the AOT user tower (its graph calls the tzrec::hstu_mha_fwd op)
    out = tzrec(
        "predict",
        "--scripted_model_path",
        str(tmp_path / "aot" / "user"),
        "--predict_input_path",
        small_data["eval"],
        "--predict_output_path",
        str(tmp_path / "users.parquet"),
    )
    users = pq.read_table(tmp_path / "users.parquet")
    assert users.num_rows == pq.read_table(small_data["eval"]).num_rows
    assert users.column_names == ["user_tower_emb"]
    result = tmp_path / "retrieval.json"
    tzrec(
        "eval-retrieval",
        "--export_dir",
        str(tmp_path / "ts"),
        "--item_input_path",
        small_data["items"],
        "--eval_input_path",
        small_data["eval"],
        "--item_id_field",
        "video_id",
        "--gt_field",
        "cand_seq__video_id",
        "--gt_first_only",
        "--top_k",
        "5,50",
        "--output_path",
        str(result),
    )
    metrics = json.loads(result.read_text())["metrics"]
    assert 0.0 <= metrics["hitrate@5"] <= metrics["hitrate@50"] <= 1.0
