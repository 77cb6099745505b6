"""`tzrec train` on synthetic data with planted structure: HSTUMatch learns it."""

import json
import os
import subprocess
import sys

from tzrec.hstu.synthetic import write_hstu_data


def test_hstu_match_learns_planted_structure(tmp_path, example_config, data_edits):
    paths = write_hstu_data(
        tmp_path / "data", num_rows=2000, num_eval_rows=500, num_items=600, max_history=10
    )
    model_dir = tmp_path / "model"
    edits = data_edits(
        paths,
        model_dir,
        **{
            "data_config.batch_size": 32,
            "data_config.negative_sampler.num_sample": 32 * 15,  # 480 shared negatives
            "data_config.negative_sampler.num_eval_sample": 32 * 15,
        },
    )
    # a child process: Triton's CPU interpreter (set for these tests) slows training down
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "tzrec.core.cli", "train"]
    cmd += ["--pipeline_config_path", str(example_config), "--edit_config_json", edits]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tzrec train: eval recall@1=" in proc.stdout
    final = json.loads((model_dir / "train_eval_result.txt").read_text().splitlines()[-1])
    # every positive against 480 shared negatives: random recall@5 is 5/481 ~ 0.01
    assert final["recall@5"] > 0.4, final
