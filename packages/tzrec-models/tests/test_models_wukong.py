"""WuKong's LCB / FMB / layer against hand-computed values and explicit pairwise sums."""

import pytest
import torch
import torch.nn.functional as F

from tzrec.core.errors import ConfigError
from tzrec.models.modules.wukong import (
    FactorizationMachineBlock,
    LinearCompressBlock,
    WuKongLayer,
)
from tzrec.protos import module_pb2


def test_linear_compress_block_mixes_features_per_dimension():
    lcb = LinearCompressBlock(2, 2)
    with torch.no_grad():
        lcb.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    x = torch.tensor([[[1.0, 10.0], [2.0, 20.0]]])  # features a=[1, 10], b=[2, 20]
    # out_0 = 1 a + 3 b, out_1 = 2 a + 4 b
    expected = torch.tensor([[[7.0, 70.0], [10.0, 100.0]]])
    torch.testing.assert_close(lcb(x), expected)


def test_fm_block_compresses_the_pairwise_dot_products():
    torch.manual_seed(0)
    fmb = FactorizationMachineBlock(3, 4, 2, 5, module_pb2.MLP(hidden_units=[6]))
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    fmb = fmb.double()
    # inter[b, f, k] = sum_g <x_f, x_g> W[g, k]
    dots = torch.tensor(
        [[[float(x[b, f] @ x[b, g]) for g in range(4)] for f in range(4)] for b in range(2)],
        dtype=torch.float64,
    )
    inter = (dots @ fmb.weight).reshape(2, 20)
    expected = fmb.feature_out_liner(fmb.mlp(fmb.norm(inter))).reshape(2, 2, 3)
    out = fmb(x)
    assert out.shape == (2, 2, 3)
    torch.testing.assert_close(out, expected)


def test_fm_block_hand_value_with_identity_parts():
    fmb = FactorizationMachineBlock(1, 2, 1, 1, module_pb2.MLP(hidden_units=[2], activation=""))
    with torch.no_grad():
        fmb.weight.copy_(torch.tensor([[1.0], [0.0]]))  # keep the dots with feature 0
        fmb.mlp.mlp[0].perceptron[0].weight.copy_(torch.eye(2))
        fmb.mlp.mlp[0].perceptron[0].bias.zero_()
        fmb.feature_out_liner.weight.copy_(torch.tensor([[1.0, -1.0]]))
        fmb.feature_out_liner.bias.zero_()
    x = torch.tensor([[[2.0], [3.0]]])
    # dots with feature 0: [4, 6]; LayerNorm -> [-1, 1]; out = -1 - 1 = -2
    torch.testing.assert_close(fmb(x), torch.tensor([[[-2.0]]]), atol=1e-4, rtol=0)


def _layer(feature_num, lcb=2, fmb=3):
    cfg = module_pb2.WuKongLayer(
        lcb_feature_num=lcb,
        fmb_feature_num=fmb,
        compressed_feature_num=4,
        feature_num_mlp=module_pb2.MLP(hidden_units=[8]),
    )
    return WuKongLayer.from_config(6, feature_num, cfg)


@pytest.mark.parametrize("feature_num", [5, 7], ids=["identity_residual", "projected_residual"])
def test_layer_is_layer_norm_of_fmb_lcb_plus_residual(feature_num):
    torch.manual_seed(0)
    layer = _layer(feature_num)
    x = torch.randn(3, feature_num, 6)
    residual = x if feature_num == 5 else layer.residual_projection(x)
    assert isinstance(layer.residual_projection, torch.nn.Identity) == (feature_num == 5)
    expected = F.layer_norm(
        torch.cat([layer.fmb(x), layer.lcb(x)], dim=1) + residual,
        (6,),
        layer.norm.weight,
        layer.norm.bias,
    )
    out = layer(x)
    assert out.shape == (3, 5, 6) and layer.output_feature_num() == 5
    torch.testing.assert_close(out, expected)


def test_compressed_feature_num_default_and_bad_sizes():
    cfg = module_pb2.WuKongLayer(
        lcb_feature_num=1, fmb_feature_num=1, feature_num_mlp=module_pb2.MLP(hidden_units=[4])
    )
    layer = WuKongLayer.from_config(2, 3, cfg)
    assert tuple(layer.fmb.weight.shape) == (3, 16)  # upstream's default 16
    with pytest.raises(ConfigError, match="lcb_feature_num must be > 0"):
        _layer(3, lcb=0)
