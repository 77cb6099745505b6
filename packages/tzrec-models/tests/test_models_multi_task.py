"""MultiTaskRank: per-task predictions, weighted losses, metrics and config checks."""

import math

import pytest
import torch

from tzrec.core.errors import ConfigError
from tzrec.data import Batch
from tzrec.models.multi_task import MultiTaskRank
from tzrec.protos import loss_pb2, metric_pb2, model_pb2, tower_pb2
from tzrec.protos.models import multi_task_rank_pb2

BCE = loss_pb2.LossConfig(binary_cross_entropy=loss_pb2.BinaryCrossEntropy())
AUC = metric_pb2.MetricConfig(auc=metric_pb2.AUC())
X = torch.tensor([0.2, 0.3])


class _FixedOutputs(MultiTaskRank):
    """Task ``i`` outputs ``X + i`` (no features): the base's arithmetic in isolation."""

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.output({t.name: (X + i).unsqueeze(1) for i, t in enumerate(self.tasks)})


def _config(**second: object) -> model_pb2.ModelConfig:
    towers = [
        tower_pb2.TaskTower(tower_name="t1", label_name="label1", losses=[BCE], metrics=[AUC]),
        tower_pb2.TaskTower(
            tower_name="t2", label_name="label2", losses=[BCE], metrics=[AUC], **second
        ),
    ]
    return model_pb2.ModelConfig(
        simple_multi_task=multi_task_rank_pb2.SimpleMultiTask(task_towers=towers)
    )


def _batch(**extra_labels: torch.Tensor) -> Batch:
    labels = {"label1": torch.tensor([0, 1]), "label2": torch.tensor([1, 0]), **extra_labels}
    return Batch(labels=labels, batch_size=2)


def _bce(logit: float, label: int) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -math.log(p if label else 1 - p)


@pytest.mark.parametrize("weight", [1.0, 2.0])
def test_predictions_are_named_per_tower_and_losses_are_weighted(weight):
    model = _FixedOutputs(_config(weight=weight), [], ["label1", "label2"])
    batch = _batch()
    pred = model.predict(batch)
    assert sorted(pred) == ["logits_t1", "logits_t2", "probs_t1", "probs_t2"]
    torch.testing.assert_close(pred["logits_t2"], X + 1)
    torch.testing.assert_close(pred["probs_t1"], torch.sigmoid(X))
    losses = model.loss(pred, batch)
    assert sorted(losses) == ["binary_cross_entropy_t1", "binary_cross_entropy_t2"]
    # upstream's multi_task_rank_test values: 0.6762 and 0.9021 * weight
    t1 = (_bce(0.2, 0) + _bce(0.3, 1)) / 2
    t2 = (_bce(1.2, 1) + _bce(1.3, 0)) / 2
    assert losses["binary_cross_entropy_t1"].item() == pytest.approx(t1, abs=1e-5)
    assert t1 == pytest.approx(0.6762, abs=1e-4) and t2 == pytest.approx(0.9021, abs=1e-4)
    assert losses["binary_cross_entropy_t2"].item() == pytest.approx(t2 * weight, abs=1e-5)
    model.update_metric(pred, batch)
    assert model.compute_metric() == {"auc_t1": 1.0, "auc_t2": 0.0}


def test_task_space_weights_rows_by_the_indicator_label_normalised_to_mean_one():
    second = {
        "task_space_indicator_label": "label1",
        "in_task_space_weight": 1.0,
        "out_task_space_weight": 0.0,
    }
    model = _FixedOutputs(_config(**second), [], ["label1", "label2"])
    batch = _batch()
    losses = model.loss(model.predict(batch), batch)
    # only row 1 is in the space (label1 > 0): weights [0, 1] / mean 0.5 = [0, 2]
    expected = (0 * _bce(1.2, 1) + 2 * _bce(1.3, 0)) / 2
    assert expected == pytest.approx(1.5410, abs=1e-4)  # upstream's value
    assert losses["binary_cross_entropy_t2"].item() == pytest.approx(expected, abs=1e-5)


def test_sample_weight_name_weights_one_task_normalised_by_its_mean():
    model = _FixedOutputs(_config(sample_weight_name="w"), [], ["label1", "label2"], ["w"])
    batch = _batch()
    batch.sample_weights["w"] = torch.tensor([1.0, 3.0])
    losses = model.loss(model.predict(batch), batch)
    expected = (0.5 * _bce(1.2, 1) + 1.5 * _bce(1.3, 0)) / 2
    assert losses["binary_cross_entropy_t2"].item() == pytest.approx(expected, abs=1e-5)
    # an all-zero weight column gives 0, not NaN
    batch.sample_weights["w"] = torch.zeros(2)
    assert model.loss(model.predict(batch), batch)["binary_cross_entropy_t2"].item() == 0.0


def test_softmax_and_regression_tasks_get_probs1_and_y():
    towers = [
        tower_pb2.TaskTower(
            tower_name="c",
            label_name="label1",
            num_class=2,
            losses=[loss_pb2.LossConfig(softmax_cross_entropy=loss_pb2.SoftmaxCrossEntropy())],
            metrics=[AUC],
        ),
        tower_pb2.TaskTower(
            tower_name="r",
            label_name="label2",
            losses=[loss_pb2.LossConfig(l2_loss=loss_pb2.L2Loss())],
            metrics=[metric_pb2.MetricConfig(mean_squared_error=metric_pb2.MeanSquaredError())],
        ),
    ]
    cfg = model_pb2.ModelConfig(
        simple_multi_task=multi_task_rank_pb2.SimpleMultiTask(task_towers=towers)
    )

    class Two(MultiTaskRank):
        def predict(self, batch):
            return self.output({"c": torch.tensor([[0.0, 1.0], [2.0, 0.0]]), "r": X.unsqueeze(1)})

    model = Two(cfg, [], ["label1", "label2"])
    pred = model.predict(_batch())
    assert sorted(pred) == ["logits_c", "probs1_c", "probs_c", "y_r"]
    torch.testing.assert_close(pred["probs1_c"], torch.softmax(pred["logits_c"], 1)[:, 1])
    model.update_metric(pred, _batch())
    metrics = model.compute_metric()
    # auc reads probs1 = [0.73, 0.12] against labels [0, 1]: every pair mis-ordered
    assert metrics["auc_c"] == 0.0
    assert metrics["mean_squared_error_r"] == pytest.approx(((0.2 - 1) ** 2 + 0.3**2) / 2)
    domains = model.label_domains()
    assert domains["label1"].integral and domains["label1"].high == 1.0
    assert "label2" not in domains


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: setattr(c, "use_pareto_loss_weight", True), "use_pareto_loss_weight"),
        (lambda c: c.losses.add().CopyFrom(BCE), "model_config.losses: simple_multi_task"),
        (lambda c: setattr(c, "num_class", 2), "model_config.num_class"),
        (
            lambda c: setattr(c.simple_multi_task.task_towers[1], "label_name", "nope"),
            "task_towers\\[1\\].label_name 'nope' is not in data_config.label_fields",
        ),
        (
            lambda c: setattr(c.simple_multi_task.task_towers[1], "tower_name", "t1"),
            "tower_name 't1' is used by two towers",
        ),
        (
            lambda c: setattr(c.simple_multi_task.task_towers[1], "num_class", 2),
            "task_towers\\[1\\].num_class must be 1 for binary_cross_entropy",
        ),
        (
            lambda c: c.simple_multi_task.task_towers[1].ClearField("losses"),
            "task_towers\\[1\\].losses: set at least one loss",
        ),
        (
            lambda c: c.simple_multi_task.task_towers[1].metrics.add(
                mean_absolute_error=metric_pb2.MeanAbsoluteError()
            ),
            "mean_absolute_error needs a regression loss",
        ),
        (
            lambda c: setattr(c.simple_multi_task.task_towers[0], "pareto_min_loss_weight", 0.1),
            "pareto_min_loss_weight",
        ),
        (
            lambda c: setattr(c.simple_multi_task.task_towers[0], "sample_weight_name", "w"),
            "sample_weight_name 'w' is not in data_config.sample_weight_fields",
        ),
    ],
)
def test_bad_task_configs_are_refused_in_one_line(edit, message):
    cfg = _config()
    edit(cfg)
    with pytest.raises(ConfigError, match=message) as err:
        _FixedOutputs(cfg, [], ["label1", "label2"])
    assert "\n" not in str(err.value)


def test_a_sample_weight_field_no_task_names_is_refused():
    with pytest.raises(ConfigError, match="sample_weight_fields w: .*sample_weight_name"):
        _FixedOutputs(_config(), [], ["label1", "label2"], ["w"])


def test_bayes_towers_default_their_label_to_label_fields_by_position():
    towers = [
        tower_pb2.BayesTaskTower(tower_name="a", losses=[BCE]),
        tower_pb2.BayesTaskTower(tower_name="b", losses=[BCE]),
    ]
    cfg = model_pb2.ModelConfig(dbmtl=multi_task_rank_pb2.DBMTL(task_towers=towers))
    model = _FixedOutputs(cfg, [], ["label1", "label2"])
    assert [t.label_name for t in model.tasks] == ["label1", "label2"]


def test_train_metrics_and_grouped_auc_are_per_task():
    cfg = _config()
    tower = cfg.simple_multi_task.task_towers[0]
    tower.train_metrics.add(auc=metric_pb2.AUC(), decay_step=1, decay_rate=0.0)
    tower.metrics.add(grouped_auc=metric_pb2.GroupedAUC(grouping_key="label2"))
    model = _FixedOutputs(cfg, [], ["label1", "label2"])
    batch = _batch()
    pred = model.predict(batch)
    model.update_train_metric(pred, batch)
    assert {k: float(v) for k, v in model.compute_train_metric().items()} == {"auc_t1": 1.0}
    model.update_metric(pred, batch)
    # label2 puts each row in its own group: no group has both classes
    assert set(model.compute_metric()) == {"auc_t1", "grouped_auc_t1", "auc_t2"}


def test_xauc_grouped_xauc_read_y_and_normalized_entropy_reads_probs_per_task():
    towers = [
        tower_pb2.TaskTower(
            tower_name="c",
            label_name="label1",
            losses=[BCE],
            metrics=[metric_pb2.MetricConfig(normalized_entropy=metric_pb2.NormalizedEntropy())],
        ),
        tower_pb2.TaskTower(
            tower_name="r",
            label_name="label2",
            losses=[loss_pb2.LossConfig(l2_loss=loss_pb2.L2Loss())],
            metrics=[
                metric_pb2.MetricConfig(xauc=metric_pb2.XAUC()),
                metric_pb2.MetricConfig(grouped_xauc=metric_pb2.GroupedXAUC(grouping_key="group")),
            ],
        ),
    ]
    cfg = model_pb2.ModelConfig(
        simple_multi_task=multi_task_rank_pb2.SimpleMultiTask(task_towers=towers)
    )
    model = _FixedOutputs(cfg, [], ["label1", "label2", "group"])
    batch = Batch(
        labels={
            "label1": torch.tensor([0, 1]),
            "label2": torch.tensor([1.0, 3.0]),  # y_r = [1.2, 1.3]: ordered as the label
            "group": torch.tensor([7, 7]),
        },
        batch_size=2,
    )
    pred = model.predict(batch)
    model.update_metric(pred, batch)
    got = {k: float(v) for k, v in model.compute_metric().items()}
    assert got["xauc_r"] == 1.0 and got["grouped_xauc_r"] == 1.0
    p = torch.sigmoid(X)
    ce = -(math.log(1 - p[0]) + math.log(p[1]))
    assert got["normalized_entropy_c"] == pytest.approx(ce / (2 * math.log(2)), rel=1e-5)
