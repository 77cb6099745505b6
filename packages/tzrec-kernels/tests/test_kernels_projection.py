"""uvqk projection: split layout, SiLU on u only, and Triton parity."""

import pytest
import torch

from tzrec.kernels import uvqk_projection


def test_split_layout_and_shapes():
    torch.manual_seed(0)
    heads, attn_dim, hidden = 2, 3, 4
    out_dim = heads * (2 * hidden + 2 * attn_dim)
    x, w, b = torch.randn(5, 6), torch.randn(6, out_dim), torch.randn(out_dim)
    u, v, q, k = uvqk_projection(x, w, b, heads, attn_dim, hidden)
    full = x @ w + b  # SiLU on u only (upstream HSTU); v, q, k stay linear
    assert u.shape == (5, 8) and v.shape == (5, 2, 4)
    assert q.shape == (5, 2, 3) and k.shape == (5, 2, 3)
    torch.testing.assert_close(u, torch.nn.functional.silu(full[:, :8]))
    torch.testing.assert_close(v.reshape(5, -1), full[:, 8:16])
    torch.testing.assert_close(q.reshape(5, -1), full[:, 16:22])
    torch.testing.assert_close(k.reshape(5, -1), full[:, -6:])


@pytest.mark.parametrize(("total", "in_dim"), [(0, 8), (19, 8), (33, 20)])
def test_triton_matches_pytorch(total, in_dim, assert_matches):
    torch.manual_seed(1)
    heads, attn_dim, hidden = 2, 4, 5
    out_dim = heads * (2 * hidden + 2 * attn_dim)
    x = torch.randn(total, in_dim, requires_grad=True)
    w = (torch.randn(in_dim, out_dim) / in_dim**0.5).requires_grad_()
    b = torch.randn(out_dim, requires_grad=True)

    def run(kernel):
        parts = uvqk_projection(x, w, b, heads, attn_dim, hidden, kernel=kernel)
        return torch.cat([p.flatten(1) for p in parts], dim=1)

    assert_matches(lambda: run("TRITON"), lambda: run("PYTORCH"), (x, w, b))


def test_wrong_weight_shape_raises():
    with pytest.raises(ValueError, match="weight must be"):
        uvqk_projection(torch.randn(2, 3), torch.randn(3, 5), torch.randn(5), 1, 1, 1)
