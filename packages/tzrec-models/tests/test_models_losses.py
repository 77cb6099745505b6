import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

from tzrec.core import plugins
from tzrec.core.errors import ConfigError
from tzrec.models.losses import (
    BinaryCrossEntropy,
    BinaryFocalLoss,
    JRCLoss,
    L2Loss,
    SoftmaxCrossEntropy,
    create_loss,
    weighted_mean,
)
from tzrec.protos import loss_pb2

pytestmark = pytest.mark.usefixtures("only_models_plugin")


def _cfg(text: str) -> loss_pb2.LossConfig:
    return text_format.Parse(text, loss_pb2.LossConfig())


@pytest.mark.parametrize(
    "text,cls",
    [
        ("binary_cross_entropy {}", BinaryCrossEntropy),
        ("softmax_cross_entropy {}", SoftmaxCrossEntropy),
        ("l2_loss {}", L2Loss),
        ("binary_focal_loss {}", BinaryFocalLoss),
    ],
)
def test_create_loss_by_config_name(text, cls):
    name, loss = create_loss(_cfg(text))
    assert name == text.split()[0]
    assert isinstance(loss, cls)


def test_create_jrc_loss_needs_two_classes():
    name, loss = create_loss(_cfg('jrc_loss { session_name: "sid" alpha: 0.3 }'), num_class=2)
    assert name == "jrc_loss" and loss.alpha == pytest.approx(0.3) and loss.session_name == "sid"
    with pytest.raises(ValueError, match="num_class 2"):
        create_loss(_cfg('jrc_loss { session_name: "sid" }'), num_class=1)


def test_create_loss_with_nothing_set_is_a_config_error():
    with pytest.raises(ConfigError, match="sets no loss"):
        create_loss(loss_pb2.LossConfig())


def test_loss_registry_names_match_loss_proto_oneof():
    names = {f.name for f in loss_pb2.LossConfig.DESCRIPTOR.oneofs_by_name["loss"].fields}
    assert names <= set(plugins.get_plugin_manager().registry("losses"))


def test_bce_matches_torch_and_label_smoothing():
    logits, labels = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1, 0, 1])
    loss = BinaryCrossEntropy()(logits, labels)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, labels.float()))
    smooth = BinaryCrossEntropy(
        _cfg("binary_cross_entropy { label_smoothing: 0.2 }").binary_cross_entropy
    )
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([0.9, 0.1, 0.9]))
    torch.testing.assert_close(smooth(logits, labels), expected)


def test_sample_weight_is_normalised_weighted_mean():
    logits, labels = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.0, 0.0])
    weight = torch.tensor([2.0, 0.0, 1.0])
    per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    expected = (per * weight).sum() / weight.sum()
    torch.testing.assert_close(BinaryCrossEntropy()(logits, labels, weight), expected)


def test_zero_weights_give_zero_loss_not_nan():
    out = weighted_mean(torch.tensor([1.0, 2.0]), torch.zeros(2))
    assert out.item() == 0.0


def test_uniform_weights_equal_unweighted():
    logits, labels = torch.randn(8), torch.randint(0, 2, (8,))
    loss = BinaryCrossEntropy()
    torch.testing.assert_close(loss(logits, labels, torch.full((8,), 3.0)), loss(logits, labels))


def test_reduction_none_returns_per_sample_losses():
    loss = L2Loss(reduction="none")
    out = loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([1.0, 4.0]))
    assert L2Loss.prediction_key == "y" and BinaryCrossEntropy.prediction_key == "logits"


def test_softmax_cross_entropy_positive_at_column_zero_by_default():
    sim = torch.randn(5, 4)
    loss = SoftmaxCrossEntropy()
    torch.testing.assert_close(loss(sim), F.cross_entropy(sim, torch.zeros(5, dtype=torch.long)))
    labels = torch.arange(4)
    square = torch.randn(4, 4)
    torch.testing.assert_close(loss(square, labels), F.cross_entropy(square, labels))


def test_softmax_cross_entropy_label_smoothing():
    cfg = _cfg("softmax_cross_entropy { label_smoothing: 0.1 }").softmax_cross_entropy
    logits, labels = torch.randn(6, 3), torch.randint(0, 3, (6,))
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(SoftmaxCrossEntropy(cfg)(logits, labels), expected)


def test_focal_loss_downweights_easy_examples():
    focal = BinaryFocalLoss(reduction="none")
    bce = BinaryCrossEntropy(reduction="none")
    logits, labels = torch.tensor([5.0, 0.0]), torch.tensor([1.0, 1.0])
    ratio = focal(logits, labels) / bce(logits, labels)
    assert ratio[0] < ratio[1]


def test_jrc_loss_reference_values():
    torch.manual_seed(0)
    logits = torch.randn(6, 2)
    labels = torch.tensor([1, 0, 1, 0, 0, 1])
    session = torch.tensor([7, 7, 7, 8, 8, 9])
    loss = JRCLoss(reduction="none")
    got = loss(logits, labels, session_ids=session)

    expected = []
    for i in range(6):
        same = [j for j in range(6) if session[j] == session[i]]
        if labels[i] == 1:
            cand = [j for j in same if labels[j] == 0 or j == i]
            col = 1
        else:
            cand = [j for j in same if labels[j] == 1 or j == i]
            col = 0
        ge = -torch.log_softmax(logits[cand, col], 0)[cand.index(i)]
        ce = F.cross_entropy(logits[i : i + 1], labels[i : i + 1])
        expected.append(0.5 * ce + 0.5 * ge)
    torch.testing.assert_close(got, torch.stack(expected))
    torch.testing.assert_close(
        JRCLoss()(logits, labels, session_ids=session), torch.stack(expected).mean()
    )


def test_jrc_loss_needs_session_ids():
    with pytest.raises(ValueError, match="session_ids"):
        JRCLoss()(torch.randn(2, 2), torch.tensor([0, 1]))


def test_losses_backpropagate():
    logits = torch.randn(4, requires_grad=True)
    BinaryCrossEntropy()(logits, torch.tensor([1, 0, 1, 0]), torch.rand(4)).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
