"""CapsuleLayer (MIND's B2I dynamic routing) against hand values and a loop reference."""

import math

import numpy as np
import pytest
import torch

from tzrec.core.errors import ConfigError
from tzrec.models.modules.capsule import CapsuleLayer, capsule_mask, squash
from tzrec.protos import module_pb2


def config(**kw) -> module_pb2.B2ICapsule:
    cfg = module_pb2.B2ICapsule(max_seq_len=kw.pop("max_seq_len", 6), high_dim=kw.pop("hd", 3))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def reference(x, lengths, w, b0, k_max, iters, scale, power, const=False):
    """Routing written with explicit loops over rows, positions and interests (float64)."""
    x, w, b0 = (np.asarray(a, dtype=np.float64) for a in (x, w, b0))
    batch, m, _ = b0.shape
    out = np.zeros((batch, k_max, w.shape[1]))
    for r in range(batch):
        n = int(lengths[r])
        k_r = (
            k_max
            if const
            else sum(
                1 for k in range(k_max) if k < max(1, min(k_max, math.log2(n) if n else -math.inf))
            )
        )
        seq = np.zeros((m, x.shape[2]))
        take = min(n, m, x.shape[1])
        seq[:take] = x[r, :take]
        low = [seq[s] @ w for s in range(m)]
        b = b0[r].copy()
        for it in range(iters):
            wts = np.zeros((m, k_max))
            for s in range(m):
                if s >= n:
                    continue
                e = [math.exp(scale * b[s, k]) if k < k_r else 0.0 for k in range(k_max)]
                for k in range(k_max):
                    wts[s, k] = e[k] / sum(e)
            z = [sum(wts[s, k] * low[s] for s in range(m)) for k in range(k_max)]
            if it + 1 < iters:
                for s in range(m):
                    unit = low[s] / max(np.linalg.norm(low[s]), 1e-12)
                    for k in range(k_max):
                        b[s, k] = wts[s, k] + float(z[k] @ unit)
        for k in range(k_r):
            norm = max(np.linalg.norm(z[k]), 1e-7)
            out[r, k] = (norm**2 / (1 + norm**2)) ** power / norm * z[k]
    return out


def test_squash_matches_the_formula_by_hand():
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    # |z| = 5: (25 / 26)^p / 5 * z
    assert torch.allclose(squash(z, 1.0)[0], torch.tensor([3.0, 4.0]) * (25 / 26) / 5)
    assert torch.allclose(squash(z, 0.2)[0], torch.tensor([3.0, 4.0]) * (25 / 26) ** 0.2 / 5)
    assert torch.equal(squash(z, 1.0)[1], torch.zeros(2))  # no NaN for a zero capsule


def test_interest_count_follows_log2_of_the_length_or_is_constant():
    lengths = torch.tensor([0, 1, 2, 3, 4, 5, 8, 9, 100])
    counts = capsule_mask(lengths, 3, False).sum(1).tolist()
    assert counts == [1, 1, 1, 2, 2, 3, 3, 3, 3]
    assert capsule_mask(lengths, 3, True).sum(1).tolist() == [3] * 9


@pytest.mark.parametrize("iters", [1, 3])
@pytest.mark.parametrize("const", [False, True])
def test_routing_equals_a_loop_implementation(iters, const):
    torch.manual_seed(0)
    layer = CapsuleLayer(
        config(
            max_k=3, num_iters=iters, squash_pow=0.5, routing_logits_scale=2.0, const_caps_num=const
        ),
        4,
    ).eval()
    x = torch.randn(4, 5, 4)
    lengths = torch.tensor([5, 2, 0, 4])
    x = x * (torch.arange(5)[None, :, None] < lengths[:, None, None])  # zero-padded, as fed
    got, mask = layer(x, lengths)
    b0 = layer.eval_routing_logits.expand(4, 6, 3).numpy()
    want = reference(x, lengths, layer.bilinear_matrix.detach(), b0, 3, iters, 2.0, 0.5, const)
    assert got.shape == (4, 3, 3)
    np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)
    assert mask.sum(1).tolist() == ([3] * 4 if const else [3, 1, 1, 2])


def test_longer_sequences_are_cut_to_max_seq_len():
    torch.manual_seed(1)
    layer = CapsuleLayer(config(max_k=2, max_seq_len=3), 2).eval()
    x = torch.randn(2, 7, 2)
    lengths = torch.tensor([7, 7])
    got, _ = layer(x, lengths)
    b0 = layer.eval_routing_logits.expand(2, 3, 2).numpy()
    want = reference(x, lengths, layer.bilinear_matrix.detach(), b0, 2, 3, 20.0, 1.0)
    np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)


def test_padded_items_do_not_change_the_interests():
    torch.manual_seed(2)
    layer = CapsuleLayer(config(max_k=3), 4).eval()
    x = torch.randn(3, 4, 4)
    lengths = torch.tensor([2, 4, 1])
    noisy = x.clone()
    clean = x.clone()
    for r, n in enumerate(lengths.tolist()):
        noisy[r, n:] = 100.0
        clean[r, n:] = 0.0
    a, _ = layer(noisy, lengths)
    b, _ = layer(clean, lengths)
    c, _ = layer(clean[:, :2], lengths.clamp(max=2))  # shorter padding, same first row
    assert torch.allclose(a, b)
    assert torch.allclose(a[0], c[0])
    # invalid interests are exactly zero
    assert torch.count_nonzero(a[2, 1:]) == 0


def test_training_draws_fresh_logits_and_evaluation_is_deterministic():
    torch.manual_seed(3)
    layer = CapsuleLayer(config(max_k=3), 4)
    x, lengths = torch.randn(2, 6, 4), torch.tensor([6, 6])
    assert not torch.allclose(layer(x, lengths)[0], layer(x, lengths)[0])
    layer.eval()
    assert torch.equal(layer(x, lengths)[0], layer(x, lengths)[0])
    zeros = CapsuleLayer(config(max_k=3, routing_init_method="zeros"), 4)
    assert torch.equal(zeros(x, lengths)[0], zeros(x, lengths)[0])


def test_gradients_reach_the_bilinear_matrix_only_through_the_last_iteration():
    torch.manual_seed(4)
    layer = CapsuleLayer(config(max_k=2, num_iters=3), 3).eval()
    x, lengths = torch.randn(2, 6, 3), torch.tensor([6, 3])
    layer(x, lengths)[0].sum().backward()
    grad = layer.bilinear_matrix.grad.clone()
    # the same gradient with the routing weights frozen at their final values
    with torch.no_grad():
        seq = layer.fit_length(x) * (torch.arange(6)[None, :, None] < lengths[:, None, None])
    w = layer.bilinear_matrix.detach().clone().requires_grad_(True)
    low = seq @ w
    weights = torch.zeros(2, 6, 2)
    with torch.no_grad():  # final routing weights from the loop reference's recurrence
        b = layer.eval_routing_logits.expand(2, 6, 2).clone()
        caps = capsule_mask(lengths, 2, False)
        for it in range(3):
            b = torch.where(caps[:, None, :], b, torch.tensor(float("-inf")))
            weights = torch.softmax(b * 20.0, 2) * (
                torch.arange(6)[None, :, None] < lengths[:, None, None]
            )
            if it < 2:
                z = torch.einsum("bsk,bsh->bkh", weights, low)
                b = weights + torch.einsum(
                    "bkh,bsh->bsk", z, torch.nn.functional.normalize(low, dim=-1)
                )
    out = squash(torch.einsum("bsk,bsh->bkh", weights, low), 1.0) * caps[..., None]
    out.sum().backward()
    assert torch.allclose(grad, w.grad, atol=1e-5)


def test_bad_config_is_one_line():
    with pytest.raises(
        ConfigError, match="capsule_config.routing_init_method: expected one of normal, zeros"
    ):
        CapsuleLayer(config(routing_init_method="uniform"), 4)
    with pytest.raises(ConfigError, match="capsule_config.num_iters: must be > 0"):
        CapsuleLayer(config(num_iters=0), 4)


def test_the_layer_traces_and_exports_with_a_dynamic_sequence_length():
    torch.manual_seed(5)
    layer = CapsuleLayer(config(max_k=3), 4).eval()

    class Interests(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x, n):
            return self.layer(x, n)[0]

    module = Interests()
    x, n = torch.randn(5, 4, 4), torch.tensor([4, 3, 1, 0, 2])
    dims = ({0: torch.export.Dim("B"), 1: torch.export.Dim("L")}, {0: torch.export.Dim("B")})
    exported = torch.export.export(module, (x, n), dynamic_shapes=dims, strict=False)
    with torch.no_grad():
        traced = torch.jit.trace(module, (x, n))
    for rows, length in [(3, 9), (2, 6), (4, 2)]:  # longer than, equal to, shorter than M
        x2, n2 = torch.randn(rows, length, 4), torch.randint(0, length + 1, (rows,))
        want = module(x2, n2)
        assert torch.allclose(exported.module()(x2, n2), want, atol=1e-6)
        assert torch.allclose(traced(x2, n2), want, atol=1e-6)
