"""DlrmHSTU export: TorchScript and AOT (shared sequence Dims) equal eager on any lengths."""

import json
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
from tzrec.export.exporter import sample_inputs, target_config, write_artefact
from tzrec.export.predict import predict
from tzrec.export.wrappers import ModelWrapper, export_modules
from tzrec.models.inference import inputs_from_batch

CONFIG = Path(__file__).resolve().parents[3] / "docs/examples/dlrm_hstu_kuairand.config"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tzrec.hstu.synthetic import write_dlrm_hstu_data

    return write_dlrm_hstu_data(
        tmp_path_factory.mktemp("dlrm_export") / "data",
        num_rows=64,
        num_eval_rows=32,
        max_history=6,
        max_candidates=4,
        empty_fraction=0.25,
    )


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    """The eager wrapper, its config, and the exported TorchScript and AOT artefacts."""
    config = load_pipeline_config(str(CONFIG))
    config.train_input_path = data["train"]
    config.data_config.batch_size = 8
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, data["train"], mode="train")
    torch.manual_seed(0)
    model = build_model(config, ds.features)
    model.eval()
    model.set_is_inference(True)
    (module,) = export_modules(model)
    root = tmp_path_factory.mktemp("dlrm_artefacts")
    cfg = target_config(config, module)
    inputs = sample_inputs(cfg, data["train"])
    artefacts = {}
    for fmt in ("torchscript", "aot"):
        (root / fmt).mkdir()
        write_artefact(module, cfg, inputs, root / fmt, fmt == "aot", root)
        artefacts[fmt] = load_exported(root / fmt)
    return model, module, artefacts, root, ds


def test_dlrm_hstu_exports_as_one_model_with_per_candidate_rows(exported):
    model, module, artefacts, root, _ = exported
    assert isinstance(module, ModelWrapper) and module.name == ""
    meta = json.loads((root / "aot" / "model_meta.json").read_text())
    assert meta["format"] == "aot"
    assert {"probs_is_click", "logits_is_click"} <= set(meta["outputs"])
    assert meta["output_row_lengths"] == "cand_seq__video_id.lengths"
    assert meta["parity_max_abs_diff"] <= 1e-5
    keys = dims.sequence_share_keys(module.features, module.feature_groups)
    assert {keys[g] for g in ("uih", "uih_action", "uih_watchtime", "uih_timestamp")} == {"uih_seq"}
    assert keys["candidate"] == keys["candidate_timestamp"] == "cand_seq"


def test_artefacts_match_the_eager_model_on_a_real_batch(exported):
    model, module, artefacts, _, ds = exported
    batch = next(iter(ds))
    with torch.no_grad():
        eager = model.predict(batch)
    inputs = inputs_from_batch(batch, module.features)
    for artefact in artefacts.values():
        assert_outputs_close(eager, artefact(inputs))


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rows=st.lists(st.tuples(st.integers(0, 6), st.integers(1, 4)), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
)
@example(rows=[(0, 1)], seed=0)  # batch 1, empty history, a single candidate
@example(rows=[(6, 1)], seed=0)
@example(rows=[(0, 1), (0, 1), (0, 1)], seed=1)  # no history items in the whole batch
@example(rows=[(5, 4), (0, 2), (3, 1)], seed=2)
def test_artefacts_match_eager_on_any_history_and_candidate_counts(exported, rows, seed):
    _, module, artefacts, _, _ = exported
    lengths = {"uih_seq": [h for h, _ in rows], "cand_seq": [c for _, c in rows]}
    inputs = random_inputs(module.features, lengths, seed=seed)
    with torch.no_grad():
        eager = module(inputs)
    assert eager["probs_is_click"].shape == (sum(c for _, c in rows),)
    for artefact in artefacts.values():
        assert_outputs_close(eager, artefact(inputs))


def test_predict_writes_each_requests_candidates_as_a_list(exported, data, tmp_path):
    _, _, _, root, _ = exported
    out = tmp_path / "pred.parquet"
    stats = predict(
        str(root / "aot"),
        data["eval"],
        str(out),
        reserved_columns=["user_id", "cand_seq__video_id"],
        output_columns=["probs_is_click"],
    )
    table = pq.read_table(out)
    source = pq.read_table(data["eval"])
    assert stats["rows_out"] == table.num_rows == source.num_rows
    probs = table.column("probs_is_click").to_pylist()
    cands = table.column("cand_seq__video_id").to_pylist()
    for p, c in zip(probs, cands, strict=True):
        n = len([x for x in str(c).split("|") if x]) if isinstance(c, str) else len(c)
        assert len(p) == n and all(0.0 < v < 1.0 for v in p)
    assert np.isfinite(np.concatenate([np.asarray(p) for p in probs])).all()
