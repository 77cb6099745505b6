"""The train loop: determinism, resume equal to an uninterrupted run, locking, leftovers."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core.config import parse_pipeline_config
from tzrec.core.engine import checkpoint as ckpt_mod
from tzrec.core.engine import guards, loop
from tzrec.core.engine.engine import Engine
from tzrec.core.engine.lock import DirLock, LockedError
from tzrec.core.errors import ConfigError, DataError

ROWS, BATCH = 192, 32  # 6 batches per epoch

CONFIG = """
train_input_path: "{data}"
eval_input_path: "{data}"
model_dir: "{model_dir}"
train_config {{
  sparse_optimizer {{ adagrad_optimizer {{ lr: 0.05 }} constant_learning_rate {{}} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.01 }} constant_learning_rate {{}} }}
  num_steps: {num_steps}
  save_checkpoints_steps: 4
  log_step_count_steps: 1000
  use_tensorboard: false
}}
eval_config {{}}
data_config {{
  batch_size: {batch}
  dataset_type: ParquetDataset
  label_fields: "clk"
  num_workers: 0
  shuffle: true
}}
feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: 50 embedding_dim: 4 }} }}
feature_configs {{ id_feature {{ feature_name: "item_id" num_buckets: 50 embedding_dim: 4 }} }}
model_config {{
  feature_groups {{ group_name: "all" feature_names: ["user_id", "item_id"] group_type: DEEP }}
  multi_tower {{
    towers {{ input: "all" mlp {{ hidden_units: [8] dropout_ratio: [0.5] }} }}
    final {{ hidden_units: [4] dropout_ratio: [0.5] }}
  }}
  metrics {{ auc {{}} }}
  losses {{ binary_cross_entropy {{}} }}
}}
"""


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, ROWS)
    items = rng.integers(0, 50, ROWS)
    clk = ((users + items) % 3 == 0).astype(np.int64)
    path = tmp_path_factory.mktemp("loop") / "train.parquet"
    pq.write_table(pa.table({"user_id": users, "item_id": items, "clk": clk}), path)
    return str(path)


def _config(data, model_dir, num_steps=12):
    return parse_pipeline_config(
        CONFIG.format(data=data, model_dir=model_dir, num_steps=num_steps, batch=BATCH)
    )


class Killed(BaseException):
    """Stands in for a kill: escapes every ``except Exception``."""


@pytest.fixture
def record_losses(monkeypatch):
    """Record the losses of every train step; ``kill_at`` stops a run before that step."""
    real = Engine.train_step
    rec = {"losses": [], "kill_at": None}

    def step(self, batch):
        if rec["kill_at"] is not None and len(rec["losses"]) + 1 == rec["kill_at"]:
            rec["kill_at"] = None
            raise Killed
        out = real(self, batch)
        rec["losses"].append(out)
        return out

    monkeypatch.setattr(Engine, "train_step", step)
    return rec


def _results(model_dir):
    text = (model_dir / "train_eval_result.txt").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_same_seed_one_process_two_runs_give_identical_losses_and_metrics(
    data_path, tmp_path, record_losses
):
    runs = []
    for name in ("a", "b"):
        record_losses["losses"] = []
        result = loop.train_and_evaluate(_config(data_path, tmp_path / name, num_steps=8))
        runs.append((record_losses["losses"], result["metrics"], _results(tmp_path / name)))
    assert runs[0][0] == runs[1][0] and len(runs[0][0]) == 8
    assert runs[0][1] == runs[1][1] and "auc" in runs[0][1]
    assert runs[0][2] == runs[1][2]


@pytest.mark.parametrize("kill_at", [7, 10])  # resume mid-epoch (from 4) / at its end (8)
def test_resume_after_a_kill_equals_an_uninterrupted_run_step_by_step(
    data_path, tmp_path, record_losses, kill_at
):
    loop.train_and_evaluate(_config(data_path, tmp_path / "straight"))
    straight = record_losses["losses"]
    assert len(straight) == 12

    record_losses["losses"] = []
    record_losses["kill_at"] = kill_at
    model_dir = tmp_path / "killed"
    with pytest.raises(Killed):
        loop.train_and_evaluate(_config(data_path, model_dir))
    first = record_losses["losses"]
    assert first == straight[: kill_at - 1]
    resumed_from = 4 * ((kill_at - 1) // 4)

    record_losses["losses"] = []
    loop.train_and_evaluate(_config(data_path, model_dir), continue_train=True)
    assert record_losses["losses"] == straight[resumed_from:]
    assert _results(model_dir)[-1] == _results(tmp_path / "straight")[-1]


def test_eval_cut_off_by_a_kill_runs_on_resume(data_path, tmp_path, monkeypatch):
    model_dir = tmp_path / "m"
    real = Engine.evaluate
    calls = []

    def killed_eval(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # checkpoint 8 is written, its evaluation never finishes
            raise Killed
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "evaluate", killed_eval)
    with pytest.raises(Killed):
        loop.train_and_evaluate(_config(data_path, model_dir))
    assert [r["global_step"] for r in _results(model_dir)] == [4]
    assert (model_dir / "model.ckpt-8" / "done").is_file()
    loop.train_and_evaluate(_config(data_path, model_dir), continue_train=True)
    assert [r["global_step"] for r in _results(model_dir)] == [4, 8, 12]

    monkeypatch.setattr(Engine, "evaluate", real)
    loop.train_and_evaluate(_config(data_path, tmp_path / "straight"))
    assert _results(model_dir) == _results(tmp_path / "straight")


def test_continue_train_falls_back_to_the_newest_intact_checkpoint(
    data_path, tmp_path, record_losses, caplog
):
    model_dir = tmp_path / "m"
    loop.train_and_evaluate(_config(data_path, model_dir, num_steps=8))
    straight = record_losses["losses"]
    shard = next((model_dir / "model.ckpt-8" / "state").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    record_losses["losses"] = []
    caplog.set_level("WARNING")
    loop.train_and_evaluate(_config(data_path, model_dir, num_steps=8), continue_train=True)
    assert "model.ckpt-8: corrupt checkpoint" in caplog.text and "falling back" in caplog.text
    assert record_losses["losses"] == straight[4:]
    assert ckpt_mod.verify(model_dir / "model.ckpt-8")["step"] == 8  # rewritten whole


def test_a_second_run_into_the_same_model_dir_is_refused_naming_the_holder(data_path, tmp_path):
    model_dir = tmp_path / "m"
    with DirLock(model_dir):
        with pytest.raises(LockedError) as e:
            loop.train_and_evaluate(_config(data_path, model_dir))
    msg = str(e.value)
    assert f"is in use by another training run (pid {os.getpid()}" in msg and "\n" not in msg
    assert not list(model_dir.glob("model.ckpt-*"))


def test_lock_held_by_another_live_process_is_refused(tmp_path):
    code = (
        "import sys, time; from tzrec.core.engine.lock import DirLock; "
        f"DirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {holder.pid}[,)]"):
            DirLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # killed: the kernel dropped its lock; the file it left is taken over
    lock = DirLock(tmp_path).acquire()
    assert json.loads((tmp_path / ".tzrec.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / ".tzrec.lock").exists()


def test_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".tzrec.lock").write_text(json.dumps({"pid": dead.pid, "host": "h"}))
    caplog.set_level("WARNING")
    with DirLock(tmp_path) as lock:
        assert lock.held
    assert f"taking over the lock of pid {dead.pid}" in caplog.text


def test_leftover_temp_files_of_this_model_dir_are_removed_at_start(data_path, tmp_path):
    model_dir = tmp_path / "m"
    leftover = model_dir / ".tmp-model.ckpt-4-999-abcdef01"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "__0_0.distcp").write_bytes(b"partial")
    loop.train_and_evaluate(_config(data_path, model_dir, num_steps=4))
    assert not leftover.exists()
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".")) == []


def _write(tmp_path, name, clk):
    rng = np.random.default_rng(1)
    n = len(clk)
    table = pa.table(
        {
            "user_id": rng.integers(0, 50, n),
            "item_id": rng.integers(0, 50, n),
            "clk": pa.array(clk, type=pa.float64()),
        }
    )
    path = tmp_path / name
    pq.write_table(table, path)
    return str(path)


def _unshuffled(data, model_dir, num_steps=6, eval_data=None):
    config = _config(data, model_dir, num_steps=num_steps)
    config.data_config.shuffle = False
    config.eval_input_path = eval_data or data
    return config


def _labels_with(bad_batch, value, batches=6):
    clk = [float(i % 2) for i in range(batches * BATCH)]
    for i in range(bad_batch * BATCH, bad_batch * BATCH + 3):
        clk[i] = value
    return clk


def test_nan_labels_stop_training_naming_the_step_and_column(tmp_path, monkeypatch):
    monkeypatch.delenv("TZREC_NON_FINITE_LOSS", raising=False)
    data = _write(tmp_path, "nan.parquet", _labels_with(2, float("nan")))
    model_dir = tmp_path / "m"
    with pytest.raises(guards.NonFiniteLossError) as e:
        loop.train_and_evaluate(_unshuffled(data, model_dir))
    msg = str(e.value)
    assert msg.startswith("training stopped at step 3: non-finite loss (binary_cross_entropy=nan)")
    assert "non-finite values in label 'clk' (3 values)" in msg and "\n" not in msg
    assert not list(model_dir.glob("model.ckpt-*"))  # nothing non-finite is saved
    assert not (model_dir / ".tzrec.lock").exists()


def test_skip_policy_drops_and_counts_non_finite_batches(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TZREC_NON_FINITE_LOSS", "skip")
    data = _write(tmp_path, "nan.parquet", _labels_with(2, float("inf")))
    clean = _write(tmp_path, "clean.parquet", _labels_with(0, 0.0))
    model_dir = tmp_path / "m"
    caplog.set_level("WARNING")
    result = loop.train_and_evaluate(_unshuffled(data, model_dir, num_steps=0, eval_data=clean))
    assert result["skipped_non_finite"] == 1
    assert result["global_step"] == 5  # 6 batches, one skipped
    assert "1 batch(es) skipped for a non-finite loss" in caplog.text
    assert all(np.isfinite(v) for v in result["metrics"].values())


def test_bce_labels_outside_0_1_are_one_line_naming_the_column(tmp_path, monkeypatch):
    data = _write(tmp_path, "five.parquet", _labels_with(1, 5.0))
    with pytest.raises(DataError) as e:
        loop.train_and_evaluate(_unshuffled(data, tmp_path / "m"))
    assert str(e.value) == (
        f"{data}: label 'clk' holds 3 value(s) outside [0, 1] in a batch (e.g. 5); "
        "binary_cross_entropy needs labels in [0, 1]"
    )


def test_eval_on_labels_outside_the_domain_is_one_line(tmp_path):
    good = _write(tmp_path, "good.parquet", _labels_with(0, 1.0))
    bad = _write(tmp_path, "bad.parquet", _labels_with(0, -1.0))
    model_dir = tmp_path / "m"
    loop.train_and_evaluate(_unshuffled(good, model_dir, num_steps=2, eval_data=good))
    config = _unshuffled(good, model_dir, eval_data=bad)
    with pytest.raises(DataError, match=f"{bad}: label 'clk' holds 3 value.s. outside .0, 1."):
        loop.evaluate(config)


def test_train_metrics_are_logged_and_written_to_tensorboard(
    data_path, tmp_path, monkeypatch, caplog
):
    from tzrec.core.engine import summary as summary_mod

    seen = []

    def update_train_metric(self, predictions, batch):
        seen.append((predictions["probs"].dtype, batch.labels["clk"].shape[0]))

    def compute_train_metric(self):
        return {"batches": torch.tensor(float(len(seen)))}

    from tzrec.models.rank import RankModel

    monkeypatch.setattr(RankModel, "update_train_metric", update_train_metric, raising=False)
    monkeypatch.setattr(RankModel, "compute_train_metric", compute_train_metric, raising=False)
    written = []
    real_log_train = summary_mod.Summary.log_train

    def spy(self, step, losses, lrs=None, metrics=None):
        written.append((step, dict(metrics or {})))
        return real_log_train(self, step, losses, lrs, metrics)

    monkeypatch.setattr(summary_mod.Summary, "log_train", spy)
    config = _config(data_path, tmp_path / "m", num_steps=4)
    config.train_config.log_step_count_steps = 2
    config.model_config.train_metrics.add().auc.SetInParent()
    caplog.set_level("INFO")
    loop.train_and_evaluate(config)
    assert seen == [(torch.float32, BATCH)] * 4
    assert written == [(2, {"batches": 2.0}), (4, {"batches": 4.0})]
    assert "train metrics at step 4: batches:4.000000" in caplog.text


def _table(engine, feature):
    for name, value in engine.dmp.state_dict().items():
        if "embedding_bags" in name and f".{feature}" in name:
            return name, value.local_shards()[0].tensor
    raise AssertionError(f"no table for {feature}")


def test_fine_tune_ckpt_param_map_loads_a_renamed_table(data_path, tmp_path):
    from tzrec.core import build
    from tzrec.core.engine.distributed import init_distributed

    base_dir = tmp_path / "base"
    loop.train_and_evaluate(_config(data_path, base_dir, num_steps=4))
    config = _config(data_path, tmp_path / "tuned", num_steps=4)
    features = build.create_features(config)
    engine = Engine(config, build.build_model(config, features), init_distributed(), True)
    user_name, _ = _table(engine, "user_id")
    item_name, _ = _table(engine, "item_id")
    base = Engine(config, build.build_model(config, features), init_distributed(), True)
    base.restore(base_dir / "model.ckpt-4")
    map_file = tmp_path / "map.txt"
    map_file.write_text(f"# user table from the base run's item table\n{user_name} {item_name}\n")
    report = engine.fine_tune_from(base_dir / "model.ckpt-4", ckpt_mod.read_param_map(map_file))
    assert report.remapped == {user_name: item_name}
    assert torch.equal(_table(engine, "user_id")[1], _table(base, "item_id")[1])
    assert torch.equal(_table(engine, "item_id")[1], _table(base, "item_id")[1])


def test_param_map_problems_are_one_line_before_training(data_path, tmp_path):
    base_dir = tmp_path / "base"
    loop.train_and_evaluate(_config(data_path, base_dir, num_steps=4))
    map_file = tmp_path / "map.txt"
    map_file.write_text("model.nope.weight model.final.weight\n")
    config = _config(data_path, tmp_path / "tuned", num_steps=4)
    config.train_config.fine_tune_checkpoint = str(base_dir)
    config.train_config.fine_tune_ckpt_param_map = str(map_file)
    with pytest.raises(ConfigError, match="fine_tune_ckpt_param_map: model.nope.weight is not"):
        loop.train_and_evaluate(config)
    config.ClearField("train_config")
    config.MergeFrom(_config(data_path, tmp_path / "other", num_steps=4))
    config.train_config.fine_tune_ckpt_param_map = str(map_file)
    with pytest.raises(ConfigError, match="is set but there is no fine_tune_checkpoint"):
        loop.train_and_evaluate(config)
