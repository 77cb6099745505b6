"""FG configs in the shapes of upstream's fg mocks train, evaluate, export and predict on raw data.

``tests/corpus/{multi_tower_din_fg_mock,dssm_fg_mock,dssm_fg_hard_negative_mock}.config`` get
raw inputs from ``tzrec synth-data`` (maps, nested maps, texts, string sequences), train a
few steps with feature generation (FG_DAG), evaluate and export; the exported DIN model's
``tzrec predict`` on the raw eval file gives the checkpoint's scores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from tzrec.core.cli import main

CORPUS = Path(__file__).resolve().parents[3] / "tests" / "corpus"


def _tokenizer(path: Path) -> None:
    """A small WordLevel tokenizer.json over synth-data's words (w0 .. w31)."""
    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(32)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))


def _metrics(path: Path) -> dict[str, float]:
    last = json.loads(path.read_text().splitlines()[-1])
    return {k: v for k, v in last.items() if k != "global_step"}


def _run(name: str, tmp: Path, capsys) -> tuple[list[str], Path]:
    text = (CORPUS / f"{name}.config").read_text()
    tok = tmp / "fg_tokenizer.json"
    _tokenizer(tok)
    config = tmp / f"{name}.config"
    config.write_text(text.replace('"fg_tokenizer.json"', json.dumps(str(tok))))
    synth = tmp / "synth.config"
    rc = main(
        [
            "synth-data",
            "--pipeline_config_path",
            str(config),
            "--rows",
            "64",
            "--eval_rows",
            "32",
            "--max_id",
            "100",
            "--max_seq_len",
            "8",
            "--out",
            str(tmp / "data"),
            "--write_config",
            str(synth),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    edits = json.dumps({"model_dir": str(tmp / "model"), "train_config.num_steps": 2})
    args = ["--pipeline_config_path", str(synth), "--edit_config_json", edits]
    assert main(["train", *args]) == 0, capsys.readouterr().err
    trained = _metrics(tmp / "model" / "train_eval_result.txt")
    assert trained and all(math.isfinite(v) for v in trained.values()), trained
    assert main(["eval", *args]) == 0, capsys.readouterr().err
    evaluated = _metrics(tmp / "model" / "eval_result.txt")
    assert evaluated.keys() == trained.keys()
    items = tmp / "data" / "items.parquet"
    extra = ["--item_input_path", str(items)] if items.exists() else []
    rc = main(["export", *args, "--export_dir", str(tmp / "export"), *extra])
    assert rc == 0, capsys.readouterr().err
    return args, tmp / "export"


def test_multi_tower_din_fg_mock_predicts_raw_inputs_as_the_checkpoint(tmp_path, capsys):
    args, export = _run("multi_tower_din_fg_mock", tmp_path, capsys)
    meta = json.loads((export / "model_meta.json").read_text())
    raw = meta["raw_inputs"]
    assert raw["fg_mode"] == "FG_DAG"
    # the raw columns it reads, not the feature names: maps, nested maps, texts
    assert {"map_1", "nested_map_1", "id_1", "id_2", "query", "title", "raw_6"} <= set(
        raw["columns"]
    )
    assert "combo_1" not in raw["columns"]
    kinds = {t["feature"]: t["type"] for t in raw["transforms"]}
    assert kinds["combo_1"] == "combo_feature" and kinds["match_4"] == "match_feature"
    assert kinds["custom_1"] == "custom_feature" and kinds["expr_1"] == "expr_feature"
    # the exported config keeps the FG features (predict reruns the FG)
    assert "combo_feature" in (export / "pipeline.config").read_text()
    eval_file = tmp_path / "data" / "eval.parquet"
    served, eager = tmp_path / "served.parquet", tmp_path / "eager.parquet"
    rc = main(
        ["predict", "--scripted_model_path", str(export), "--predict_input_path", str(eval_file)]
        + ["--predict_output_path", str(served)]
    )
    assert rc == 0, capsys.readouterr().err
    rc = main(
        ["predict", *args, "--predict_input_path", str(eval_file)]
        + ["--predict_output_path", str(eager)]
    )
    assert rc == 0, capsys.readouterr().err
    a, b = pq.read_table(served), pq.read_table(eager)
    assert a.num_rows == b.num_rows == 32
    diff = np.abs(np.asarray(a["probs"].to_pylist()) - np.asarray(b["probs"].to_pylist()))
    assert diff.max() < 1e-4  # measured 6e-6 (scripted vs eager float32)


@pytest.mark.parametrize("name", ["dssm_fg_mock", "dssm_fg_hard_negative_mock"])
def test_dssm_fg_mocks_train_evaluate_and_export_towers(name, tmp_path, capsys):
    _, export = _run(name, tmp_path, capsys)
    for tower in ("user", "item"):
        assert (export / tower / "scripted_model.pt").stat().st_size > 0
    item_meta = json.loads((export / "item" / "model_meta.json").read_text())
    assert item_meta["raw_inputs"]["columns"][:1] == ["item_id"]
    assert "title" in item_meta["raw_inputs"]["columns"]
    assert {"feature": "item_title", "type": "tokenize_feature", "expressions": ["item:title"]} in (
        item_meta["raw_inputs"]["transforms"]
    )
