import pytest
import torch
from google.protobuf import text_format
from torch import nn

from tzrec.models.modules.activation import Dice, create_activation
from tzrec.models.modules.mlp import MLP
from tzrec.models.modules.tower import TaskTower
from tzrec.protos import module_pb2


def _mlp_config(text: str) -> module_pb2.MLP:
    return text_format.Parse(text, module_pb2.MLP())


def test_mlp_from_config_has_output_dim_and_shape():
    mlp = MLP.from_config(8, _mlp_config("hidden_units: [16, 4]"))
    assert mlp.output_dim() == 4
    assert mlp(torch.randn(3, 8)).shape == (3, 4)


def test_default_activation_is_relu_so_outputs_are_non_negative():
    mlp = MLP.from_config(8, _mlp_config("hidden_units: [5]"))
    assert isinstance(mlp.mlp[0].perceptron[-1], nn.ReLU)
    assert (mlp(torch.randn(64, 8)) >= 0).all()


def test_empty_activation_means_linear_layers_only():
    mlp = MLP.from_config(4, _mlp_config('hidden_units: [3] activation: ""'))
    layers = list(mlp.mlp[0].perceptron)
    assert len(layers) == 1 and isinstance(layers[0], nn.Linear)
    assert (mlp(torch.randn(64, 4)) < 0).any()


@pytest.mark.parametrize(
    "text,cls",
    [
        ("nn.SiLU", nn.SiLU),
        ("nn.Sigmoid", nn.Sigmoid),
        ("torch.nn.GELU", nn.GELU),
        (" nn.Tanh ", nn.Tanh),
    ],
)
def test_activation_strings_name_torch_modules(text, cls):
    assert isinstance(create_activation(text), cls)


def test_activation_with_keyword_arguments():
    act = create_activation("nn.LeakyReLU(negative_slope=0.25)")
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.25


def test_dice_activation_for_2d_and_3d():
    assert isinstance(create_activation("Dice", hidden_size=4, dim=2), Dice)
    mlp = MLP(6, [4], activation="Dice", dim=3)
    assert mlp(torch.randn(2, 5, 6)).shape == (2, 5, 4)


@pytest.mark.parametrize("bad", ["nn.NotAThing", "Relu", "nn.LeakyReLU(negative_slope)"])
def test_unknown_activation_is_an_error(bad):
    with pytest.raises(ValueError, match="activation"):
        create_activation(bad)


def test_dropout_single_value_applies_to_every_layer():
    mlp = MLP.from_config(4, _mlp_config("hidden_units: [4, 4, 4] dropout_ratio: 0.3"))
    assert mlp.dropout_ratio == pytest.approx([0.3, 0.3, 0.3])
    drops = [m for m in mlp.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == pytest.approx([0.3, 0.3, 0.3])


def test_dropout_per_layer_and_zero_means_no_dropout_layer():
    mlp = MLP.from_config(4, _mlp_config("hidden_units: [4, 4] dropout_ratio: [0.0, 0.5]"))
    drops = [m for m in mlp.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 1 and drops[0].p == 0.5


def test_dropout_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="dropout_ratio"):
        MLP(4, [4, 4, 4], dropout_ratio=[0.1, 0.2])


def test_use_bn_drops_linear_bias_and_works_for_3d():
    mlp = MLP.from_config(6, _mlp_config("hidden_units: [4] use_bn: true"), dim=3)
    linear = mlp.mlp[0].perceptron[0]
    assert linear.bias is None
    assert any(isinstance(m, nn.BatchNorm1d) for m in mlp.modules())
    assert mlp(torch.randn(3, 7, 6)).shape == (3, 7, 4)


def test_bias_false_and_use_ln():
    mlp = MLP.from_config(6, _mlp_config("hidden_units: [4] bias: false use_ln: true"))
    assert mlp.mlp[0].perceptron[0].bias is None
    assert isinstance(mlp.mlp[0].perceptron[1], nn.LayerNorm)


def test_use_bn_and_use_ln_together_is_an_error():
    with pytest.raises(ValueError, match="use_bn and use_ln"):
        MLP(4, [4], use_bn=True, use_ln=True)


def test_return_hidden_layer_feature():
    mlp = MLP(4, [3, 2])
    x = torch.randn(2, 4)
    out = mlp.hidden_layer_features(x)
    assert set(out) == {"hidden_layer0", "hidden_layer1", "hidden_layer_end"}
    assert torch.equal(out["hidden_layer1"], out["hidden_layer_end"])
    torch.testing.assert_close(out["hidden_layer_end"], mlp(x))


def test_mlp_is_torchscriptable():
    mlp = MLP(4, [3, 2]).eval()
    x = torch.randn(2, 4)
    torch.testing.assert_close(torch.jit.script(mlp)(x), mlp(x))


def test_task_tower_with_and_without_mlp():
    tower = TaskTower(8, num_class=2, mlp=_mlp_config("hidden_units: [4]"))
    assert tower(torch.randn(5, 8)).shape == (5, 2)
    assert tower.output_dim() == 2
    linear_only = TaskTower(8)
    assert linear_only.tower_mlp is None and linear_only(torch.randn(5, 8)).shape == (5, 1)
