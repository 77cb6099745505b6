"""Layer norm and per-head group norm: reference values and Triton parity."""

import pytest
import torch

from tzrec.kernels import group_norm, layer_norm


def test_layer_norm_matches_torch():
    torch.manual_seed(0)
    x, w, b = torch.randn(7, 10), torch.randn(10), torch.randn(10)
    expected = torch.nn.functional.layer_norm(x, (10,), w, b)
    torch.testing.assert_close(layer_norm(x, w, b), expected)


def test_group_norm_normalizes_each_head_separately():
    x = torch.cat([torch.randn(4, 3) * 5 + 3, torch.randn(4, 3)], dim=1)
    y = group_norm(x, num_groups=2).view(4, 2, 3)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4, 2), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    ("rows", "groups", "dim", "affine"),
    [(0, 1, 8, True), (5, 1, 24, True), (6, 3, 5, True), (4, 2, 16, False)],
)
def test_triton_matches_pytorch(rows, groups, dim, affine, assert_matches):
    torch.manual_seed(1)
    x = torch.randn(rows, groups * dim, requires_grad=True)
    w = torch.randn(groups * dim, requires_grad=True) if affine else None
    b = torch.randn(groups * dim, requires_grad=True) if affine else None
    inputs = (x, w, b) if affine else (x,)
    assert_matches(
        lambda: group_norm(x, w, b, groups, kernel="TRITON"),
        lambda: group_norm(x, w, b, groups, kernel="PYTORCH"),
        inputs,
    )


def test_wrong_group_count_raises():
    with pytest.raises(ValueError, match="G=3"):
        group_norm(torch.randn(2, 4), num_groups=3)
