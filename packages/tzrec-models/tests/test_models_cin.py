"""CIN: xDeepFM's compressed interaction layers against an explicit triple sum."""

import pytest
import torch

from tzrec.models.modules.cin import CIN


def reference(cin: CIN, x0: torch.Tensor) -> torch.Tensor:
    """X^k_h = sum_{i,j} W^k[h, i*m + j] * X^{k-1}_i * X^0_j + b^k_h, summed over D."""
    batch, m, dim = x0.shape
    x = x0
    out = []
    for layer in cin.cin_layers:
        w, b = layer.weight[:, :, 0], layer.bias
        nxt = torch.zeros(batch, w.shape[0], dim, dtype=x0.dtype)
        for h in range(w.shape[0]):
            for i in range(x.shape[1]):
                for j in range(m):
                    nxt[:, h] += w[h, i * m + j] * x[:, i] * x0[:, j]
            nxt[:, h] += b[h]
        x = nxt
        out.append(x.sum(dim=2))
    return torch.cat(out, dim=1)


def test_cin_matches_the_explicit_sum():
    torch.manual_seed(0)
    cin = CIN(3, [4, 2]).double()
    x0 = torch.randn(5, 3, 6, dtype=torch.float64)
    got = cin(x0)
    assert got.shape == (5, 6) and cin.output_dim() == 6
    torch.testing.assert_close(got, reference(cin, x0))


def test_cin_one_field_one_unit_by_hand():
    cin = CIN(1, [1])
    with torch.no_grad():
        cin.cin_layers[0].weight.fill_(2.0)
        cin.cin_layers[0].bias.fill_(0.5)
    # 2 * x*x + 0.5 per dim, summed over D: 2 * (1 + 4) + 2 * 0.5
    got = cin(torch.tensor([[[1.0, 2.0]]]))
    torch.testing.assert_close(got, torch.tensor([[11.0]]))


def test_cin_needs_a_layer():
    with pytest.raises(ValueError, match="cin_layer_size"):
        CIN(3, [])
