import pytest
import torch
from google.protobuf import text_format

from tzrec.core.errors import ConfigError
from tzrec.models.metrics import (
    AUC,
    Accuracy,
    DecayAUC,
    GroupedAUC,
    MeanAbsoluteError,
    MeanSquaredError,
    RecallAtK,
    TrainMetricWrapper,
    create_metric,
    create_train_metric,
)
from tzrec.protos import metric_pb2

pytestmark = pytest.mark.usefixtures("only_models_plugin")


def _cfg(text: str) -> metric_pb2.MetricConfig:
    return text_format.Parse(text, metric_pb2.MetricConfig())


def _exact_auc(preds, target):
    pos, neg = preds[target == 1], preds[target == 0]
    diff = pos.unsqueeze(1) - neg.unsqueeze(0)
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean()


@pytest.mark.parametrize(
    "text,display,cls",
    [
        ("auc {}", "auc", AUC),
        ("recall_at_k { top_k: 3 }", "recall@3", RecallAtK),
        ("grouped_auc { grouping_key: 'uid' }", "grouped_auc", GroupedAUC),
        ("mean_absolute_error {}", "mean_absolute_error", MeanAbsoluteError),
        ("mean_squared_error {}", "mean_squared_error", MeanSquaredError),
        ("accuracy {}", "accuracy", Accuracy),
    ],
)
def test_create_metric_by_config_name(text, display, cls):
    name, shown, metric = create_metric(_cfg(text))
    assert name == text.split()[0] and shown == display and isinstance(metric, cls)


def test_create_metric_with_nothing_set_is_a_config_error():
    with pytest.raises(ConfigError, match="sets no metric"):
        create_metric(metric_pb2.MetricConfig())


def test_recall_at_k_positive_at_column_zero():
    m = RecallAtK(_cfg("recall_at_k { top_k: 2 }").recall_at_k)
    preds = torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5], [0.4, 0.9, 0.5]])
    m.update(preds)  # ranks of column 0: 1st, 3rd, 3rd
    assert m.compute().item() == pytest.approx(1 / 3)
    m.update(torch.tensor([[0.2, 0.1, 0.0]]))
    assert m.compute().item() == pytest.approx(2 / 4)
    m.reset()
    assert m.compute().item() == 0.0


def test_recall_at_k_with_index_and_matrix_targets():
    preds = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.1, 0.5]])
    by_index = RecallAtK(metric_pb2.RecallAtK(top_k=1))
    by_index.update(preds, torch.tensor([1, 2]))
    assert by_index.compute().item() == pytest.approx(0.5)
    by_matrix = RecallAtK(metric_pb2.RecallAtK(top_k=2))
    by_matrix.update(preds, torch.tensor([[1, 1, 0], [0, 1, 1]]))
    assert by_matrix.compute().item() == pytest.approx(2 / 4)


def test_recall_at_k_larger_than_width_counts_everything():
    m = RecallAtK(metric_pb2.RecallAtK(top_k=10))
    m.update(torch.randn(3, 4))
    assert m.compute().item() == 1.0


def test_exact_auc_matches_pairwise_definition():
    g = torch.Generator().manual_seed(1)
    preds = torch.rand(200, generator=g)
    target = (torch.rand(200, generator=g) < preds).long()
    m = AUC(metric_pb2.AUC(thresholds=0))
    m.update(preds[:100], target[:100])
    m.update(preds[100:], target[100:])
    assert m.compute().item() == pytest.approx(_exact_auc(preds, target).item(), abs=1e-6)


def test_binned_auc_is_close_and_takes_two_column_probs():
    g = torch.Generator().manual_seed(2)
    preds = torch.rand(500, generator=g)
    target = (torch.rand(500, generator=g) < preds).long()
    m = AUC(metric_pb2.AUC(), num_class=2)
    m.update(torch.stack([1 - preds, preds], dim=1), target)
    assert m.compute().item() == pytest.approx(_exact_auc(preds, target).item(), abs=0.01)


def test_grouped_auc_averages_groups_with_both_labels():
    m = GroupedAUC(metric_pb2.GroupedAUC(grouping_key="uid"))
    preds = torch.tensor([0.9, 0.1, 0.2, 0.8, 0.5, 0.6])
    target = torch.tensor([1, 0, 1, 0, 1, 1])
    group = torch.tensor([1, 1, 2, 2, 3, 3])  # group 3 has only positives: skipped
    m.update(preds[:3], target[:3], group[:3])
    m.update(preds[3:], target[3:], group[3:])
    assert m.compute().item() == pytest.approx(0.5)  # (1.0 + 0.0) / 2


def test_grouped_auc_without_data_is_zero():
    assert GroupedAUC().compute().item() == 0.0


def test_regression_and_accuracy_values():
    mae, mse = MeanAbsoluteError(), MeanSquaredError()
    preds, target = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 1.0, 1.0])
    mae.update(preds, target)
    mse.update(preds, target)
    assert mae.compute().item() == pytest.approx(4 / 3)
    assert mse.compute().item() == pytest.approx(10 / 3)
    acc = Accuracy(metric_pb2.Accuracy(threshold=0.5))
    acc.update(torch.tensor([0.9, 0.2, 0.6, 0.4]), torch.tensor([1, 0, 0, 0]))
    assert acc.compute().item() == pytest.approx(0.75)
    multi = Accuracy(metric_pb2.Accuracy(top_k=2), num_class=3)
    multi.update(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]), torch.tensor([1, 0]))
    assert multi.compute().item() == pytest.approx(0.5)


def _sync_as_if_distributed(a, b):
    """Run torchmetrics' real reduction on ``a`` with ``b`` playing a second rank."""
    from torchmetrics.utilities.data import dim_zero_cat

    def flat_states(m):
        out = []
        for attr, fn in m._reductions.items():
            value = getattr(m, attr)
            if isinstance(value, list):
                out.append(
                    dim_zero_cat(value) if fn is dim_zero_cat and len(value) > 1 else value[0]
                )
            else:
                out.append(value)
        return iter(out)

    other = flat_states(b)
    a._sync_dist(lambda tensor, group=None: [tensor, next(other)])


def test_metric_states_reduce_across_ranks():
    a, b = RecallAtK(metric_pb2.RecallAtK(top_k=1)), RecallAtK(metric_pb2.RecallAtK(top_k=1))
    a.update(torch.tensor([[0.9, 0.1]]))
    b.update(torch.tensor([[0.1, 0.9], [0.1, 0.9]]))
    _sync_as_if_distributed(a, b)
    assert a.compute().item() == pytest.approx(1 / 3)


def test_grouped_auc_groups_split_across_ranks_are_scored_whole():
    a, b = GroupedAUC(), GroupedAUC()
    a.update(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]), torch.tensor([1, 2]))
    a.update(torch.tensor([0.3]), torch.tensor([1]), torch.tensor([3]))
    b.update(torch.tensor([0.1, 0.8]), torch.tensor([0, 1]), torch.tensor([1, 2]))
    # alone, each rank sees one-label groups only
    assert b.compute().item() == 0.0
    _sync_as_if_distributed(a, b)
    assert a.compute().item() == pytest.approx(1.0)


def test_train_auc_uses_decay_auc_and_smooths():
    cfg = text_format.Parse("auc {} decay_rate: 0.5 decay_step: 2", metric_pb2.TrainMetricConfig())
    name, shown, wrapper = create_train_metric(cfg)
    assert (name, shown) == ("auc", "auc")
    assert isinstance(wrapper, TrainMetricWrapper) and isinstance(wrapper.metric, DecayAUC)
    perfect = (torch.tensor([0.9, 0.1]), torch.tensor([1, 0]))
    wrapper.update(*perfect)
    assert wrapper.compute().item() == 0.0  # no value before decay_step batches
    wrapper.update(*perfect)
    assert wrapper.compute().item() == pytest.approx(1.0)


def test_train_metric_wrapper_exponential_smoothing():
    wrapper = TrainMetricWrapper(MeanAbsoluteError(), decay_rate=0.5, decay_step=1)
    wrapper.update(torch.tensor([2.0]), torch.tensor([0.0]))
    assert wrapper.compute().item() == pytest.approx(2.0)
    wrapper.update(torch.tensor([4.0]), torch.tensor([0.0]))
    assert wrapper.compute().item() == pytest.approx(3.0)


def test_train_recall_display_name():
    cfg = text_format.Parse("recall_at_k { top_k: 5 }", metric_pb2.TrainMetricConfig())
    _, shown, wrapper = create_train_metric(cfg)
    assert shown == "recall@5" and isinstance(wrapper.metric, RecallAtK)


def test_decay_auc_weights_recent_batches():
    m = DecayAUC()
    m.update(torch.tensor([0.9, 0.1]), torch.tensor([1, 0]))  # perfect
    m.decay(0.5)
    assert m.compute().item() == pytest.approx(1.0)
    m.update(torch.tensor([0.1, 0.9]), torch.tensor([1, 0]))  # inverted
    m.decay(0.5)
    assert 0.0 < m.compute().item() < 1.0
