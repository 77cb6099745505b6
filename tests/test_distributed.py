"""Two CPU processes (torchrun, gloo) train DSSM with sharded tables and agree on metrics."""

import json
import re
import sys
from pathlib import Path

import pytest

from tzrec.core.cli import main
from tzrec.core.testing import run
from tzrec.data.testing import write_dssm_data

REPO_ROOT = Path(__file__).resolve().parents[1]

DSSM = REPO_ROOT / "docs" / "examples" / "dssm.config"
EVAL_LINE = re.compile(r"rank (\d) eval at step (\d+): (.*)")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    paths = write_dssm_data(root / "data")
    model_dir = root / "model"
    edits = {
        "train_input_path": paths["train"],
        "eval_input_path": paths["eval"],
        "model_dir": str(model_dir),
        "data_config.negative_sampler.input_path": paths["items"],
        "data_config.batch_size": 64,
        "data_config.num_workers": 0,
        "train_config.num_epochs": 2,
        "train_config.sparse_optimizer.adagrad_optimizer.lr": 0.1,
        "train_config.dense_optimizer.adam_optimizer.lr": 0.01,
    }
    proc = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            "-m",
            "tzrec.core.cli",
            "train",
            "--pipeline_config_path",
            str(DSSM),
            "--edit_config_json",
            json.dumps(edits),
        ],
        timeout=300,
    )
    return model_dir, proc.stdout + proc.stderr


def test_both_ranks_report_the_same_eval_metrics(two_process_run):
    model_dir, output = two_process_run
    by_rank = {}
    for rank, step, metrics in EVAL_LINE.findall(output):
        by_rank[int(rank)] = (int(step), metrics)
    assert set(by_rank) == {0, 1}, output[-3000:]
    assert by_rank[0] == by_rank[1]
    # each rank trained on its half: 2 epochs of ~1000 rows in batches of 64
    step = by_rank[0][0]
    assert 28 <= step <= 34
    assert "unread here" not in output


def test_two_process_checkpoint_loads_in_one_process(two_process_run, capsys):
    model_dir, _ = two_process_run
    final = json.loads((model_dir / "train_eval_result.txt").read_text().splitlines()[-1])
    assert main(["eval", "--pipeline_config_path", str(model_dir / "pipeline.config")]) == 0
    single = json.loads((model_dir / "eval_result.txt").read_text().splitlines()[-1])
    assert single["global_step"] == final["global_step"]
    # eval negatives are sampled per rank, so the metrics agree only up to sampling noise
    assert single["recall@5"] == pytest.approx(final["recall@5"], abs=0.06)
    assert single["recall@5"] > 5 / 32 + 0.05  # above random (5/32): the weights were loaded


def test_two_process_checkpoint_holds_whole_tables(two_process_run, tmp_path):
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    model_dir, _ = two_process_run
    ckpt = sorted(model_dir.glob("model.ckpt-*"), key=lambda p: int(p.name.split("-")[-1]))[-1]
    dcp_to_torch_save(ckpt / "state", tmp_path / "flat.pt")
    state = torch.load(tmp_path / "flat.pt", weights_only=False)["model"]
    tables = {k: v for k, v in state.items() if k.endswith("_emb.weight")}
    assert tables[
        "model.user_tower.embedding_group.impls.__BASE__.ebc.embedding_bags.user_id_emb.weight"
    ].shape == (100000, 16)
    assert tables[
        "model.item_tower.embedding_group.impls.__NEG__.ebc.embedding_bags.item_id_emb.weight"
    ].shape == (100000, 16)
    assert len(tables) == 5
