import json
import logging
import os

import pytest
import torch
from torch import nn

from tzrec.core.engine import checkpoint as ckpt_mod
from tzrec.core.engine.checkpoint import (
    CheckpointManager,
    checkpoint_step,
    fine_tune_from,
    load_state_into,
    read_param_map,
)
from tzrec.core.errors import ConfigError


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))


def _train_one_step(model, opt):
    opt.zero_grad()
    model(torch.randn(8, 3)).pow(2).mean().backward()
    opt.step()


def test_save_then_restore_round_trips_model_optimizer_and_extra(tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    _train_one_step(model, opt)
    mgr = CheckpointManager(tmp_path)
    path = mgr.save(10, model.state_dict(), opt.state_dict(), {"epoch": 2, "position": [3, 7]})
    assert path == tmp_path / "model.ckpt-10" and path.is_dir()
    assert sorted(p.name for p in path.iterdir()) == [
        "done",
        "extra.pt",
        "model.pt",
        "optimizer.pt",
    ]

    other = _model(seed=1)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.1)
    restored = CheckpointManager(tmp_path).restore(other, other_opt)
    assert restored.step == 10 and restored.extra == {"epoch": 2, "position": [3, 7]}
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_latest_picks_highest_step_numerically(tmp_path):
    mgr = CheckpointManager(tmp_path)
    for step in (9, 100, 20):
        mgr.save(step, {"w": torch.tensor(step)})
    path, step = mgr.latest()
    assert step == 100 and path.name == "model.ckpt-100"
    assert [s for s, _ in mgr.checkpoints()] == [9, 20, 100]


def test_empty_or_missing_model_dir_has_no_latest(tmp_path):
    assert CheckpointManager(tmp_path / "absent").latest() == (None, -1)
    assert CheckpointManager(tmp_path).restore(_model()) is None


def test_crash_mid_save_resumes_from_previous_good_checkpoint(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path)
    mgr.save(5, {"w": torch.tensor(5.0)})

    calls = []

    def dying_write(path, state):
        calls.append(path.name)
        if len(calls) == 2:  # model.pt written, killed while writing the optimizer
            path.write_bytes(b"\x80partial")
            raise KeyboardInterrupt("killed")
        CheckpointManager.write_state(mgr, path, state)

    monkeypatch.setattr(mgr, "write_state", dying_write)
    with pytest.raises(KeyboardInterrupt):
        mgr.save(6, {"w": torch.tensor(6.0)}, {"state": {}})
    assert not (tmp_path / "model.ckpt-6").exists()
    path, step = CheckpointManager(tmp_path).latest()
    assert step == 5
    assert CheckpointManager(tmp_path).load().model_state["w"].item() == 5.0


def test_leftover_temp_dir_from_a_killed_process_is_ignored_and_cleaned(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(5, {"w": torch.tensor(5.0)})
    # What `kill -9` during a save leaves: a temp dir with partial files, no marker.
    leftover = tmp_path / ".tmp-model.ckpt-6-deadbeef"
    leftover.mkdir()
    (leftover / "model.pt").write_bytes(b"\x80\x02partial")
    assert mgr.latest()[1] == 5
    mgr.save(7, {"w": torch.tensor(7.0)})
    assert not leftover.exists()
    assert mgr.latest()[1] == 7


def test_checkpoint_dir_without_done_marker_is_not_trusted(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path)
    mgr.save(5, {"w": torch.tensor(5.0)})
    partial = tmp_path / "model.ckpt-9"
    partial.mkdir()
    (partial / "model.pt").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING):
        assert mgr.latest()[1] == 5
    assert "incomplete checkpoint" in caplog.text
    with pytest.raises(FileNotFoundError, match="no done marker"):
        mgr.load(partial)


def test_save_is_fsynced_and_renamed_into_place(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(ckpt_mod.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(
        ckpt_mod.os,
        "replace",
        lambda a, b: (events.append(("replace", os.path.basename(b))), real_replace(a, b)),
    )
    CheckpointManager(tmp_path).save(3, {"w": torch.tensor(1.0)})
    replace_at = events.index(("replace", "model.ckpt-3"))
    assert events[:replace_at].count("fsync") >= 3  # model, extra, done marker (+ dir)
    assert "fsync" in events[replace_at:]  # the model_dir entry too


def test_resaving_same_step_replaces_it(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(4, {"w": torch.tensor(1.0)})
    mgr.save(4, {"w": torch.tensor(2.0)})
    assert mgr.load().model_state["w"].item() == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt-4"]


def test_keep_checkpoint_max_prunes_oldest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_checkpoint_max=2)
    for step in range(1, 5):
        mgr.save(step * 10, {"w": torch.tensor(step)})
    assert [s for s, _ in mgr.checkpoints()] == [30, 40]
    keep_all = CheckpointManager(tmp_path / "all", keep_checkpoint_max=0)
    for step in range(1, 5):
        keep_all.save(step, {})
    assert len(keep_all.checkpoints()) == 4


def test_non_writer_rank_writes_nothing(tmp_path):
    mgr = CheckpointManager(tmp_path, is_writer=False)
    path = mgr.save(1, {"w": torch.tensor(1.0)})
    assert path.name == "model.ckpt-1" and not path.exists()


def test_writer_defaults_to_rank_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert CheckpointManager(tmp_path).is_writer is False
    monkeypatch.setenv("RANK", "0")
    assert CheckpointManager(tmp_path).is_writer is True


def test_restore_explicit_path_and_model_dir(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, {"w": torch.tensor(1.0)})
    mgr.save(2, {"w": torch.tensor(2.0)})
    assert mgr.load(tmp_path / "model.ckpt-1").model_state["w"].item() == 1.0
    assert CheckpointManager(tmp_path / "x").load(tmp_path).step == 2
    assert checkpoint_step(tmp_path / "model.ckpt-123") == 123
    assert checkpoint_step("model.ckpt-x") == -1


def test_strict_restore_rejects_a_mismatched_model(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _model().state_dict())
    with pytest.raises(RuntimeError, match="does not match"):
        mgr.restore(nn.Linear(3, 1))


def test_fine_tune_reports_missing_unexpected_renamed_and_mismatched(tmp_path, caplog):
    src = _model(seed=3)
    CheckpointManager(tmp_path / "pretrained").save(100, src.state_dict())

    class Target(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(3, 4)  # renamed from "0"
            self.head = nn.Linear(4, 2)  # new head, different shape from "2"
            self.extra = nn.Linear(2, 2)  # not in the checkpoint

    target = Target()
    map_file = tmp_path / "map.txt"
    map_file.write_text(
        "# model name  checkpoint name\nencoder.weight 0.weight\n"
        "encoder.bias 0.bias\nhead.weight 2.weight\n"
    )
    with caplog.at_level(logging.INFO):
        report = fine_tune_from(target, tmp_path / "pretrained", map_file)
    torch.testing.assert_close(target.encoder.weight, src[0].weight)
    assert report.remapped == {
        "encoder.weight": "0.weight",
        "encoder.bias": "0.bias",
        "head.weight": "2.weight",
    }
    assert report.shape_mismatch == ["head.weight"]
    assert set(report.missing) == {"head.bias", "extra.weight", "extra.bias"}
    assert report.unexpected == ["2.bias"]
    assert not report.loaded_all
    assert "not in checkpoint" in caplog.text and "shape differs" in caplog.text


def test_load_state_into_exact_match_loads_all():
    a, b = _model(0), _model(1)
    report = load_state_into(b, a.state_dict())
    assert report.loaded_all
    torch.testing.assert_close(b[2].bias, a[2].bias)


def test_bad_param_map_line_is_config_error(tmp_path):
    f = tmp_path / "map.txt"
    f.write_text("a b c\n")
    with pytest.raises(ConfigError, match="map.txt:1"):
        read_param_map(f)


def test_done_marker_records_step_and_files(tmp_path):
    path = CheckpointManager(tmp_path).save(8, {"w": torch.tensor(1.0)})
    assert json.loads((path / "done").read_text()) == {"step": 8, "files": ["model.pt", "extra.pt"]}


def test_storage_can_be_swapped_by_subclassing(tmp_path):
    class JsonManager(CheckpointManager):
        def write_state(self, path, state):
            path.write_text(json.dumps({k: float(v) for k, v in state.items()}))

        def read_state(self, path):
            return json.loads(path.read_text())

    mgr = JsonManager(tmp_path)
    mgr.save(1, {"w": torch.tensor(2.5)})
    assert mgr.load().model_state == {"w": 2.5}
