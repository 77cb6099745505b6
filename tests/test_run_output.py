"""What `tzrec run` says: labelled sampled metrics, a closing table, a reusable ./tzrec_run."""

import json
from pathlib import Path

import pytest

from tzrec.core import builtin_commands
from tzrec.core.builtin_commands import (
    describe_metric,
    run_summary,
    sampled_candidates,
)
from tzrec.core.cli import build_parser, main
from tzrec.core.config import edit_config, load_pipeline_config
from tzrec.core.plugins import get_plugin_manager, reset_plugin_manager

REPO_ROOT = Path(__file__).resolve().parents[1]

EXAMPLES = REPO_ROOT / "docs" / "examples"


def test_sampled_candidates_follow_the_sampler_layout():
    dssm = load_pipeline_config(EXAMPLES / "dssm.config")
    assert sampled_candidates(dssm) == 1 + 128  # negatives appended to the batch
    hstu = load_pipeline_config(EXAMPLES / "hstu_match_kuairand.config")
    # HSTUMatch (upstream layout): every positive against the batch's shared negatives
    assert sampled_candidates(hstu) == 1 + 960
    edit_config(hstu, {"data_config.batch_size": 100})
    assert sampled_candidates(hstu) == 1 + 960
    dssm.data_config.ClearField("negative_sampler")
    assert sampled_candidates(dssm) is None
    dssm.model_config.dssm.in_batch_negative = True
    assert sampled_candidates(dssm) == 256


def test_sampled_recall_is_labelled_with_its_random_baseline():
    assert describe_metric("recall@5", 0.88, 16) == (
        "recall@5 0.8800  (sampled: the positive among 16 candidates per request, not the "
        "full corpus; random 0.3125)"
    )
    assert describe_metric("recall@50", 1.0, 16).endswith("random 1.0000)")
    assert describe_metric("recall@5", 0.5, None).endswith("among the sampler's candidates)")
    assert describe_metric("auc", 0.7, 16) == "auc 0.7000"


def fake_result(config, trained=5, metrics=None):
    model_dir = Path(config.model_dir)
    return {
        "global_step": 5,
        "steps_trained": trained,
        "steps_per_second": 2.5 if trained else 0.0,
        "steady_steps_per_second": None,
        "metrics": {"recall@5": 0.5} if metrics is None else metrics,
        "model_dir": str(model_dir),
        "checkpoint": str(model_dir / "model.ckpt-5"),
        "data": {"rows_read": 320},
    }


def test_summary_table_lists_data_steps_metrics_and_paths(tmp_path):
    config = load_pipeline_config(EXAMPLES / "dssm.config")
    config.model_dir = str(tmp_path / "m")
    table = run_summary(config, fake_result(config), str(tmp_path / "m" / "export"))
    lines = table.splitlines()
    assert lines[0] == "tzrec run: summary"
    labels = [line[2:15].strip() for line in lines[1:]]
    assert labels == [
        "train data",
        "eval data",
        "steps",
        "metrics",
        "model_dir",
        "checkpoint",
        "export",
        "metrics log",
        "curve",
        "tensorboard",
    ]
    assert "data/dssm_train.parquet (320 rows read)" in lines[1]
    assert lines[3].endswith("5 (5 this run, 2.5 steps/s)")
    assert "among 129 candidates per request" in lines[4]
    assert lines[-1].endswith(f"tensorboard --logdir {tmp_path / 'm'}")


def test_finished_run_shows_the_recorded_metrics(tmp_path, capsys):
    config = load_pipeline_config(EXAMPLES / "dssm.config")
    config.model_dir = str(tmp_path)
    (tmp_path / "train_eval_result.txt").write_text(
        json.dumps({"global_step": 5, "recall@1": 0.25, "recall@5": 0.75}) + "\n"
    )
    result = fake_result(config, trained=0, metrics={})
    builtin_commands._print_train_result(result)
    out = capsys.readouterr().out
    assert "tzrec train: already trained to step 5, nothing to train" in out
    assert "tzrec train: eval at step 5 recall@1=0.2500 recall@5=0.7500" in out
    assert "steps/s" not in out
    table = run_summary(config, result, "e")
    assert "5 (already trained: nothing to do)" in table and "recall@5 0.7500" in table


def test_bare_run_writes_to_and_reuses_tzrec_run_in_the_current_directory(
    tmp_path, monkeypatch, capsys
):
    assert build_parser().parse_args(["run"]).work_dir == "tzrec_run"
    monkeypatch.chdir(tmp_path)
    reset_plugin_manager()
    seen = []

    def train(config, args):
        assert config.train_config.log_step_count_steps == 10  # TensorBoard every 10 steps
        seen.append((config.model_dir, args.continue_train))
        return fake_result(config)

    monkeypatch.setattr(builtin_commands, "_train", train)
    get_plugin_manager().registry("exporters")["default"]._resolved = lambda *a, **k: None
    get_plugin_manager().registry("evaluators")["retrieval"]._resolved = lambda *a: None
    try:
        assert main(["run"]) == 0
        model_dir = str(tmp_path / "tzrec_run" / "model")
        assert seen == [(model_dir, False)]
        (tmp_path / "tzrec_run" / "model" / "model.ckpt-5").mkdir(parents=True)
        assert main(["run"]) == 0
        assert seen[-1] == (model_dir, True)
        out = capsys.readouterr().out
        assert f"tzrec run: {model_dir} holds checkpoints of an earlier run: continuing" in out
    finally:
        reset_plugin_manager()


def test_full_corpus_hitrate_sits_beside_the_sampled_recall(tmp_path):
    config = load_pipeline_config(EXAMPLES / "hstu_match_kuairand.config")
    config.model_dir = str(tmp_path)
    result = fake_result(config, metrics={"recall@5": 0.88})
    result["full_corpus"] = {
        "metrics": {"hitrate@5": 0.61},
        "baselines": {"hitrate@5": 5 / 2000},
        "about": "full corpus: each request ranks all 2000 items of items.parquet (faiss, exact)",
    }
    lines = run_summary(config, result, "e").splitlines()
    (i,) = [n for n, line in enumerate(lines) if "recall@5 0.8800" in line]
    n = sampled_candidates(config)
    assert f"among {n} candidates per request" in lines[i] and f"random {5 / n:.4f}" in lines[i]
    assert lines[i + 1].strip() == (
        "hitrate@5 0.6100  (full corpus: each request ranks all 2000 items of items.parquet "
        "(faiss, exact); random 0.0025)"
    )


def test_full_corpus_evaluator_reads_the_sampler_item_table(monkeypatch):
    from tzrec.export import retrieval

    seen = {}

    def fake(export_dir, items, eval_path, item_id, gt_field, ks, gt_first_only=False):
        seen.update(items=items, item_id=item_id, gt=gt_field, ks=ks, first=gt_first_only)
        return {"items": 2000, "metrics": {"hitrate@5": 0.6, "recall@5": 0.6}}

    monkeypatch.setattr(retrieval, "evaluate_retrieval", fake)
    hstu = load_pipeline_config(EXAMPLES / "hstu_match_kuairand.config")
    out = retrieval.evaluate_full_corpus(hstu, "export", [5, 1, 5])
    assert seen == {
        "items": "data/kuairand_match_items.parquet",
        "item_id": "video_id",
        "gt": "cand_seq__video_id",
        "ks": [1, 5],
        "first": True,
    }
    assert out["metrics"] == {"hitrate@5": 0.6}
    assert out["baselines"] == {"hitrate@5": pytest.approx(5 / 2000)}
    # a text sampler table (id, weight, attributes) holds no tower features: nothing to do
    dssm = load_pipeline_config(EXAMPLES / "dssm.config")
    assert retrieval.evaluate_full_corpus(dssm, "export", [5]) is None


@pytest.fixture(autouse=True)
def _fresh_plugins():
    reset_plugin_manager()
    yield
    reset_plugin_manager()
