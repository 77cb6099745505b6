"""``model_config.train_metrics``: smoothed metrics on training batches, logged and in TensorBoard."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from google.protobuf import text_format

from tzrec.core.config import parse_pipeline_config, validate_pipeline_config
from tzrec.core.engine import loop
from tzrec.core.errors import ConfigError
from tzrec.data import Batch
from tzrec.models.base import BaseModel
from tzrec.models.match import MatchModel
from tzrec.models.rank import RankModel
from tzrec.protos import model_pb2

ROWS, BATCH, STEPS = 256, 32, 8
DECAY_RATE, DECAY_STEP = 0.5, 2

CONFIG = """
train_input_path: "{data}"
eval_input_path: "{data}"
model_dir: "{model_dir}"
train_config {{
  sparse_optimizer {{ adagrad_optimizer {{ lr: 0.5 }} constant_learning_rate {{}} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.05 }} constant_learning_rate {{}} }}
  num_steps: {steps}
  save_checkpoints_steps: 1000
  log_step_count_steps: 4
  use_tensorboard: true
}}
eval_config {{}}
data_config {{
  batch_size: {batch}
  dataset_type: ParquetDataset
  label_fields: "clk"
  num_workers: 0
  shuffle: false
}}
feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: 50 embedding_dim: 4 }} }}
feature_configs {{ id_feature {{ feature_name: "item_id" num_buckets: 50 embedding_dim: 4 }} }}
model_config {{
  feature_groups {{ group_name: "all" feature_names: ["user_id", "item_id"] group_type: DEEP }}
  multi_tower {{
    towers {{ input: "all" mlp {{ hidden_units: [8] }} }}
    final {{ hidden_units: [4] }}
  }}
  losses {{ binary_cross_entropy {{}} }}
  {train_metrics}
}}
"""

TRAIN_METRICS = (
    f"train_metrics {{ auc {{}} decay_rate: {DECAY_RATE} decay_step: {DECAY_STEP} }} "
    f"train_metrics {{ mean_absolute_error {{}} decay_rate: {DECAY_RATE} "
    f"decay_step: {DECAY_STEP} }}"
)


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, ROWS)
    items = rng.integers(0, 50, ROWS)
    clk = ((users % 2 == 0) ^ (rng.random(ROWS) < 0.1)).astype(np.int64)
    path = tmp_path_factory.mktemp("train_metrics") / "train.parquet"
    pq.write_table(pa.table({"user_id": users, "item_id": items, "clk": clk}), path)
    return str(path)


def _config(data, model_dir, train_metrics=TRAIN_METRICS):
    return parse_pipeline_config(
        CONFIG.format(
            data=data, model_dir=model_dir, steps=STEPS, batch=BATCH, train_metrics=train_metrics
        )
    )


def _binned_counts(probs: np.ndarray, labels: np.ndarray, n: int = 200) -> np.ndarray:
    """(n, 2) counts of positives / negatives scored at or above each of n thresholds."""
    thresholds = np.linspace(0, 1, n)
    above = probs[None, :] >= thresholds[:, None]
    return np.stack([(above & (labels == 1)).sum(1), (above & (labels == 0)).sum(1)], 1)


def _auc_of_counts(counts: np.ndarray) -> float:
    """Trapezoidal ROC AUC from per-threshold (positive, negative) counts above it."""
    tpr = np.append(counts[:, 0] / counts[0, 0], 0.0)
    fpr = np.append(counts[:, 1] / counts[0, 1], 0.0)
    return float(-np.trapezoid(tpr, fpr))


def _reference(batches):
    """Upstream's windowed decay: every DECAY_STEP batches, AUC counts decay as
    ``r * old + (1 - r) * window`` (the first window taken as is) and MAE as
    ``r * old + (1 - r) * mae(window)``; values after each window."""
    counts = mae = None
    out = []
    for end in range(DECAY_STEP, len(batches) + 1, DECAY_STEP):
        window = batches[end - DECAY_STEP : end]
        probs = np.concatenate([p for p, _, _ in window])
        logits = np.concatenate([y for _, y, _ in window])
        labels = np.concatenate([t for _, _, t in window])
        new = _binned_counts(probs, labels).astype(np.float64)
        counts = new if counts is None else DECAY_RATE * counts + (1 - DECAY_RATE) * new
        new_mae = float(np.abs(logits - labels).mean())
        mae = new_mae if mae is None else DECAY_RATE * mae + (1 - DECAY_RATE) * new_mae
        out.append({"auc": _auc_of_counts(counts), "mean_absolute_error": mae})
    return out


def test_train_metrics_follow_the_decay_formula_and_reach_log_and_tensorboard(
    data_path, tmp_path, monkeypatch, caplog
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fed, seen = [], []
    real_update = RankModel.update_train_metric
    real_compute = RankModel.compute_train_metric

    def update(self, predictions, batch):
        fed.append(
            (
                predictions["probs"].detach().numpy().copy(),
                predictions["y"].detach().numpy().copy(),
                batch.labels["clk"].numpy().copy(),
            )
        )
        real_update(self, predictions, batch)
        if len(fed) % DECAY_STEP == 0:
            seen.append({k: float(v) for k, v in real_compute(self).items()})

    monkeypatch.setattr(RankModel, "update_train_metric", update)
    model_dir = tmp_path / "m"
    caplog.set_level("INFO")
    config = _config(data_path, model_dir)
    validate_pipeline_config(config)  # the declared fields pass the schema walk
    loop.train_and_evaluate(config)

    assert len(fed) == STEPS and all(len(t) == BATCH for _, _, t in fed)
    expected = _reference(fed)
    assert len(seen) == len(expected) == STEPS // DECAY_STEP
    for got, want in zip(seen, expected, strict=True):
        assert got["auc"] == pytest.approx(want["auc"], abs=1e-5)
        assert got["mean_absolute_error"] == pytest.approx(want["mean_absolute_error"], rel=1e-5)
    # the labels depend on user_id: a trained model ranks clearly better than chance
    assert 0.6 < seen[-1]["auc"] <= 1.0

    # logged and written at every log_step_count_steps (4, 8): the values after 2 and 4 windows
    for step, want in ((4, expected[1]), (8, expected[3])):
        assert f"train metrics at step {step}: auc:{want['auc']:.6f}" in caplog.text
    acc = EventAccumulator(str(model_dir))
    acc.Reload()
    written = {e.step: e.value for e in acc.Scalars("metric/auc")}
    assert sorted(written) == [4, 8]
    assert written[8] == pytest.approx(expected[3]["auc"], abs=1e-5)
    mae = {e.step: e.value for e in acc.Scalars("metric/mean_absolute_error")}
    assert mae[4] == pytest.approx(expected[1]["mean_absolute_error"], rel=1e-5)


def test_train_metric_xauc_is_declared_and_reads_y(data_path, tmp_path):
    from tzrec.core import build
    from tzrec.models.metrics.xauc import xauc

    config = _config(data_path, tmp_path, "train_metrics { xauc {} decay_rate: 0 decay_step: 1 }")
    validate_pipeline_config(config)
    features = build.create_features(config)
    dataset = build.build_dataset(config, features, data_path, "eval")
    model = build.build_model(config, dataset.features)
    batch = next(iter(dataset))
    with torch.no_grad():
        predictions = model.predict(batch)
    model.update_train_metric(predictions, batch)
    got = float(model.compute_train_metric()["xauc"])
    assert got == pytest.approx(float(xauc(predictions["y"], batch.labels["clk"])), abs=1e-6)


def test_train_metric_kind_outside_the_model_is_one_line(data_path, tmp_path):
    config = _config(data_path, tmp_path, "train_metrics { recall_at_k { top_k: 1 } }")
    with pytest.raises(ConfigError, match="MultiTower supports auc, .*, not recall_at_k"):
        loop.train_and_evaluate(config)


def test_bad_decay_and_duplicates_are_one_line(data_path, tmp_path):
    cfg = _config(data_path, tmp_path, "train_metrics { auc {} decay_rate: 1.5 }")
    with pytest.raises(ConfigError, match=r"decay_rate in \[0, 1\], got .* and 1.5"):
        loop.train_and_evaluate(cfg)
    cfg = _config(data_path, tmp_path, "train_metrics { auc {} } train_metrics { auc {} }")
    with pytest.raises(ConfigError, match="auc is set twice"):
        loop.train_and_evaluate(cfg)


class _NoTrainMetrics(BaseModel):
    def predict(self, batch):
        return {}


def test_model_without_train_metrics_refuses_the_field():
    cfg = text_format.Parse(
        "multi_tower {} train_metrics { auc {} } losses { binary_cross_entropy {} }",
        model_pb2.ModelConfig(),
    )
    with pytest.raises(ConfigError, match="_NoTrainMetrics computes no training metrics"):
        _NoTrainMetrics(cfg, [], ["clk"])


class _Match(MatchModel):
    def predict(self, batch):
        return {}


def test_match_train_recall_on_similarities():
    cfg = text_format.Parse(
        "dssm {} losses { softmax_cross_entropy {} } "
        "train_metrics { recall_at_k { top_k: 1 } decay_rate: 0.5 decay_step: 1 }",
        model_pb2.ModelConfig(),
    )
    model = _Match(cfg, [], ["clk"])
    batch = Batch()
    # rows 0, 1 rank the positive (column 0) first; row 2 does not: recall@1 = 2/3
    sim = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.7]])
    model.update_train_metric({"similarity": sim}, batch)
    assert {k: round(float(v), 6) for k, v in model.compute_train_metric().items()} == {
        "recall@1": round(2 / 3, 6)
    }
    # all wrong: 0.5 * 2/3 + 0.5 * 0
    wrong = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.1, 0.7]])
    model.update_train_metric({"similarity": wrong}, batch)
    assert float(model.compute_train_metric()["recall@1"]) == pytest.approx(1 / 3)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC: share of (positive, negative) pairs ordered right, ties half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_eval_metrics_get_grouping_ids_and_regression_outputs_as_upstream(data_path, tmp_path):
    """grouped_auc reads its grouping_key column per row; mean_absolute_error reads ``y``."""
    from tzrec.core import build

    metrics = (
        'metrics { grouped_auc { grouping_key: "user_id" } } metrics { mean_absolute_error {} }'
    )
    config = _config(data_path, tmp_path / "m", train_metrics=metrics)
    features = build.create_features(config)
    dataset = build.build_dataset(config, features, data_path, "eval")
    model = build.build_model(config, dataset.features)
    model.eval()
    scores, labels, users, ys = [], [], [], []
    with torch.no_grad():
        for batch in dataset:
            predictions = model.predict(batch)
            model.update_metric(predictions, batch)
            scores.append(predictions["probs"].reshape(-1).numpy())
            ys.append(predictions["y"].reshape(-1).numpy())
            labels.append(batch.labels["clk"].reshape(-1).numpy())
            users.append(batch.sparse_features["__BASE__"]["user_id"].values().numpy())
    got = model.compute_metric()
    scores, labels, users, ys = map(np.concatenate, (scores, labels, users, ys))
    per_user = [
        _auc(scores[users == u], labels[users == u])
        for u in np.unique(users)
        if 0 < labels[users == u].sum() < (users == u).sum()
    ]
    assert got["grouped_auc"] == pytest.approx(np.mean(per_user), abs=1e-5)
    assert got["mean_absolute_error"] == pytest.approx(np.abs(ys - labels).mean(), rel=1e-5)
    assert not np.allclose(ys, scores)  # y is the logit here, not the probability


def test_xauc_grouped_xauc_and_normalized_entropy_read_what_upstream_feeds(data_path, tmp_path):
    """xauc / grouped_xauc read ``y`` (grouped by their column); normalized_entropy ``probs``."""
    import itertools

    from tzrec.core import build

    metrics = (
        'metrics { xauc {} } metrics { grouped_xauc { grouping_key: "user_id" } } '
        "metrics { normalized_entropy {} }"
    )
    config = _config(data_path, tmp_path / "m", train_metrics=metrics)
    features = build.create_features(config)
    dataset = build.build_dataset(config, features, data_path, "eval")
    model = build.build_model(config, dataset.features)
    model.eval()
    probs, labels, users, ys = [], [], [], []
    with torch.no_grad():
        for batch in dataset:
            predictions = model.predict(batch)
            model.update_metric(predictions, batch)
            probs.append(predictions["probs"].reshape(-1).numpy().astype(np.float64))
            ys.append(predictions["y"].reshape(-1).numpy().astype(np.float64))
            labels.append(batch.labels["clk"].reshape(-1).numpy().astype(np.float64))
            users.append(batch.sparse_features["__BASE__"]["user_id"].values().numpy())
    got = model.compute_metric()
    probs, labels, users, ys = map(np.concatenate, (probs, labels, users, ys))

    def brute(p, t):
        pairs = list(itertools.combinations(range(len(p)), 2))
        return sum((t[i] - t[j]) * (p[i] - p[j]) > 0 for i, j in pairs) / len(pairs)

    groups = [u for u in np.unique(users) if (users == u).sum() > 1]
    sizes = np.array([(users == u).sum() for u in groups])
    per_user = np.array([brute(ys[users == u], labels[users == u]) for u in groups])
    ce = -np.sum(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    r = labels.mean()
    base = -(labels.sum() * np.log(r) + (len(labels) - labels.sum()) * np.log(1 - r))
    assert got["xauc"] == pytest.approx(brute(ys, labels), abs=1e-6)
    assert got["grouped_xauc"] == pytest.approx((per_user * sizes).sum() / sizes.sum(), abs=1e-6)
    assert got["normalized_entropy"] == pytest.approx(ce / base, rel=1e-4)
