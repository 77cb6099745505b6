"""`tzrec train` / `eval` end to end on generated data: learning, checkpoints, resume, errors."""

import json
import shutil
from pathlib import Path

import pytest

from tzrec.core.cli import main
from tzrec.data.testing import write_din_data, write_dssm_data

REPO_ROOT = Path(__file__).resolve().parents[1]

DSSM = REPO_ROOT / "docs" / "examples" / "dssm.config"
DIN = REPO_ROOT / "docs" / "examples" / "multi_tower_din.config"


def dssm_edits(paths, model_dir, **extra):
    edits = {
        "train_input_path": paths["train"],
        "eval_input_path": paths["eval"],
        "model_dir": str(model_dir),
        "data_config.negative_sampler.input_path": paths["items"],
        "data_config.negative_sampler.num_sample": 31,
        "data_config.batch_size": 64,
        "data_config.num_workers": 0,
        "train_config.sparse_optimizer.adagrad_optimizer.lr": 0.1,
        "train_config.dense_optimizer.adam_optimizer.lr": 0.01,
        "train_config.num_epochs": 4,
        "train_config.save_checkpoints_steps": 1000,
    }
    edits.update(extra)
    return json.dumps(edits)


def results(model_dir: Path) -> list[dict]:
    lines = (model_dir / "train_eval_result.txt").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def dssm_data(tmp_path_factory):
    return write_dssm_data(tmp_path_factory.mktemp("dssm") / "data")


def test_dssm_learns_and_writes_results(dssm_data, tmp_path, capsys):
    model_dir = tmp_path / "model"
    rc = main(
        [
            "train",
            "--pipeline_config_path",
            str(DSSM),
            "--edit_config_json",
            dssm_edits(dssm_data, model_dir),
        ]
    )
    assert rc == 0
    final = results(model_dir)[-1]
    # 32 candidates per row: random recall@5 is 5/32 ~ 0.16
    assert final["recall@5"] > 0.5, final
    assert final["global_step"] == 4 * (2000 // 64 + 1)
    assert (model_dir / "pipeline.config").is_file()
    assert (model_dir / f"model.ckpt-{final['global_step']}" / "done").is_file()
    assert list(model_dir.glob("events.out.tfevents.*"))
    out = capsys.readouterr().out
    assert "tzrec train: eval recall@1=" in out

    # evaluating the checkpoint gives the same metrics as the end of training
    rc = main(["eval", "--pipeline_config_path", str(model_dir / "pipeline.config")])
    assert rc == 0
    evaluated = json.loads((model_dir / "eval_result.txt").read_text().splitlines()[-1])
    assert evaluated["recall@5"] == pytest.approx(final["recall@5"], abs=1e-6)


def test_resume_continues_from_the_latest_checkpoint(dssm_data, tmp_path):
    model_dir = tmp_path / "model"
    args = ["train", "--pipeline_config_path", str(DSSM)]
    edits = dssm_edits(
        dssm_data,
        model_dir,
        **{"train_config.num_steps": 20, "train_config.save_checkpoints_steps": 10},
    )
    assert main([*args, "--edit_config_json", edits]) == 0
    assert sorted(p.name for p in model_dir.glob("model.ckpt-*")) == [
        "model.ckpt-10",
        "model.ckpt-20",
    ]
    # a crash mid-save leaves a temporary directory and maybe a marker-less checkpoint
    (model_dir / ".tmp-model.ckpt-30").mkdir()
    shutil.copytree(model_dir / "model.ckpt-20", model_dir / "model.ckpt-30")
    (model_dir / "model.ckpt-30" / "done").unlink()
    # without --continue_train an existing model_dir is refused
    assert main([*args, "--edit_config_json", edits]) == 1
    edits = dssm_edits(
        dssm_data,
        model_dir,
        **{"train_config.num_steps": 35, "train_config.save_checkpoints_steps": 10},
    )
    assert main([*args, "--edit_config_json", edits, "--continue_train"]) == 0
    steps = [r["global_step"] for r in results(model_dir)]
    assert steps == [10, 20, 30, 35]
    extra = json.loads((model_dir / "model.ckpt-35" / "extra.json").read_text())
    assert extra["global_step"] == 35
    assert extra["epoch"] == 1  # 35 steps of 32 per epoch


def test_same_seed_gives_identical_results(dssm_data, tmp_path):
    finals = []
    for run in ("a", "b"):
        model_dir = tmp_path / run
        edits = dssm_edits(dssm_data, model_dir, **{"train_config.num_steps": 8})
        assert (
            main(["train", "--pipeline_config_path", str(DSSM), "--edit_config_json", edits]) == 0
        )
        finals.append(results(model_dir)[-1])
    assert finals[0] == finals[1]


def test_multi_tower_din_beats_chance(tmp_path):
    paths = write_din_data(tmp_path / "data")
    model_dir = tmp_path / "model"
    edits = {
        "train_input_path": paths["train"],
        "eval_input_path": paths["eval"],
        "model_dir": str(model_dir),
        "data_config.num_workers": 0,
        "train_config.num_epochs": 8,
    }
    rc = main(
        ["train", "--pipeline_config_path", str(DIN), "--edit_config_json", json.dumps(edits)]
    )
    assert rc == 0
    assert results(model_dir)[-1]["auc"] > 0.75


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        (
            {"model_config.feature_groups[group_name=user].feature_names": '["user_id", "nope"]'},
            "feature 'nope' is not defined in feature_configs",
        ),
        (
            {"model_config.feature_groups[group_name=user].group_type": "SEQUENCE"},
            "is SEQUENCE but has no sequence feature",
        ),
        (
            {
                "feature_configs[feature_name=brand].id_feature.embedding_name": "cate_id_emb",
                "feature_configs[feature_name=brand].id_feature.embedding_dim": 8,
            },
            "embedding 'cate_id_emb' is shared by",
        ),
        (
            {"train_config.dense_optimizer": "{}"},
            "train_config.dense_optimizer",
        ),
    ],
)
def test_bad_configs_fail_before_training_with_one_line(
    dssm_data, tmp_path, capsys, edits, expected
):
    model_dir = tmp_path / "model"
    base = json.loads(dssm_edits(dssm_data, model_dir))
    base.update(edits)
    rc = main(
        ["train", "--pipeline_config_path", str(DSSM), "--edit_config_json", json.dumps(base)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert expected in err[-1]
    assert err[-1].startswith("tzrec: error: ")
    assert not list(model_dir.glob("model.ckpt-*"))


def test_tzrec_run_trains_evaluates_then_exports(dssm_data, tmp_path, capsys):
    model_dir = tmp_path / "model"
    edits = dssm_edits(dssm_data, model_dir, **{"train_config.num_steps": 10})
    rc = main(["run", "--pipeline_config_path", str(DSSM), "--edit_config_json", edits])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "tzrec train: eval recall@1=" in out
    assert (model_dir / "model.ckpt-10" / "done").is_file()
    assert len(results(model_dir)) == 1
    export = model_dir / "export"
    assert f"tzrec run: exported to {export}" in out
    for tower in ("user", "item"):  # upstream's layout: export/user, export/item
        meta = json.loads((export / tower / "model_meta.json").read_text())
        assert meta["outputs"] == [f"{tower}_tower_emb"]
        assert meta["checkpoint"].endswith("model.ckpt-10")
        assert meta["parity_max_abs_diff"] <= 1e-5
        assert (export / tower / "scripted_model.pt").is_file()
    # a second run continues training and replaces the export
    edits = dssm_edits(dssm_data, model_dir, **{"train_config.num_steps": 12})
    args = ["run", "--pipeline_config_path", str(DSSM), "--edit_config_json", edits]
    assert main([*args, "--continue_train"]) == 0
    meta = json.loads((export / "user" / "model_meta.json").read_text())
    assert meta["checkpoint"].endswith("model.ckpt-12")
    out, _ = capsys.readouterr()
    summary = out[out.index("tzrec run: summary") :]
    assert "  steps        12 (2 this run, " in summary
    # DSSM: the positive and 31 sampled negatives per request
    assert "recall@5 " in summary and "among 32 candidates per request" in summary
    assert "random 0.1562)" in summary
    assert f"  curve        {model_dir / 'training_curve.png'}" in summary
    assert (model_dir / "training_curve.png").is_file()
    assert list((model_dir / "eval_val").glob("events.out.tfevents.*"))
    # resuming a finished run says so and shows the recorded metrics, not 0 steps/s
    assert main([*args, "--continue_train"]) == 0
    out, _ = capsys.readouterr()
    assert "already trained to step 12, nothing to train" in out
    assert "0.0 steps/s" not in out and "no metrics configured" not in out
    recorded = results(model_dir)[-1]
    assert f"tzrec train: eval at step 12 recall@1={recorded['recall@1']:.4f}" in out
    assert "  steps        12 (already trained: nothing to do)" in out


def test_fine_tune_loads_matching_weights_and_reports_the_rest(dssm_data, tmp_path, caplog):
    base = tmp_path / "base"
    edits = dssm_edits(dssm_data, base, **{"train_config.num_steps": 5})
    assert main(["train", "--pipeline_config_path", str(DSSM), "--edit_config_json", edits]) == 0
    tuned = tmp_path / "tuned"
    # a wider user MLP: its first layer cannot come from the base checkpoint
    edits = dssm_edits(
        dssm_data,
        tuned,
        **{
            "train_config.num_steps": 2,
            "model_config.dssm.user_tower.mlp.hidden_units": "[128, 32]",
        },
    )
    caplog.set_level("INFO")
    rc = main(
        [
            "train",
            "--pipeline_config_path",
            str(DSSM),
            "--edit_config_json",
            edits,
            "--fine_tune_checkpoint",
            str(base),
        ]
    )
    assert rc == 0
    assert "fine-tuning from" in caplog.text
    assert "with another shape" in caplog.text
    assert "user_tower.mlp.mlp.0" in caplog.text
    assert (tuned / "model.ckpt-2" / "done").is_file()


def test_fine_tune_from_a_missing_checkpoint_is_one_line(dssm_data, tmp_path, capsys):
    edits = dssm_edits(dssm_data, tmp_path / "m", **{"train_config.num_steps": 2})
    rc = main(
        [
            "train",
            "--pipeline_config_path",
            str(DSSM),
            "--edit_config_json",
            edits,
            "--fine_tune_checkpoint",
            str(tmp_path / "nowhere"),
        ]
    )
    assert rc == 1
    assert "fine_tune_checkpoint:" in capsys.readouterr().err


def test_bad_value_read_in_a_worker_process_is_one_line(dssm_data, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(dssm_data["train"])
    i = table.schema.get_field_index("age_level")
    table = table.set_column(i, "age_level", pa.array(["x"] * table.num_rows))
    bad = tmp_path / "bad.parquet"
    pq.write_table(table, bad, row_group_size=250)
    edits = json.loads(dssm_edits(dssm_data, tmp_path / "m"))
    edits.update({"train_input_path": str(bad), "data_config.num_workers": 2})
    rc = main(
        ["train", "--pipeline_config_path", str(DSSM), "--edit_config_json", json.dumps(edits)]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1
    assert "Traceback" not in err
    assert f"tzrec: error: {bad}: row 0: column 'age_level' (feature 'age_level')" in err


def test_resume_continues_the_learning_rate_schedule(dssm_data, tmp_path):
    from tzrec.core import build
    from tzrec.core.config import edit_config, load_pipeline_config
    from tzrec.core.engine import distributed, engine, loop

    model_dir = tmp_path / "model"
    config = load_pipeline_config(DSSM, edits=json.loads(dssm_edits(dssm_data, model_dir)))
    dense = config.train_config.dense_optimizer
    dense.ClearField("constant_learning_rate")
    edit_config(
        config,
        {
            "train_config.dense_optimizer.exponential_decay_learning_rate": (
                "{decay_size: 4 decay_factor: 0.5 staircase: true}"
            ),
            "train_config.num_steps": 12,
            "train_config.save_checkpoints_steps": 12,
        },
    )
    loop.train_and_evaluate(config)
    device = distributed.init_distributed()
    features = build.create_features(config)
    ds = build.build_dataset(config, features, config.train_input_path, "train")
    trained = engine.Engine(config, build.build_model(config, ds.features), device, True)
    fresh_lr = trained.learning_rates()["g0"]
    state = trained.restore(model_dir / "model.ckpt-12")
    assert state.global_step == 12
    # 12 steps of decay 0.5 every 4 steps: lr = base * 0.5**3
    assert trained.learning_rates()["g0"] == pytest.approx(fresh_lr * 0.125)


def test_upstream_entry_points_train_then_evaluate(dssm_data, tmp_path):
    import tzrec.eval
    import tzrec.train_eval

    model_dir = tmp_path / "model"
    edits = json.loads(dssm_edits(dssm_data, model_dir, **{"train_config.num_steps": 6}))
    for flag in ("model_dir", "train_input_path", "eval_input_path"):
        del edits[flag]
    # upstream's command lines: paths as flags, the rest through --edit_config_json
    rc = tzrec.train_eval.main(
        [
            "--pipeline_config_path",
            str(DSSM),
            "--model_dir",
            str(model_dir),
            "--train_input_path",
            dssm_data["train"],
            "--eval_input_path",
            dssm_data["eval"],
            "--edit_config_json",
            json.dumps(edits),
        ]
    )
    assert rc == 0
    final = results(model_dir)[-1]
    assert final["global_step"] == 6
    rc = tzrec.eval.main(
        [
            "--pipeline_config_path",
            str(model_dir / "pipeline.config"),
            "--checkpoint_path",
            str(model_dir / "model.ckpt-6"),
            "--eval_input_path",
            dssm_data["eval"],
            "--eval_result_filename",
            "upstream_eval.txt",
        ]
    )
    assert rc == 0
    evaluated = json.loads((model_dir / "upstream_eval.txt").read_text().splitlines()[-1])
    assert evaluated["recall@5"] == pytest.approx(final["recall@5"], abs=1e-6)
