"""Semi-local attention: the mask rule, the blocked PyTorch path, Triton and serving paths."""

import pytest
import torch

from tzrec.kernels.sla import (
    _BLOCK,
    padded_sla_mha,
    rowwise_sla_mha,
    sla_attention_mask,
    sla_blocks,
    sla_hstu_mha,
    sla_hstu_mha_fwd,
)


def make_offsets(lengths):
    """int64 offsets (B + 1,) from row lengths."""
    return torch.tensor([0, *lengths], dtype=torch.int64).cumsum(0)


def _inputs(lengths, heads=2, attn_dim=8, hidden_dim=6, dtype=torch.float32):
    """Random jagged q, k, v (requiring grad) and their offsets."""
    offsets = make_offsets(lengths)
    total = int(offsets[-1])
    q, k = (torch.randn(total, heads, attn_dim, dtype=dtype, requires_grad=True) for _ in range(2))
    v = torch.randn(total, heads, hidden_dim, dtype=dtype, requires_grad=True)
    return q, k, v, offsets


def _interval_mask(n, t, k1, k2, c):
    """Upstream's NFUNC=3 intervals: [0, col_max0) ∪ [col_min0, col_max1) per query."""
    k2e = max(k2, c)
    h = max(n - t, 0)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        if i < h:
            col_max0, col_min0, col_max1 = min(k2e, i + 1), max(k2e, i - k1 + 1), i + 1
        else:
            col_max0 = col_min0 = col_max1 = h
        mask[i, :col_max0] = True
        mask[i, col_min0:col_max1] = True
    return mask


def test_mask_hand_written():
    # n=7: 5 history (window 2, prefix 1) then 2 targets seeing the whole history only
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],
            [1, 0, 1, 1, 0, 0, 0],
            [1, 0, 0, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(sla_attention_mask(7, num_targets=2, sla_k1=2, sla_k2=1), expected)


@pytest.mark.parametrize(
    "n,t,k1,k2,c",
    [
        (9, 0, 3, 2, 0),
        (12, 3, 4, 0, 2),
        (10, 2, 0, 3, 1),
        (6, 6, 2, 2, 0),
        (8, 9, 1, 1, 0),
        (13, 1, 5, 1, 3),
    ],
)
def test_mask_matches_upstream_intervals(n, t, k1, k2, c):
    assert torch.equal(sla_attention_mask(n, t, k1, k2, c), _interval_mask(n, t, k1, k2, c))


def test_contextual_prefix_widens_the_global_prefix():
    # k2e = max(sla_k2, contextual_seq_len): c = 3 keeps keys 0..2 visible to every query
    mask = sla_attention_mask(10, sla_k1=1, sla_k2=1, contextual_seq_len=3)
    assert mask[9, :3].all() and not mask[9, 3:9].any() and mask[9, 9]


VARIANTS = {
    "window": dict(sla_k1=5, sla_k2=0),
    "prefix_only": dict(sla_k1=0, sla_k2=4),
    "both_targets": dict(sla_k1=70, sla_k2=3, num_targets=torch.tensor([4, 0, 2, 9])),
    "contextual": dict(sla_k1=130, sla_k2=1, contextual_seq_len=6,
                       num_targets=torch.tensor([1, 0, 9, 3])),
}  # fmt: skip


def _check_close(out_a, out_b, inputs, atol, rtol):
    torch.testing.assert_close(out_a, out_b, atol=atol, rtol=rtol)
    g = torch.randn_like(out_a)
    for ga, gb in zip(
        torch.autograd.grad(out_a, inputs, g), torch.autograd.grad(out_b, inputs, g), strict=True
    ):
        torch.testing.assert_close(ga, gb, atol=atol, rtol=rtol)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pytorch_matches_dense_masked_reference(variant):
    torch.manual_seed(1)
    q, k, v, offsets = _inputs([300, 0, 9, 140], dtype=torch.float64)  # 300: 3 blocks
    kw = VARIANTS[variant]
    _check_close(
        sla_hstu_mha(512, 0.3, q, k, v, offsets, **kw),
        padded_sla_mha(512, 0.3, q, k, v, offsets, **kw),
        (q, k, v),
        atol=1e-10,
        rtol=1e-8,
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_triton_matches_dense_masked_reference(variant):
    torch.manual_seed(2)
    q, k, v, offsets = _inputs([37, 0, 9, 20])  # 37: 3 blocks of 16
    kw = dict(VARIANTS[variant])
    kw["sla_k1"] = min(kw["sla_k1"], 9)
    _check_close(
        sla_hstu_mha(40, 0.3, q, k, v, offsets, kernel="TRITON", **kw),
        padded_sla_mha(40, 0.3, q, k, v, offsets, **kw),
        (q, k, v),
        atol=1e-5,
        rtol=1e-4,
    )


def test_serving_paths_match_the_training_forward():
    torch.manual_seed(3)
    q, k, v, offsets = _inputs([200, 5, 0, 31])
    kw = dict(sla_k1=16, sla_k2=2, num_targets=torch.tensor([3, 1, 0, 2]), contextual_seq_len=1)
    want = sla_hstu_mha(256, 0.5, q, k, v, offsets, **kw)
    args = (256, 0.5, q.detach(), k.detach(), v.detach(), offsets, 16, 2, kw["num_targets"], 1)
    scripted = torch.jit.script(rowwise_sla_mha)
    torch.testing.assert_close(scripted(*args), want.detach())
    torch.testing.assert_close(sla_hstu_mha_fwd(*args), want.detach())


def test_blocked_work_is_linear_in_length():
    # score entries computed: at most n·(K1 + K2 + BLOCK) for history, t·n for targets
    k1, k2 = 256, 64
    works = []
    for n, t in ((1024, 0), (4096, 0), (16384, 0), (16384, 32)):
        work = sum((b - a) * (p + l1 - l0) for _, _, _, a, b, p, l0, l1 in
                   sla_blocks([0, n], [t], k1, k2, 0, _BLOCK))  # fmt: skip
        assert work <= n * (k1 + k2 + _BLOCK) + t * n
        works.append(work)
    assert works[2] / works[1] < 4.2  # 4x the length, ~4x the work (causal: 16x)
    assert works[2] < 16384**2 / 2 / 15


def test_bad_arguments_are_refused():
    q, k, v, offsets = _inputs([4])
    with pytest.raises(ValueError, match="not both 0"):
        sla_hstu_mha(4, 1.0, q, k, v, offsets, 0, 0)
    with pytest.raises(ValueError, match="divisor"):
        sla_hstu_mha(0, 1.0, q, k, v, offsets, 2, 0)
    with pytest.raises(ValueError, match="expects q, k"):
        sla_hstu_mha(4, 1.0, q, k[:, :1], v, offsets, 2, 0)


def test_torch_export_records_the_sla_op_for_any_lengths():
    class Attention(torch.nn.Module):
        def forward(self, q, k, v, offsets, targets):
            return sla_hstu_mha(64, 0.5, q, k, v, offsets, 4, 2, targets, contextual_seq_len=1)

    def inputs(lengths, seed):
        torch.manual_seed(seed)
        q, k, v, offsets = (t.detach() if t.requires_grad else t for t in _inputs(lengths, 2, 4, 4))
        return q, k, v, offsets, torch.tensor([min(2, n) for n in lengths])

    total, batch = torch.export.Dim("total", min=2), torch.export.Dim("batch", min=1)
    shapes = ({0: total}, {0: total}, {0: total}, {0: batch + 1}, {0: batch})
    program = torch.export.export(
        Attention(), inputs([9, 5], 0), dynamic_shapes=shapes, strict=False
    )
    assert "tzrec.sla_hstu_mha_fwd" in str(program.graph)
    for lengths in ([9, 5], [20, 0, 3], [1, 1]):
        args = inputs(lengths, 1)
        torch.testing.assert_close(program.module()(*args), Attention()(*args))
