"""hstu_mha: the mask rule, the fast PyTorch path and the Triton kernels."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tzrec.kernels import hstu_attention_mask, hstu_mha, padded_hstu_mha


def make_offsets(lengths):
    """int64 offsets (B + 1,) from row lengths."""
    return torch.tensor([0, *lengths], dtype=torch.int64).cumsum(0)


def _inputs(lengths, heads=2, attn_dim=8, hidden_dim=12, dtype=torch.float32):
    """Random jagged q, k, v (requiring grad) and their offsets."""
    offsets = make_offsets(lengths)
    total = int(offsets[-1])
    q, k = (torch.randn(total, heads, attn_dim, dtype=dtype, requires_grad=True) for _ in range(2))
    v = torch.randn(total, heads, hidden_dim, dtype=dtype, requires_grad=True)
    return q, k, v, offsets


def test_mask_with_targets_and_contextual_matches_hand_written():
    # n=6: position 0 contextual, 1..3 history, 4..5 targets
    expected = torch.tensor(
        [
            [1, 1, 1, 1, 0, 0],  # contextual query sees all non-targets
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0],  # targets: history + itself
            [1, 1, 1, 1, 0, 1],
        ],
        dtype=torch.bool,
    )
    got = hstu_attention_mask(6, num_targets=2, contextual_seq_len=1)
    assert torch.equal(got, expected)


def test_mask_window_hides_contextual_keys_outside_it():
    # upstream rule: contextual keys count as id 0, so the window hides them too
    expected = torch.tensor(
        [
            [1, 1, 1, 1, 1],  # contextual query sees all non-targets
            [1, 1, 0, 0, 0],
            [0, 1, 1, 0, 0],  # window 1: contextual key 0 is 2 ids away
            [0, 0, 1, 1, 0],
            [0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    got = hstu_attention_mask(5, contextual_seq_len=1, max_attn_len=1)
    assert torch.equal(got, expected)


def test_mask_two_contextual_tokens_share_one_id_under_a_window():
    # c=2: positions 0,1 have id 0, position 2 id 1, ... ; window 2
    expected = torch.tensor(
        [
            [1, 1, 1, 1, 1, 1],  # contextual queries see every non-target key
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 0, 0, 0],  # id 1: both contextual keys (id 0) are 1 away
            [1, 1, 1, 1, 0, 0],  # id 2: contextual keys 2 away, still inside
            [0, 0, 1, 1, 1, 0],  # id 3: contextual keys 3 away, hidden
            [0, 0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    got = hstu_attention_mask(6, contextual_seq_len=2, max_attn_len=2)
    assert torch.equal(got, expected)


def test_mask_non_causal_history_sees_targets():
    # n=5, 2 targets: history queries see every other key, targets included;
    # targets see the history and themselves, not each other
    expected = torch.tensor(
        [
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 0, 1],
        ],
        dtype=torch.bool,
    )
    got = hstu_attention_mask(5, num_targets=2, causal=False)
    assert torch.equal(got, expected)


def test_mask_non_causal_window_counts_targets_at_the_history_end():
    # n=5, 2 targets (id 3), window 1
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 1, 1, 1, 1],  # id 2 sees ids 1 and 3 (both targets)
            [0, 0, 1, 1, 0],
            [0, 0, 1, 0, 1],
        ],
        dtype=torch.bool,
    )
    got = hstu_attention_mask(5, num_targets=2, max_attn_len=1, causal=False)
    assert torch.equal(got, expected)


def test_plain_causal_mask_is_lower_triangular():
    assert torch.equal(hstu_attention_mask(7), torch.ones(7, 7).tril().bool())


def test_single_row_matches_formula():
    torch.manual_seed(0)
    q, k, v, offsets = _inputs([5], heads=1, dtype=torch.float64)
    out = hstu_mha(8, 0.5, q, k, v, offsets)
    attn = torch.nn.functional.silu(0.5 * q[:, 0] @ k[:, 0].T) / 8
    expected = (attn * hstu_attention_mask(5)) @ v[:, 0]
    torch.testing.assert_close(out[:, 0], expected)


VARIANTS = {
    "causal": {},
    "targets": {"num_targets": torch.tensor([2, 0, 3, 1])},
    "contextual": {"contextual_seq_len": 2},
    "window": {"max_attn_len": 3},
    "everything": {
        "num_targets": torch.tensor([1, 0, 2, 3]),
        "contextual_seq_len": 1,
        "max_attn_len": 4,
    },
    "non_causal": {"causal": False, "num_targets": torch.tensor([2, 0, 1, 1])},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pytorch_matches_padded_reference(variant, assert_matches):
    torch.manual_seed(1)
    lengths = [300, 0, 9, 140]  # 300 spans several 128-row blocks
    q, k, v, offsets = _inputs(lengths, dtype=torch.float64)
    kw = VARIANTS[variant]
    assert_matches(
        lambda: hstu_mha(300, 0.3, q, k, v, offsets, **kw),
        lambda: padded_hstu_mha(300, 0.3, q, k, v, offsets, **kw),
        (q, k, v),
        atol=1e-10,
        rtol=1e-8,
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_triton_matches_pytorch(variant, assert_matches):
    torch.manual_seed(2)
    q, k, v, offsets = _inputs([20, 0, 7, 33])
    kw = VARIANTS[variant]
    assert_matches(
        lambda: hstu_mha(33, 0.3, q, k, v, offsets, kernel="TRITON", **kw),
        lambda: hstu_mha(33, 0.3, q, k, v, offsets, kernel="PYTORCH", **kw),
        (q, k, v),
    )


@settings(max_examples=6, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 24), min_size=1, max_size=3),
    heads=st.integers(1, 4),
    full_row=st.booleans(),
    with_targets=st.booleans(),
)
def test_triton_matches_pytorch_on_random_lengths(lengths, heads, full_row, with_targets):
    max_len = 24
    if full_row:
        lengths[0] = max_len
    q, k, v, offsets = _inputs(lengths, heads=heads, attn_dim=4, hidden_dim=4)
    targets = torch.tensor([n // 3 for n in lengths]) if with_targets else None
    outs, grads = [], []
    for kernel in ("TRITON", "PYTORCH"):
        out = hstu_mha(max_len, 0.7, q, k, v, offsets, num_targets=targets, kernel=kernel)
        outs.append(out)
        grads.append(torch.autograd.grad(out.sum(), (q, k, v)))
    assert outs[0].shape == (sum(lengths), heads, 4)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    for ga, gb in zip(*grads, strict=True):
        torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 200), min_size=1, max_size=4),
    heads=st.integers(1, 4),
    contextual=st.integers(0, 2),
    window=st.integers(0, 5),
)
def test_pytorch_matches_padded_on_random_lengths(lengths, heads, contextual, window):
    q, k, v, offsets = _inputs(lengths, heads=heads, attn_dim=4, hidden_dim=3)
    targets = torch.tensor([n % 4 for n in lengths])
    kw = dict(num_targets=targets, contextual_seq_len=contextual, max_attn_len=window)
    out = hstu_mha(200, 0.5, q, k, v, offsets, **kw)
    ref = padded_hstu_mha(200, 0.5, q, k, v, offsets, **kw)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    g = torch.autograd.grad(out.sum(), (q, k, v))
    g_ref = torch.autograd.grad(ref.sum(), (q, k, v))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kernel", ["PYTORCH", "TRITON"])
def test_empty_batch_and_empty_rows_give_empty_or_zero_output(kernel):
    q, k, v, offsets = _inputs([0, 0])
    out = hstu_mha(4, 1.0, q, k, v, offsets, kernel=kernel)
    assert out.shape == (0, 2, 12)


@pytest.mark.parametrize("kernel", ["PYTORCH", "TRITON"])
def test_dropout_only_in_training(kernel):
    torch.manual_seed(3)
    q, k, v, offsets = _inputs([16, 5])
    plain = hstu_mha(16, 1.0, q, k, v, offsets, kernel=kernel)
    evaluated = hstu_mha(16, 1.0, q, k, v, offsets, dropout_pr=0.5, training=False, kernel=kernel)
    torch.testing.assert_close(evaluated, plain)
    dropped = hstu_mha(16, 1.0, q, k, v, offsets, dropout_pr=0.5, kernel=kernel)
    assert not torch.allclose(dropped, plain)


def test_pytorch_dropout_gradient_is_consistent():
    torch.manual_seed(4)
    q, k, v, offsets = _inputs([6, 3], heads=1, attn_dim=3, hidden_dim=2, dtype=torch.float64)

    def fn(q, k, v):
        torch.manual_seed(7)  # same dropout mask on every evaluation
        return hstu_mha(6, 1.0, q, k, v, offsets, dropout_pr=0.3)

    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_triton_dropout_gradient_is_consistent():
    torch.manual_seed(5)
    q, k, v, offsets = _inputs([5, 2], heads=1, attn_dim=2, hidden_dim=2, dtype=torch.float64)

    def fn(q, k, v):
        torch.manual_seed(7)  # the kernel seed is drawn from torch's generator
        return hstu_mha(5, 1.0, q, k, v, offsets, dropout_pr=0.3, kernel="TRITON")

    assert torch.autograd.gradcheck(fn, (q, k, v), atol=1e-6)


def test_bad_shapes_raise():
    q, k, v, offsets = _inputs([3])
    with pytest.raises(ValueError, match="attn_dim"):
        hstu_mha(3, 1.0, q, k[:, :, :2], v, offsets)
    with pytest.raises(ValueError, match="dropout_pr"):
        hstu_mha(3, 1.0, q, k, v, offsets, dropout_pr=1.0)


def test_saved_state_grows_with_row_lengths_not_max_len():
    from tzrec.kernels.attention import _JaggedHSTUAttention

    q, k, v, offsets = _inputs([3, 1], heads=1)
    out = hstu_mha(1024, 1.0, q, k, v, offsets)
    fn = out.grad_fn
    assert type(fn).__name__ == _JaggedHSTUAttention.__name__ + "Backward"
    saved = sum(s.numel() for *_, s, _ in fn.saved_blocks)
    assert saved == 3 * 3 + 1 * 1


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_targets", [False, True])
@pytest.mark.parametrize(("max_attn_len", "contextual"), [(0, 0), (3, 2)])
def test_scripted_row_loop_matches_the_jagged_path(causal, with_targets, max_attn_len, contextual):
    """What TorchScript export records for hstu_mha equals the training path's forward."""
    from tzrec.kernels.attention import scripted_jagged_hstu_mha

    torch.manual_seed(0)
    lengths = torch.tensor([5, 0, 9, 1, 12])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    q, k, v = (torch.randn(int(lengths.sum()), 2, 8) for _ in range(3))
    targets = torch.tensor([2, 0, 3, 1, 4]) if with_targets else None
    kwargs = dict(causal=causal, num_targets=targets, max_attn_len=max_attn_len)
    ref = hstu_mha(
        20, 0.3, q, k, v, offsets, training=False, contextual_seq_len=contextual, **kwargs
    )
    got = scripted_jagged_hstu_mha(
        20, 0.3, q, k, v, offsets, causal, targets, max_attn_len, contextual
    )
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("lengths", [[7, 7, 6, 7], [1, 0, 12, 2], [0, 0]])
@pytest.mark.parametrize("with_targets", [False, True])
def test_export_op_matches_the_jagged_path_padded_or_not(lengths, with_targets):
    """tzrec::hstu_mha_fwd pads even batches and loops over uneven ones: same result."""
    from tzrec.kernels.export_ops import hstu_mha_fwd

    torch.manual_seed(1)
    lengths = torch.tensor(lengths)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    q, k, v = (torch.randn(int(lengths.sum()), 2, 4) for _ in range(3))
    targets = (lengths // 3) if with_targets else None
    ref = hstu_mha(
        16, 0.5, q, k, v, offsets, training=False, num_targets=targets, contextual_seq_len=1
    )
    got = hstu_mha_fwd(16, 0.5, q, k, v, offsets, True, targets, 0, 1)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("lengths", [[7, 7, 6, 7], [1, 0, 12, 2], [0, 0], [5]])
@pytest.mark.parametrize("causal", [True, False])
def test_scripted_attention_pads_even_batches_and_loops_over_uneven_ones(lengths, causal):
    from tzrec.kernels.attention import scripted_jagged_hstu_mha

    torch.manual_seed(2)
    lengths = torch.tensor(lengths)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    q, k, v = (torch.randn(int(lengths.sum()), 2, 4) for _ in range(3))
    targets = lengths // 3
    ref = hstu_mha(
        16,
        0.5,
        q,
        k,
        v,
        offsets,
        causal=causal,
        training=False,
        num_targets=targets,
        max_attn_len=4,
        contextual_seq_len=1,
    )
    got = scripted_jagged_hstu_mha(16, 0.5, q, k, v, offsets, causal, targets, 4, 1)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
