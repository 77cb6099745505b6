"""The checkpoint store: atomic saves, manifest verification, selection, (partial) loads."""

import errno
import hashlib
import json
import logging
import os

import pytest
import torch
from torch import nn
from torchrec.optim.keyed import KeyedOptimizerWrapper

from tzrec.core.engine import checkpoint as ckpt_mod
from tzrec.core.engine import distributed as dist_util
from tzrec.core.engine.checkpoint import (
    CheckpointError,
    CheckpointStore,
    checkpoint_step,
    load,
    load_partial,
    read_extra,
    read_param_map,
    read_rng,
    verify,
)
from tzrec.core.errors import ConfigError


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))


def _optimizer(model):
    params = dict(model.named_parameters())
    return KeyedOptimizerWrapper(params, lambda ps: torch.optim.Adam(ps, lr=0.1))


def _train_one_step(model, opt):
    opt.zero_grad()
    model(torch.randn(8, 3)).pow(2).mean().backward()
    opt.step()


def test_save_then_load_round_trips_model_optimizer_extra_and_rng(tmp_path):
    model = _model()
    opt = _optimizer(model)
    _train_one_step(model, opt)
    rng = dist_util.capture_rng()
    path = CheckpointStore(tmp_path).save(10, model, opt, {"epoch": 2, "global_step": 10}, rng)
    assert path == tmp_path / "model.ckpt-10" and path.is_dir()
    assert sorted(p.name for p in path.iterdir()) == ["done", "extra.json", "rng", "state"]

    other = _model(seed=1)
    other_opt = _optimizer(other)
    load(path, other, other_opt)
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    saved = opt.state_dict()["state"]["0.weight"]["exp_avg"]
    torch.testing.assert_close(other_opt.state_dict()["state"]["0.weight"]["exp_avg"], saved)
    assert read_extra(path) == {"epoch": 2, "global_step": 10}
    assert read_rng(path, 0) == json.loads(json.dumps(rng))
    assert read_rng(path, 1) is None


def test_manifest_is_written_last_with_sizes_and_checksums(tmp_path):
    path = CheckpointStore(tmp_path).save(8, _model(), extra={"global_step": 8})
    manifest = json.loads((path / "done").read_text())
    assert manifest["step"] == 8 and manifest["format"] == 2 and manifest["world_size"] == 1
    on_disk = sorted(
        p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != "done"
    )
    assert sorted(manifest["files"]) == on_disk and "state/.metadata" in on_disk
    for name, info in manifest["files"].items():
        data = (path / name).read_bytes()
        assert info == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_latest_picks_highest_step_numerically(tmp_path):
    store = CheckpointStore(tmp_path)
    for step in (9, 100, 20):
        store.save(step, _model())
    path, step = store.latest()
    assert step == 100 and path.name == "model.ckpt-100"
    assert [s for s, _ in store.checkpoints()] == [9, 20, 100]


def test_empty_or_missing_model_dir_has_no_checkpoint(tmp_path):
    assert CheckpointStore(tmp_path / "absent").latest() == (None, -1)
    with pytest.raises(CheckpointError, match="no checkpoint to evaluate; train first"):
        CheckpointStore(tmp_path).require(None, "evaluate")


def test_crash_mid_save_leaves_the_previous_checkpoint_latest(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    store.save(5, _model(5))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ckpt_mod, "_describe_files", killed)
    with pytest.raises(KeyboardInterrupt):
        store.save(6, _model(6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt-5"]
    assert store.latest()[1] == 5


def test_leftover_temp_dir_of_a_killed_process_is_ignored_then_cleaned(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(5, _model())
    # what `kill -9` during a save leaves: a temp dir with partial files, no manifest
    leftover = tmp_path / ".tmp-model.ckpt-6-1234-deadbeef"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "__0_0.distcp").write_bytes(b"\x80\x02partial")
    stray = tmp_path / ".tmp-extra.json-0badf00d"
    stray.write_text("{")
    assert store.latest()[1] == 5
    assert sorted(store.remove_stale_tmp()) == sorted([leftover, stray])
    assert not leftover.exists() and not stray.exists()


def test_temp_names_are_unique_per_save(tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace

    def spy(a, b):
        renamed.append((os.path.basename(a), os.path.basename(b)))
        return real_replace(a, b)

    monkeypatch.setattr(ckpt_mod.os, "replace", spy)
    store = CheckpointStore(tmp_path)
    store.save(3, _model())
    store.save(3, _model(1))
    tmps = [a for a, b in renamed if b == "model.ckpt-3"]
    assert len(tmps) == 2 and tmps[0] != tmps[1]
    assert all(t.startswith(f".tmp-model.ckpt-3-{os.getpid()}-") for t in tmps)


def test_checkpoint_dir_without_manifest_is_not_trusted(tmp_path, caplog):
    store = CheckpointStore(tmp_path)
    store.save(5, _model())
    partial = tmp_path / "model.ckpt-9"
    partial.mkdir()
    (partial / "state").mkdir()
    with caplog.at_level(logging.WARNING):
        assert store.latest()[1] == 5
    assert "incomplete checkpoint" in caplog.text
    with pytest.raises(CheckpointError, match="no done manifest"):
        store.resolve(partial)


def test_save_is_fsynced_then_renamed_into_place(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(ckpt_mod.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(
        ckpt_mod.os,
        "replace",
        lambda a, b: (events.append(("replace", os.path.basename(b))), real_replace(a, b)),
    )
    CheckpointStore(tmp_path).save(3, _model(), extra={"global_step": 3})
    replace_at = events.index(("replace", "model.ckpt-3"))
    manifest_at = events.index(("replace", "done"))
    assert manifest_at < replace_at  # the manifest is in place before the directory is
    assert events[:manifest_at].count("fsync") >= 2  # extra.json, the manifest (+ dirs)
    assert "fsync" in events[replace_at:]  # the model_dir entry too


def test_resaving_same_step_replaces_it(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(4, _model(1))
    second = _model(2)
    store.save(4, second)
    target = _model(3)
    load(store.latest()[0], target)
    torch.testing.assert_close(target[0].weight, second[0].weight)
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt-4"]


def test_keep_checkpoint_max_prunes_oldest(tmp_path):
    store = CheckpointStore(tmp_path, keep_checkpoint_max=2)
    for step in range(1, 5):
        store.save(step * 10, _model())
    assert [s for s, _ in store.checkpoints()] == [30, 40]
    keep_all = CheckpointStore(tmp_path / "all", keep_checkpoint_max=0)
    for step in range(1, 5):
        keep_all.save(step, _model())
    assert len(keep_all.checkpoints()) == 4


def test_resolve_explicit_path_and_model_dir(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(1, _model())
    store.save(2, _model())
    assert store.resolve(tmp_path / "model.ckpt-1") == tmp_path / "model.ckpt-1"
    assert CheckpointStore(tmp_path / "x").resolve(tmp_path) == tmp_path / "model.ckpt-2"
    with pytest.raises(CheckpointError, match="no complete model.ckpt-<step> checkpoint"):
        store.resolve(tmp_path / "nowhere")
    assert checkpoint_step(tmp_path / "model.ckpt-123") == 123
    assert checkpoint_step("model.ckpt-x") == -1


def test_best_selects_by_metric_and_skips_pruned_steps(tmp_path):
    store = CheckpointStore(tmp_path)
    for step in (10, 20, 30):
        store.save(step, _model())
    rows = [{"global_step": 10, "auc": 0.7}, {"global_step": 20, "auc": 0.9}]
    rows += [{"global_step": 30, "auc": 0.8}, {"global_step": 40, "auc": 0.99}]  # 40 is gone
    (tmp_path / "train_eval_result.txt").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert store.best("auc").name == "model.ckpt-20"
    assert store.best("auc", larger_is_better=False).name == "model.ckpt-10"
    assert store.select(None, "export", "best", "auc", True).name == "model.ckpt-20"
    assert store.select(None, "export", "latest").name == "model.ckpt-30"
    assert store.evaluated_steps() == {10, 20, 30, 40}


def test_truncated_file_is_reported_as_corrupt_not_as_another_config(tmp_path):
    path = CheckpointStore(tmp_path).save(1, _model())
    shard = next((path / "state").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="corrupt checkpoint") as e:
        load(path, _model())
    assert "different config" not in str(e.value) and "truncated" in str(e.value)
    assert "\n" not in str(e.value)


def test_changed_bytes_and_missing_state_dir_are_corrupt(tmp_path):
    store = CheckpointStore(tmp_path)
    a = store.save(1, _model())
    shard = next((a / "state").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        verify(a)
    b = store.save(2, _model())
    import shutil

    shutil.rmtree(b / "state")
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint \(state/.* missing\)"):
        verify(b)


def test_latest_intact_falls_back_to_the_newest_complete_checkpoint(tmp_path, caplog):
    store = CheckpointStore(tmp_path)
    store.save(1, _model())
    bad = store.save(2, _model())
    (bad / "extra.json").write_text("")
    with caplog.at_level(logging.WARNING):
        assert store.latest_intact() == (tmp_path / "model.ckpt-1", 1)
    assert "model.ckpt-2: corrupt checkpoint" in caplog.text
    assert "falling back" in caplog.text


def test_first_format_manifest_still_loads(tmp_path):
    model = _model()
    path = CheckpointStore(tmp_path).save(1, model)
    (path / "done").write_text(json.dumps({"step": 1, "files": ["state", "extra.json"]}))
    target = _model(1)
    load(path, target)
    torch.testing.assert_close(target[2].bias, model[2].bias)


def test_mismatched_model_is_one_line(tmp_path):
    path = CheckpointStore(tmp_path).save(1, _model())
    with pytest.raises(CheckpointError, match="does not match this model") as e:
        load(path, nn.Sequential(nn.Linear(3, 9), nn.ReLU(), nn.Linear(9, 1)))
    assert "\n" not in str(e.value)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/full/disk/file")


def test_disk_full_inside_torch_checkpoint_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    store = CheckpointStore(tmp_path)
    store.save(1, _model())
    monkeypatch.setattr(FileSystemWriter, "write_data", _enospc)
    with pytest.raises(CheckpointError) as e:
        store.save(2, _model())
    msg = str(e.value)
    assert msg.startswith(f"could not write checkpoint {tmp_path / 'model.ckpt-2'}: ")
    assert "[Errno 28 ENOSPC] No space left on device: /full/disk/file" in msg
    assert "\n" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt-1"]


def test_disk_full_writing_the_manifest_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    monkeypatch.setattr(ckpt_mod, "write_json_atomic", _enospc)
    with pytest.raises(CheckpointError, match=r"\[Errno 28 ENOSPC\]"):
        store.save(2, _model())
    assert list(tmp_path.iterdir()) == []


def test_partial_load_maps_names_and_reports_the_rest(tmp_path, caplog):
    src = _model(seed=3)
    path = CheckpointStore(tmp_path / "pretrained").save(100, src)

    class Target(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(3, 4)  # "0" in the checkpoint
            self.head = nn.Linear(4, 2)  # another shape than "2"
            self.extra = nn.Linear(2, 2)  # not in the checkpoint

    target = Target()
    map_file = tmp_path / "map.txt"
    map_file.write_text(
        "# model name  checkpoint name\nencoder.weight\t0.weight\n"
        "encoder.bias 0.bias\nhead.weight 2.weight\n"
    )
    report = load_partial(path, target, read_param_map(map_file))
    torch.testing.assert_close(target.encoder.weight, src[0].weight)
    torch.testing.assert_close(target.encoder.bias, src[0].bias)
    assert report.remapped == {"encoder.weight": "0.weight", "encoder.bias": "0.bias"}
    assert report.mismatched == ["head.weight"]
    assert sorted(report.missing) == ["extra.bias", "extra.weight", "head.bias"]
    assert report.loaded == ["encoder.weight", "encoder.bias"]


def test_partial_load_same_names_without_a_map(tmp_path):
    src = _model(seed=3)
    path = CheckpointStore(tmp_path).save(1, src)
    target = _model(seed=4)
    report = load_partial(path, target)
    assert report.missing == [] and report.mismatched == [] and report.remapped == {}
    torch.testing.assert_close(target[2].weight, src[2].weight)


def test_param_map_naming_an_unknown_parameter_is_refused(tmp_path):
    path = CheckpointStore(tmp_path).save(1, _model())
    with pytest.raises(ConfigError, match="fine_tune_ckpt_param_map: nope.weight is not in"):
        load_partial(path, _model(), {"nope.weight": "0.weight"})


def test_bad_param_map_line_is_config_error(tmp_path):
    f = tmp_path / "map.txt"
    f.write_text("a b c\n")
    with pytest.raises(ConfigError, match="map.txt:1"):
        read_param_map(f)
    with pytest.raises(ConfigError, match="fine_tune_ckpt_param_map: .*missing.txt"):
        read_param_map(tmp_path / "missing.txt")


def test_two_tensors_mapped_to_one_checkpoint_entry_both_load_it(tmp_path):
    src = _model(seed=5)
    path = CheckpointStore(tmp_path).save(1, src)
    target = nn.ModuleDict({"a": nn.Linear(3, 4), "b": nn.Linear(3, 4)})
    report = load_partial(path, target, {"a.weight": "0.weight", "b.weight": "0.weight"})
    torch.testing.assert_close(target["a"].weight, src[0].weight)
    torch.testing.assert_close(target["b"].weight, src[0].weight)
    assert report.remapped == {"a.weight": "0.weight", "b.weight": "0.weight"}
