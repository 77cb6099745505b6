"""Evaluating one checkpoint with 1 and with 2 CPU processes (torchrun, gloo) gives one result.

Every rank reads a disjoint share of the eval rows with the same number of batches (the
eval file has a single row group: fewer units than ranks), and the metrics are reduced
across ranks, so the AUC over all rows does not depend on the process count (that each row
is read exactly once is pinned row by row in tzrec-data's test_data_eval_shards.py).
"""

import json
import sys
from pathlib import Path

import pytest

from tzrec.core.cli import main
from tzrec.core.testing import run
from tzrec.data.testing import write_din_data

REPO_ROOT = Path(__file__).resolve().parents[1]

DIN = REPO_ROOT / "docs" / "examples" / "multi_tower_din.config"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_eval")
    # 150 eval rows in one row group: 3 record batches of <= 64 rows for 2 ranks (before,
    # ranks striped whole record batches, got 2 and 1, and the first stopped early)
    paths = write_din_data(root / "data", num_rows=600)
    model_dir = root / "model"
    edits = {
        "train_input_path": paths["train"],
        "eval_input_path": paths["eval"],
        "model_dir": str(model_dir),
        "data_config.batch_size": 64,
        "data_config.num_workers": 0,
        "train_config.num_epochs": 1,
    }
    code = main(
        ["train", "--pipeline_config_path", str(DIN), "--edit_config_json", json.dumps(edits)]
    )
    assert code == 0
    return model_dir


def _last_result(model_dir, name):
    return json.loads((model_dir / name).read_text().splitlines()[-1])


def test_one_and_two_processes_give_the_same_eval_metrics(trained):
    pipeline = str(trained / "pipeline.config")
    assert (
        main(["eval", "--pipeline_config_path", pipeline, "--eval_result_filename", "one.txt"]) == 0
    )
    proc = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            "-m",
            "tzrec.core.cli",
            "eval",
            "--pipeline_config_path",
            pipeline,
            "--eval_result_filename",
            "two.txt",
        ],
        timeout=300,
    )
    one, two = _last_result(trained, "one.txt"), _last_result(trained, "two.txt")
    assert one["global_step"] == two["global_step"]
    assert 0.0 < one["auc"] < 1.0
    assert two["auc"] == pytest.approx(one["auc"], abs=1e-6)
    assert "unread here" not in proc.stdout + proc.stderr  # no rank stopped early
