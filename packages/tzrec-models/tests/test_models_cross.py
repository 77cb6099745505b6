"""DCN cross layers: v1's rank-one cross and v2's low-rank cross, by hand and by formula."""

import torch

from tzrec.models.modules.cross import Cross, CrossV2


def test_cross_v1_one_layer_by_hand():
    cross = Cross(2, cross_num=1)
    with torch.no_grad():
        cross.w[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
        cross.b[0].copy_(torch.tensor([0.5, 0.0]))
    # x1 = x0 * (w . x0) + b + x0 = [1, 2] * 3 + [0.5, 0] + [1, 2]
    got = cross(torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(got, torch.tensor([[4.5, 8.0]]))


def test_cross_v1_stacks_layers_against_x0():
    torch.manual_seed(0)
    cross = Cross(5, cross_num=3).double()
    with torch.no_grad():
        for b in cross.b:
            b.normal_()
    x0 = torch.randn(4, 5, dtype=torch.float64)
    x = x0
    for w, b in zip(cross.w, cross.b, strict=True):
        x = x0 * (x @ w.weight[0]).unsqueeze(1) + b + x
    torch.testing.assert_close(cross(x0), x)
    assert cross.output_dim() == 5


def test_cross_v1_starts_with_zero_bias():
    cross = Cross(3, cross_num=2)
    assert all(torch.equal(b, torch.zeros(3)) for b in cross.b)


def test_cross_v2_equals_the_full_matrix_formula():
    torch.manual_seed(1)
    cross = CrossV2(6, cross_num=2, low_rank=3).double()
    x0 = torch.randn(4, 6, dtype=torch.float64)
    x = x0
    for u, v in zip(cross.u_kernels, cross.v_kernels, strict=True):
        w = v.weight @ u.weight  # the (6, 6) matrix the low-rank kernel factorises
        x = x0 * (x @ w.T + v.bias) + x
    torch.testing.assert_close(cross(x0), x)
    assert cross.output_dim() == 6
    assert cross.u_kernels[0].weight.shape == (3, 6) and cross.u_kernels[0].bias is None


def test_cross_v2_one_layer_by_hand():
    cross = CrossV2(2, cross_num=1, low_rank=1)
    with torch.no_grad():
        cross.u_kernels[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
        cross.v_kernels[0].weight.copy_(torch.tensor([[1.0], [2.0]]))
        cross.v_kernels[0].bias.copy_(torch.tensor([0.0, 1.0]))
    # W x0 + c = [3, 6] + [0, 1] = [3, 7]; x1 = [1, 2] * [3, 7] + [1, 2]
    got = cross(torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(got, torch.tensor([[4.0, 16.0]]))
