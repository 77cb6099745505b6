"""Configs in the shapes of TorchEasyRec's examples and tests train, evaluate and export.

Each config of ``tests/corpus/`` (written for this repo, in upstream's shapes) gets data from
``tzrec synth-data``, then trains a few steps, evaluates and exports with nothing but paths
and sizes changed: the metrics are finite and the serving artefacts exist.
"""

import json
import math
from pathlib import Path

import pytest

from tzrec.core.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]

CORPUS = REPO_ROOT / "tests" / "corpus"

#: corpus config -> (artefact directories under the export dir, environment)
CASES = {
    "dssm_taobao_deep_seq": (["user", "item"], {}),
    "multi_tower_din_mixed_dims": (["."], {}),
    "multi_tower_din_zch": (["."], {}),
    "hstu_match_kuairand": (["user", "item"], {}),
    "dlrm_hstu_kuairand": (["."], {}),
    "dlrm_hstu_kuairand_rtp": (["."], {"USE_RTP": "1"}),
}


def _metrics(path: Path) -> dict[str, float]:
    last = json.loads(path.read_text().splitlines()[-1])
    return {k: v for k, v in last.items() if k != "global_step"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_config_trains_evaluates_and_exports(name, tmp_path, monkeypatch, capsys):
    towers, env = CASES[name]
    # kernel: TRITON as upstream writes it runs as on a CPU-only user machine (degrades to
    # PYTORCH), not in the Triton interpreter the kernel tests enable
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = CORPUS / f"{name}.config"
    synth = tmp_path / "synth.config"
    rc = main(
        [
            "synth-data",
            "--pipeline_config_path",
            str(config),
            "--rows",
            "96",
            "--eval_rows",
            "32",
            "--max_id",
            "200",
            "--max_seq_len",
            "12",
            "--out",
            str(tmp_path / "data"),
            "--write_config",
            str(synth),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    model_dir = tmp_path / "model"
    edits = json.dumps({"model_dir": str(model_dir), "train_config.num_steps": 3})
    args = ["--pipeline_config_path", str(synth), "--edit_config_json", edits]
    assert main(["train", *args]) == 0, capsys.readouterr().err
    assert (model_dir / "model.ckpt-3" / "done").is_file()
    trained = _metrics(model_dir / "train_eval_result.txt")
    assert trained and all(math.isfinite(v) for v in trained.values()), trained

    assert main(["eval", *args]) == 0, capsys.readouterr().err
    evaluated = _metrics(model_dir / "eval_result.txt")
    assert evaluated.keys() == trained.keys()
    assert all(math.isfinite(v) for v in evaluated.values()), evaluated

    export_dir = tmp_path / "export"
    items = tmp_path / "data" / "items.parquet"  # one row per sampled item, if any
    extra = ["--item_input_path", str(items)] if items.exists() else []
    rc = main(["export", *args, "--export_dir", str(export_dir), *extra])
    assert rc == 0, capsys.readouterr().err
    for tower in towers:
        assert (export_dir / tower / "scripted_model.pt").stat().st_size > 0
        assert (export_dir / tower / "pipeline.config").is_file()
