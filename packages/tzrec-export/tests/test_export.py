"""`tzrec export` / `predict` / `eval-retrieval` end to end on DSSM and MultiTowerDIN."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core.build import build_dataset
from tzrec.core.cli import main
from tzrec.core.config import load_pipeline_config
from tzrec.data.testing import assert_outputs_close, random_inputs, write_din_data, write_dssm_data
from tzrec.export.artifact import load_exported
from tzrec.export.exporter import load_trained_model, resolve_checkpoint
from tzrec.export.wrappers import export_modules
from tzrec.models.inference import inputs_from_batch

REPO_ROOT = Path(__file__).resolve().parents[3]
DSSM = REPO_ROOT / "docs" / "examples" / "dssm.config"
DIN = REPO_ROOT / "docs" / "examples" / "multi_tower_din.config"


def train(config: Path, edits: dict) -> None:
    rc = main(
        ["train", "--pipeline_config_path", str(config), "--edit_config_json", json.dumps(edits)]
    )
    assert rc == 0


@pytest.fixture(scope="module")
def dssm(tmp_path_factory):
    root = tmp_path_factory.mktemp("dssm_export")
    paths = write_dssm_data(root / "data")
    model_dir = root / "model"
    train(
        DSSM,
        {
            "train_input_path": paths["train"],
            "eval_input_path": paths["eval"],
            "model_dir": str(model_dir),
            "data_config.negative_sampler.input_path": paths["items"],
            "data_config.negative_sampler.num_sample": 31,
            "data_config.batch_size": 64,
            "data_config.num_workers": 0,
            "train_config.num_epochs": 3,
        },
    )
    return paths, model_dir


@pytest.fixture(scope="module")
def din(tmp_path_factory):
    root = tmp_path_factory.mktemp("din_export")
    paths = write_din_data(root / "data", num_rows=600)
    model_dir = root / "model"
    train(
        DIN,
        {
            "train_input_path": paths["train"],
            "eval_input_path": paths["eval"],
            "model_dir": str(model_dir),
            "data_config.num_workers": 0,
            "train_config.num_steps": 20,
        },
    )
    return paths, model_dir


def export(model_dir: Path, out: Path, *extra: str) -> int:
    args = ["export", "--pipeline_config_path", str(model_dir / "pipeline.config")]
    return main([*args, "--export_dir", str(out), *extra])


def eval_batches(model_dir: Path, batch_size: int):
    config = load_pipeline_config(str(model_dir / "pipeline.config"))
    config.data_config.batch_size = batch_size
    model, features = load_trained_model(config, resolve_checkpoint(config, None))
    ds = build_dataset(config, features, config.eval_input_path, "eval")
    return model, ds


@pytest.mark.parametrize("aot", [False, True], ids=["torchscript", "aot"])
def test_dssm_towers_export_and_match_the_eager_model(dssm, tmp_path, aot, monkeypatch):
    monkeypatch.setenv("QUANT_EMB", "0")  # FP32 tables: exact parity with the eager model
    _, model_dir = dssm
    out = tmp_path / "export"
    assert export(model_dir, out, *(["--aot"] if aot else [])) == 0
    files = ["scripted_sparse_model.pt", "aot_dense_model.pt2"] if aot else ["scripted_model.pt"]
    # upstream's layout: export/user, export/item
    assert sorted(p.name for p in out.iterdir()) == ["item", "user"]
    for tower in ("user", "item"):
        for name in [*files, "pipeline.config", "model_meta.json"]:
            assert (out / tower / name).is_file(), (tower, name)
        meta = json.loads((out / tower / "model_meta.json").read_text())
        assert meta["format"] == ("aot" if aot else "torchscript")
        assert meta["tower"] == f"{tower}_tower"
        # the exported config reads only this tower's features, without the sampler
        cfg = load_pipeline_config(str(out / tower / "pipeline.config"))
        assert cfg.data_config.WhichOneof("sampler") is None
        assert [f.id_feature.feature_name for f in cfg.feature_configs] == meta["features"]
    assert json.loads((out / "user" / "model_meta.json").read_text())["features"] == [
        "user_id",
        "age_level",
    ]
    user = load_exported(out / "user")
    item = load_exported(out / "item")
    # same batches through the eager (training) model and the artefacts; batch size 1 too
    for batch_size in (1, 7):
        model, ds = eval_batches(model_dir, batch_size)
        model.set_is_inference(True)
        batch = next(iter(ds.make_dataloader()))
        with torch.no_grad():
            eager = model.predict(batch)
        users = user(inputs_from_batch(batch, model.user_tower.features))
        items = item(inputs_from_batch(batch, model.item_tower.features))
        assert users["user_tower_emb"].shape == (batch_size, 16)
        assert_outputs_close({"e": eager["user_emb"]}, {"e": users["user_tower_emb"]})
        # item rows: the batch's positives, then its sampled negatives
        assert_outputs_close({"e": eager["item_emb"]}, {"e": items["item_tower_emb"]})


@pytest.mark.parametrize("aot", [False, True], ids=["torchscript", "aot"])
def test_din_exports_one_model_that_matches_eager_including_empty_histories(
    din, tmp_path, aot, monkeypatch
):
    monkeypatch.setenv("QUANT_EMB", "0")  # FP32 tables: exact parity with the eager model
    _, model_dir = din
    out = tmp_path / "export"
    assert export(model_dir, out, *(["--aot"] if aot else [])) == 0
    assert (out / ("aot_dense_model.pt2" if aot else "scripted_model.pt")).is_file()
    meta = json.loads((out / "model_meta.json").read_text())
    assert meta["tower"] == "" and set(meta["outputs"]) >= {"logits", "probs"}
    artefact = load_exported(out)
    model, ds = eval_batches(model_dir, 5)
    model.set_is_inference(True)
    batch = next(iter(ds.make_dataloader()))
    with torch.no_grad():
        eager = model.predict(batch)
    got = artefact(inputs_from_batch(batch, model._features))
    assert_outputs_close(eager, got)
    # random rows: batch 1, histories of length 0, varied lengths (padded SEQUENCE groups,
    # whose longest row is axis 1 of the AOT program's input)
    (wrapper,) = export_modules(model)
    for lengths in ([0], [3], [0, 2, 5], [1, 0, 0, 4]):
        parents = {f.sequence_name or f.name for f in wrapper.features if f.is_sequence}
        inputs = random_inputs(wrapper.features, {p: lengths for p in parents}, seed=len(lengths))
        with torch.no_grad():
            assert_outputs_close(wrapper(inputs), artefact(inputs))


def test_export_quantises_pooled_tables_to_int8_by_default_as_upstream(
    din, tmp_path, capsys, monkeypatch
):
    """QUANT_EMB unset: INT8 tables, within the stated bound; QUANT_EMB=INT4 is one line."""
    monkeypatch.delenv("QUANT_EMB", raising=False)
    monkeypatch.delenv("QUANT_EC_EMB", raising=False)
    _, model_dir = din
    out = tmp_path / "export"
    assert export(model_dir, out) == 0
    meta = json.loads((out / "model_meta.json").read_text())
    assert meta["quant"]["QUANT_EMB"] == "INT8" and meta["quant"]["QUANT_EC_EMB"] == "FP32"
    assert "INT8" in meta["quant"]["tables"].values()
    assert 0 < meta["quant_lookup_max_abs_diff"] <= meta["quant_lookup_max_bound"] + 1e-6
    assert meta["parity_max_abs_diff"] <= 1e-5  # the artefact equals its quantised module
    artefact = torch.jit.load(str(out / "scripted_model.pt"))
    stored = {str(t.dtype) for t in artefact.sparse.tables.values()}
    assert "torch.uint8" in stored
    capsys.readouterr()
    monkeypatch.setenv("QUANT_EMB", "INT4")
    assert export(model_dir, tmp_path / "int4") == 1
    assert "QUANT_EMB='INT4' is not supported; use one of FP32, FP16, INT8" in one_line_error(
        capsys
    )
    assert not (tmp_path / "int4").exists()


def test_predict_writes_every_row_with_reserved_columns(dssm, tmp_path, capsys):
    paths, model_dir = dssm
    out = tmp_path / "export"
    assert export(model_dir, out) == 0
    pred = tmp_path / "pred" / "users.parquet"
    rc = main(
        [
            "predict",
            "--scripted_model_path",
            str(out / "user"),
            "--predict_input_path",
            paths["eval"],
            "--predict_output_path",
            str(pred),
            "--reserved_columns",
            "user_id,clk",
            "--batch_size",
            "37",
        ]
    )
    assert rc == 0
    table = pq.read_table(pred)
    source = pq.read_table(paths["eval"])
    assert table.num_rows == source.num_rows
    assert table.column_names == ["user_id", "clk", "user_tower_emb"]
    assert table.column("user_id").to_pylist() == source.column("user_id").to_pylist()
    emb = np.asarray(table.column("user_tower_emb").to_pylist())
    assert emb.shape == (source.num_rows, 16)
    assert np.isfinite(emb).all()
    # rows of one user get one embedding, different users different ones
    by_user = {}
    for uid, e in zip(table.column("user_id").to_pylist(), emb, strict=True):
        by_user.setdefault(uid, []).append(e)
    assert all(np.allclose(es[0], e, atol=1e-6) for es in by_user.values() for e in es)
    assert len({tuple(np.round(es[0], 4)) for es in by_user.values()}) > 1
    assert f"{source.num_rows} rows in, {source.num_rows} rows out" in capsys.readouterr().out


def test_eval_retrieval_reports_hitrate_and_recall_for_flat_and_ivf(dssm, tmp_path):
    paths, model_dir = dssm
    out = tmp_path / "export"
    assert export(model_dir, out, "--item_input_path", paths["item_table"]) == 0
    results = {}
    for index in ("flat", "ivf"):
        result_file = tmp_path / f"{index}.json"
        rc = main(
            [
                "eval-retrieval",
                "--export_dir",
                str(out),
                "--item_input_path",
                paths["item_table"],
                "--eval_input_path",
                paths["eval"],
                "--item_id_field",
                "item_id",
                "--gt_field",
                "item_id",
                "--top_k",
                "1,10,50",
                "--index_type",
                index,
                "--nlist",
                "8",
                "--nprobe",
                "8",
                "--output_path",
                str(result_file),
            ]
        )
        assert rc == 0
        results[index] = json.loads(result_file.read_text())
    flat = results["flat"]
    assert flat["items"] == 400 and flat["users"] == pq.read_table(paths["eval"]).num_rows
    m = flat["metrics"]
    assert m["hitrate@1"] <= m["hitrate@10"] <= m["hitrate@50"] <= 1.0
    # one ground-truth item per request: recall equals hit rate
    assert m["recall@10"] == pytest.approx(m["hitrate@10"])
    # the planted clusters (8 of 50 items each) make top-50 far better than chance (50/400)
    assert m["hitrate@50"] > 0.25, m
    # IVF searching every list is exact
    assert results["ivf"]["metrics"]["hitrate@50"] == pytest.approx(m["hitrate@50"])
    # tzrec's former layout (user_tower/, item_tower/) still reads
    (out / "user").rename(out / "user_tower")
    (out / "item").rename(out / "item_tower")
    legacy = tmp_path / "legacy.json"
    args = ["eval-retrieval", "--export_dir", str(out), "--eval_input_path", paths["eval"]]
    args += ["--item_input_path", paths["item_table"], "--item_id_field", "item_id"]
    args += ["--gt_field", "item_id", "--top_k", "1,10,50", "--output_path", str(legacy)]
    assert main(args) == 0
    assert json.loads(legacy.read_text())["metrics"] == pytest.approx(m)


def test_retrieval_metrics_on_known_rankings():
    from tzrec.export.retrieval import retrieval_metrics

    retrieved = np.array([[3, 1, 2], [5, 6, 7]])
    m = retrieval_metrics(retrieved, [[1, 9], [8]], [1, 2, 3])
    assert m["hitrate@1"] == 0.0 and m["hitrate@2"] == 0.5
    assert m["recall@2"] == pytest.approx(0.25) and m["recall@3"] == pytest.approx(0.25)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_export_refuses_an_existing_dir_and_a_missing_checkpoint(dssm, tmp_path, capsys):
    _, model_dir = dssm
    out = tmp_path / "export"
    out.mkdir()
    assert export(model_dir, out) == 1
    assert "already exists; pass --overwrite" in one_line_error(capsys)
    args = ["export", "--pipeline_config_path", str(model_dir / "pipeline.config")]
    rc = main([*args, "--export_dir", str(tmp_path / "x"), "--model_dir", str(tmp_path / "none")])
    assert rc == 1
    assert "no checkpoint to export; train first" in one_line_error(capsys)


def test_export_with_a_different_config_is_one_line(dssm, tmp_path, capsys):
    _, model_dir = dssm
    edits = json.dumps({"model_config.dssm.user_tower.mlp.hidden_units": "[64, 16]"})
    rc = main(
        [
            "export",
            "--pipeline_config_path",
            str(model_dir / "pipeline.config"),
            "--edit_config_json",
            edits,
            "--export_dir",
            str(tmp_path / "export"),
        ]
    )
    assert rc == 1
    line = one_line_error(capsys)
    assert "checkpoint does not match this model" in line and "different config" in line
    assert not (tmp_path / "export").exists()


def test_predict_input_missing_a_column_is_one_line(dssm, tmp_path, capsys):
    paths, model_dir = dssm
    out = tmp_path / "export"
    assert export(model_dir, out) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"user_id": [1, 2]}), bad)
    args = ["predict", "--scripted_model_path", str(out / "user")]
    rc = main(
        [
            *args,
            "--predict_input_path",
            str(bad),
            "--predict_output_path",
            str(tmp_path / "o.parquet"),
        ]
    )
    assert rc == 1
    assert "age_level" in one_line_error(capsys)
    # pointing predict at a match export's root names its towers
    rc = main(
        [
            "predict",
            "--scripted_model_path",
            str(out),
            "--predict_input_path",
            paths["eval"],
            "--predict_output_path",
            str(tmp_path / "o.parquet"),
        ]
    )
    assert rc == 1
    assert "it holds towers item, user (point at one of them)" in one_line_error(capsys)


def test_predict_from_a_checkpoint_equals_predict_from_the_export(
    dssm, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("QUANT_EMB", "0")  # FP32 tables: exact parity with the checkpoint
    paths, model_dir = dssm
    out = tmp_path / "export"
    assert export(model_dir, out) == 0
    common = ["--predict_input_path", paths["eval"], "--reserved_columns", "user_id"]
    exported = tmp_path / "exported.parquet"
    eager = tmp_path / "eager.parquet"
    args = ["predict", "--scripted_model_path", str(out / "user")]
    assert main([*args, *common, "--predict_output_path", str(exported)]) == 0
    config = str(model_dir / "pipeline.config")
    args = ["predict", "--pipeline_config_path", config, "--tower", "user"]  # = user_tower
    assert main([*args, *common, "--predict_output_path", str(eager)]) == 0
    a, b = pq.read_table(exported), pq.read_table(eager)
    assert a.column_names == b.column_names == ["user_id", "user_tower_emb"]
    np.testing.assert_allclose(
        np.asarray(a.column("user_tower_emb").to_pylist()),
        np.asarray(b.column("user_tower_emb").to_pylist()),
        atol=1e-5,
    )
    capsys.readouterr()
    fresh = str(tmp_path / "fresh.parquet")
    args = ["predict", "--pipeline_config_path", config, "--predict_output_path", fresh]
    assert main([*args, *common]) == 1
    assert "one of item_tower, user_tower (got none)" in one_line_error(capsys)


def test_export_refuses_a_model_with_nan_parameters_in_one_line(
    dssm, tmp_path, capsys, monkeypatch
):
    import tzrec.export.exporter as exporter

    _, model_dir = dssm
    load = exporter.load_trained_model
    poisoned = []

    def diverged(config, checkpoint):
        model, features = load(config, checkpoint)
        name, param = next(iter(model.named_parameters()))
        with torch.no_grad():
            param.view(-1)[:3] = float("nan")
        poisoned.append(name)
        return model, features

    monkeypatch.setattr(exporter, "load_trained_model", diverged)
    out = tmp_path / "export"
    assert export(model_dir, out) == 1
    line = one_line_error(capsys)
    assert f"parameter '{poisoned[0]}' holds 3 of" in line and "non-finite" in line, line
    assert not out.exists() and not list(tmp_path.iterdir())


def test_predict_counts_and_reports_nan_outputs(dssm, tmp_path, caplog):
    from tzrec.export.artifact import ExportedModel
    from tzrec.export.predict import predict

    paths, model_dir = dssm
    out = tmp_path / "export"
    assert export(model_dir, out) == 0
    real = load_exported(out / "user")

    def half_nan(inputs):
        emb = real(inputs)["user_tower_emb"].clone()
        emb[::2, 0] = float("nan")
        return {"user_tower_emb": emb}

    model = ExportedModel(real.path, real.meta, half_nan, config=real.config)
    pred = tmp_path / "pred.parquet"
    stats = predict(model, paths["eval"], str(pred), batch_size=10)
    emb = np.asarray(pq.read_table(pred).column("user_tower_emb").to_pylist())
    expected = int(np.isnan(emb).any(axis=1).sum())
    assert expected == sum((n + 1) // 2 for n in _batch_sizes(emb.shape[0], 10))
    assert stats["rows_nonfinite"] == expected
    assert stats["nonfinite_by_column"] == {"user_tower_emb": expected}
    assert f"user_tower_emb: {expected} rows" in caplog.text


def _batch_sizes(rows: int, batch: int) -> list[int]:
    return [min(batch, rows - i) for i in range(0, rows, batch)]


@pytest.fixture(scope="module")
def dssm_export(dssm, tmp_path_factory):
    """One export of the DSSM towers, shared by the tests that only read it."""
    _, model_dir = dssm
    out = tmp_path_factory.mktemp("dssm_shared_export") / "export"
    assert export(model_dir, out) == 0
    return out


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize(
    "fault",
    [
        OSError(28, "No space left on device", "{path}"),
        RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
            "file data/0: file write failed"
        ),
    ],
    ids=["enospc", "c10-error"],
)
def test_a_full_disk_during_export_is_one_line_and_keeps_the_old_export(
    dssm, tmp_path, capsys, monkeypatch, fault
):
    import tzrec.export.scripting as scripting

    _, model_dir = dssm
    out = tmp_path / "export"
    out.mkdir()
    (out / "old.txt").write_text("previous export")

    def full(path, data):
        if isinstance(fault, OSError):
            raise OSError(fault.errno, fault.strerror, str(path))
        raise fault

    monkeypatch.setattr(scripting, "write_file", full)
    assert export(model_dir, out, "--overwrite") == 1
    line = one_line_error(capsys)
    assert line.startswith(f"tzrec: error: export to {out} failed: "), line
    if isinstance(fault, OSError):
        assert "[Errno 28 ENOSPC] No space left on device: " in line
        assert f"{out.parent}/.export.tmp-" in line and "scripted_model.pt" in line
    else:
        assert "PytorchStreamWriter failed writing file data/0" in line
    # the temporary copy is gone, the old export untouched
    assert siblings(out) == ["export"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]


def test_an_interrupted_replace_is_recovered_by_the_next_export(dssm, tmp_path, capsys):
    from tzrec.export.atomic import OLD_TAG, TMP_TAG, unique_name

    _, model_dir = dssm
    out = tmp_path / "export"
    out.mkdir()
    (out / "old.txt").write_text("previous export")
    # what a kill between "old -> backup" and "new -> export" leaves (see test_atomic)
    out.rename(unique_name(out, OLD_TAG))
    orphan = unique_name(out, TMP_TAG)
    orphan.mkdir()
    (orphan / "scripted_model.pt").write_bytes(b"half")
    assert export(model_dir, out) == 1  # the old export is back, so it exists
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3, err
    assert "restored the previous copy left by an interrupted replace" in err[0]
    assert f"removing {orphan.name} left by an interrupted run" in err[1]
    assert err[2].startswith("tzrec: error: ") and "already exists; pass --overwrite" in err[2]
    assert siblings(out) == ["export"] and (out / "old.txt").is_file()
    out.rename(unique_name(out, OLD_TAG))
    assert export(model_dir, out, "--overwrite") == 0
    assert siblings(out) == ["export"]
    assert sorted(p.name for p in out.iterdir()) == ["item", "user"]


def test_a_second_export_into_a_locked_dir_is_refused_naming_the_holder(dssm, tmp_path, capsys):
    import os

    from tzrec.export.atomic import output_lock

    _, model_dir = dssm
    out = tmp_path / "export"
    with output_lock(out, "--export_dir"):
        # flock is per open file: a second open in this process is a second holder
        assert export(model_dir, out) == 1
    line = one_line_error(capsys)
    assert f"--export_dir {out} is being written by another tzrec process" in line
    assert f"(pid {os.getpid()}," in line
    assert siblings(out) == []


def predict_cli(model: Path, input_path: str, output: Path, *extra: str) -> int:
    args = ["predict", "--scripted_model_path", str(model), "--predict_input_path", input_path]
    return main([*args, "--predict_output_path", str(output), *extra])


def test_predict_checks_its_output_before_reading_any_input(dssm_export, tmp_path, capsys):
    user = dssm_export / "user"
    missing_input = str(tmp_path / "never_read.parquet")
    (tmp_path / "dir.parquet").mkdir()
    assert predict_cli(user, missing_input, tmp_path / "dir.parquet") == 1
    line = one_line_error(capsys)
    assert f"--predict_output_path {tmp_path / 'dir.parquet'} is a directory" in line
    (tmp_path / "file_out").write_text("x")
    assert predict_cli(user, missing_input, tmp_path / "file_out") == 1
    assert "is a file, but a path not ending in .parquet" in one_line_error(capsys)
    (tmp_path / "blocker").write_text("x")  # a file where a parent directory should be
    assert predict_cli(user, missing_input, tmp_path / "blocker" / "o.parquet") == 1
    assert f"{tmp_path / 'blocker'} is not a directory" in one_line_error(capsys)
    # an export serves with its own config: checkpoint flags are refused, not ignored
    extra = ["--pipeline_config_path", "p.config", "--edit_config_json", "{}"]
    assert predict_cli(user, missing_input, tmp_path / "x.parquet", *extra) == 1
    line = one_line_error(capsys)
    assert "--pipeline_config_path, --edit_config_json: only for predicting from a checkpoint" in (
        line
    )


def test_predict_refuses_an_existing_output_unless_overwrite(dssm, dssm_export, tmp_path, capsys):
    paths, _ = dssm
    user = dssm_export / "user"
    out = tmp_path / "users.parquet"
    out.write_bytes(b"old")
    assert predict_cli(user, paths["eval"], out) == 1
    assert "already exists; pass --overwrite to replace it" in one_line_error(capsys)
    assert out.read_bytes() == b"old"
    assert predict_cli(user, paths["eval"], out, "--overwrite") == 0
    assert pq.read_table(out).num_rows == pq.read_table(paths["eval"]).num_rows
    assert siblings(out) == ["users.parquet"]


def test_predict_writes_a_directory_of_part_files_by_default(dssm, dssm_export, tmp_path):
    paths, _ = dssm
    out = tmp_path / "pred"
    assert (
        predict_cli(dssm_export / "user", paths["eval"], out, "--reserved_columns", "user_id") == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["part-0.parquet"]
    table = pq.read_table(out / "part-0.parquet")
    assert table.column_names == ["user_id", "user_tower_emb"]
    assert (
        table.column("user_id").to_pylist()
        == pq.read_table(paths["eval"]).column("user_id").to_pylist()
    )


def test_a_failed_predict_leaves_no_temporary_file_and_cleans_old_ones(
    dssm, dssm_export, tmp_path, capsys, monkeypatch
):
    import tzrec.export.outputs as outputs

    paths, _ = dssm
    user = dssm_export / "user"
    out = tmp_path / "users.parquet"
    (tmp_path / ".users.parquet.tmp-99999-deadbeef").write_bytes(b"left by a kill")
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"user_id": [1, 2]}), bad)
    assert predict_cli(user, str(bad), out) == 1  # the input lacks age_level
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert "removing .users.parquet.tmp-99999-deadbeef left by an interrupted run" in warning
    assert error.startswith("tzrec: error: ") and "age_level" in error
    assert siblings(out) == ["bad.parquet"]  # no output, no temporary, the stale one gone

    def full(self, table):
        raise OSError(28, "No space left on device", str(self.path))

    monkeypatch.setattr(outputs.TableWriter, "write", full)
    assert predict_cli(user, paths["eval"], out) == 1
    line = one_line_error(capsys)
    assert f"--predict_output_path {out}: not written ([Errno 28 ENOSPC] No space left" in line
    assert siblings(out) == ["bad.parquet"]


def test_predict_with_a_corrupt_scripted_model_names_the_file(dssm, dssm_export, tmp_path, capsys):
    import shutil

    paths, _ = dssm
    user = tmp_path / "user"
    shutil.copytree(dssm_export / "user", user)
    data = (user / "scripted_model.pt").read_bytes()
    (user / "scripted_model.pt").write_bytes(data[: len(data) // 3])
    assert predict_cli(user, paths["eval"], tmp_path / "o.parquet") == 1
    line = one_line_error(capsys)
    assert f"{user / 'scripted_model.pt'}: cannot be loaded, the file is corrupt" in line
    assert not (tmp_path / "o.parquet").exists()


def test_python_m_tzrec_predict_takes_upstreams_flags(dssm, dssm_export, tmp_path):
    from tzrec.predict import main as upstream_predict

    paths, _ = dssm
    out = tmp_path / "pred"  # upstream's default: a directory of part files
    argv = ["--scripted_model_path", str(dssm_export / "user"), "--predict_input_path"]
    argv += [paths["eval"], "--predict_output_path", str(out), "--reserved_columns", "user_id"]
    argv += ["--batch_size", "50", "--predict_threads", "0", "--output_columns", "user_tower_emb"]
    assert upstream_predict(argv) == 0
    table = pq.read_table(out / "part-0.parquet")
    assert table.column_names == ["user_id", "user_tower_emb"]
    assert table.num_rows == pq.read_table(paths["eval"]).num_rows
    ours = tmp_path / "ours.parquet"
    assert (
        predict_cli(dssm_export / "user", paths["eval"], ours, "--reserved_columns", "user_id") == 0
    )
    assert pq.read_table(ours).equals(table)


def test_python_m_tzrec_export_takes_upstreams_flags(dssm, tmp_path):
    from tzrec.export.__main__ import main as upstream_export

    paths, model_dir = dssm
    asset = tmp_path / "vocab.txt"
    asset.write_text("a\nb\n")
    out = tmp_path / "export"
    argv = ["--pipeline_config_path", str(model_dir / "pipeline.config"), "--export_dir"]
    argv += [str(out), "--asset_files", str(asset), "--item_input_path", paths["item_table"]]
    argv += ["--additional_export_config", '{"cand_seq_pk": "cand_seq"}']
    assert upstream_export(argv) == 0
    assert (out / "vocab.txt").read_text() == "a\nb\n"
    for tower in ("user", "item"):
        meta = json.loads((out / tower / "model_meta.json").read_text())
        assert meta["cand_seq_pk"] == "cand_seq" and meta["tower"] == f"{tower}_tower"
    bad = ["--additional_export_config", '{"outputs": []}', "--overwrite"]
    assert upstream_export([*argv[:4], *bad]) == 1  # a key tzrec writes itself


def test_upstream_entry_points_run_as_modules_with_one_line_errors(tmp_path):
    import subprocess
    import sys

    help_out = subprocess.run(
        [sys.executable, "-m", "tzrec.export", "--help"], capture_output=True, text=True
    )
    assert help_out.returncode == 0
    assert "usage: python -m tzrec.export" in help_out.stdout
    assert "--additional_export_config" in help_out.stdout
    (tmp_path / "out").write_text("a file where a directory of part files goes")
    args = ["--scripted_model_path", str(tmp_path), "--predict_input_path", "in.parquet"]
    proc = subprocess.run(
        [sys.executable, "-m", "tzrec.predict", *args, "--predict_output_path", "out"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "tzrec: error: --predict_output_path out is a file, but a path not ending in .parquet "
        "is written as a directory of part-N.parquet files (end it in .parquet for one file)"
    ]
    unknown = [*args, "--predict_output_path", "o2", "--no_such_flag"]
    proc = subprocess.run(
        [sys.executable, "-m", "tzrec.predict", *unknown], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unrecognized arguments: --no_such_flag" in proc.stderr
