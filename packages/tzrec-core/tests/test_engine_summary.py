import json
import logging

import pytest
import torch

from tzrec.core.engine.summary import (
    EVAL_RESULT_FILENAME,
    TRAIN_EVAL_RESULT_FILENAME,
    TRAINING_CURVE_FILENAME,
    ProgressReporter,
    Summary,
    best_eval_step,
    learning_rates,
    read_eval_results,
    read_scalars,
    write_eval_result,
    write_training_curve,
)


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_summary_writes_losses_total_lr_and_metrics(tmp_path):
    with Summary(tmp_path, enabled=True) as summary:
        summary.log_train(
            5, {"bce": torch.tensor(0.5), "l2": 0.25}, lrs=[0.1, 0.01], metrics={"auc": 0.7}
        )
        summary.log_eval(5, {"recall@5": torch.tensor(0.3)})
    scalars = _scalars(tmp_path)
    assert scalars["loss/bce"] == [(5, pytest.approx(0.5))]
    assert scalars["loss/total"] == [(5, pytest.approx(0.75))]
    assert scalars["lr/g0"] == [(5, pytest.approx(0.1))]
    assert scalars["lr/g1"] == [(5, pytest.approx(0.01))]
    assert scalars["metric/auc"] == [(5, pytest.approx(0.7))]
    # evaluation goes to eval_val/ as upstream, so TensorBoard shows train and eval as two runs
    assert "metric/recall@5" not in scalars
    assert _scalars(tmp_path / "eval_val")["metric/recall@5"] == [(5, pytest.approx(0.3))]


def test_summary_is_a_no_op_off_rank_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    summary = Summary(tmp_path / "tb")
    assert summary.enabled is False
    summary.log_train(1, {"loss": 1.0})
    summary.close()
    assert not (tmp_path / "tb").exists()


def test_learning_rates_reads_every_param_group():
    p = torch.nn.Parameter(torch.zeros(1))
    q = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.1}, {"params": [q], "lr": 0.2}])
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    assert learning_rates(opt, opt2) == pytest.approx([0.1, 0.2, 0.3])


def test_progress_reporter_formats_and_counts(capsys, caplog):
    with caplog.at_level(logging.INFO):
        with ProgressReporter("Training", total=10, enabled=True, log_interval_s=0) as bar:
            bar.update(3, {"a": torch.tensor(0.5), "b": 0.25}, lrs=[0.001], metrics={"auc": 0.6})
            assert bar.step == 3
            assert bar.steps_per_second() > 0
            text = bar.format({"a": 0.5, "b": 0.25}, [0.001], {"auc": 0.6})
    assert text == "lr_g0:0.00100 a:0.50000 b:0.25000 total_loss:0.75000 auc:0.60000"
    err = capsys.readouterr().err
    assert "Training" in err and "3/10" in err
    assert "Training step 3" in caplog.text and "steps/s" in caplog.text


def test_progress_reporter_disabled_off_rank_zero(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    bar = ProgressReporter("Training", total=5)
    bar.update(2, {"loss": 1.0})
    bar.close()
    assert bar.enabled is False and capsys.readouterr().err == ""


def test_eval_result_file_has_one_sorted_json_line_per_eval(tmp_path):
    path = tmp_path / TRAIN_EVAL_RESULT_FILENAME
    write_eval_result(path, 100, {"recall@5": torch.tensor(0.2), "auc": 0.7}, enabled=True)
    write_eval_result(path, 200, {"recall@5": 0.4, "auc": 0.6}, enabled=True)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"global_step": 100, "auc": 0.7, "recall@5": pytest.approx(0.2)}
    assert list(json.loads(lines[0])) == ["global_step", "auc", "recall@5"]
    assert [r["global_step"] for r in read_eval_results(path)] == [100, 200]
    assert best_eval_step(path, "auc") == 100
    assert best_eval_step(path, "recall@5") == 200
    assert best_eval_step(path, "auc", larger_is_better=False) == 200
    with pytest.raises(KeyError, match="several metrics"):
        best_eval_step(path)
    with pytest.raises(KeyError, match="no metric 'gauc'"):
        best_eval_step(path, "gauc")


def test_eval_result_not_written_off_rank_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    assert write_eval_result(tmp_path / EVAL_RESULT_FILENAME, 1, {"auc": 0.5}) is None
    assert not (tmp_path / EVAL_RESULT_FILENAME).exists()
    assert read_eval_results(tmp_path / EVAL_RESULT_FILENAME) == []
    assert best_eval_step(tmp_path / EVAL_RESULT_FILENAME, "auc") is None


def test_closing_a_summary_draws_the_training_curve_from_all_runs(tmp_path):
    from PIL import Image

    with Summary(tmp_path, enabled=True) as first:
        for step in (10, 20):
            first.log_train(step, {"loss": 1.0 / step})
        first.log_eval(20, {"recall@5": 0.4})
    with Summary(tmp_path, enabled=True) as resumed:  # a resumed run: a second event file
        resumed.log_train(30, {"loss": 0.01})
        resumed.log_eval(30, {"recall@5": 0.6})
    assert read_scalars(tmp_path)["loss/total"] == [
        (10, pytest.approx(0.1)),
        (20, pytest.approx(0.05)),
        (30, pytest.approx(0.01)),
    ]
    png = tmp_path / TRAINING_CURVE_FILENAME
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (900, 620)
        colours = {c[:3] for _, c in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert (0x1F, 0x77, 0xB4) in colours  # matplotlib's first line colour: a series was drawn


def test_training_curve_needs_something_to_draw(tmp_path):
    assert write_training_curve(tmp_path) is None
    assert not (tmp_path / TRAINING_CURVE_FILENAME).exists()


def test_progress_totals_come_from_the_dataset_batch_count():
    """Train and eval bars get a total (so tqdm shows an ETA) when the reader can count."""
    from types import SimpleNamespace

    from tzrec.core.engine.engine import expected_batches
    from tzrec.core.engine.loop import _epoch_steps

    counted = SimpleNamespace(num_batches=lambda: 6)
    unknown = SimpleNamespace(num_batches=lambda: None)
    assert expected_batches(SimpleNamespace(dataset=counted)) == 6
    assert expected_batches(SimpleNamespace(dataset=counted), max_steps=4) == 4
    assert expected_batches(SimpleNamespace(dataset=unknown)) is None
    assert expected_batches(SimpleNamespace(dataset=unknown), max_steps=4) == 4
    assert expected_batches(object()) is None
    assert _epoch_steps(counted, 3) == 18
    assert _epoch_steps(counted, 0) is None  # a step-bounded run shows num_steps instead
    assert _epoch_steps(unknown, 3) is None
