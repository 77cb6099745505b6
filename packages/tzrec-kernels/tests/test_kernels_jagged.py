"""Jagged padding, concat/split and last-item gather: values and Triton parity."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tzrec.kernels import (
    concat_2d_jagged,
    dense_to_jagged,
    jagged_last,
    jagged_to_padded_dense,
    split_2d_jagged,
)

KERNELS = ["PYTORCH", "TRITON"]


def make_offsets(lengths):
    """int64 offsets (B + 1,) from row lengths."""
    return torch.tensor([0, *lengths], dtype=torch.int64).cumsum(0)


def _values(total, dim=3):
    """Distinguishable jagged values 1..total in column 0."""
    v = torch.arange(1, total * dim + 1, dtype=torch.float32).view(total, dim)
    return v.requires_grad_()


@pytest.mark.parametrize("kernel", KERNELS)
def test_jagged_to_padded_dense_pads_and_truncates(kernel):
    values = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    offsets = make_offsets([1, 0, 3])
    dense = jagged_to_padded_dense(values, offsets, 2, padding_value=-1.0, kernel=kernel)
    expected = torch.tensor([[[1.0], [-1.0]], [[-1.0], [-1.0]], [[2.0], [3.0]]])
    assert torch.equal(dense, expected)


@pytest.mark.parametrize("kernel", KERNELS)
def test_dense_to_jagged_round_trip(kernel):
    values = _values(5)
    offsets = make_offsets([2, 0, 3])
    dense = jagged_to_padded_dense(values, offsets, 3, kernel=kernel)
    assert torch.equal(dense_to_jagged(dense, offsets, kernel=kernel), values)


@pytest.mark.parametrize("kernel", KERNELS)
def test_concat_puts_history_before_candidates_per_row(kernel):
    hist = torch.tensor([[1.0], [2.0], [3.0]])
    cand = torch.tensor([[10.0], [20.0], [30.0]])
    values, offsets = concat_2d_jagged(
        hist, make_offsets([2, 0, 1]), cand, make_offsets([1, 2, 0]), kernel=kernel
    )
    assert values.flatten().tolist() == [1.0, 2.0, 10.0, 20.0, 30.0, 3.0]
    assert offsets.tolist() == [0, 3, 5, 6]


@pytest.mark.parametrize("kernel", KERNELS)
def test_split_inverts_concat(kernel):
    a, b = _values(4), _values(3) * 10
    off_a, off_b = make_offsets([3, 0, 1]), make_offsets([0, 2, 1])
    both, _ = concat_2d_jagged(a, off_a, b, off_b)
    got_a, got_b = split_2d_jagged(both, off_a, off_b, kernel=kernel)
    assert torch.equal(got_a, a) and torch.equal(got_b, b)


@pytest.mark.parametrize("kernel", KERNELS)
def test_last_of_empty_row_is_default_not_previous_row(kernel):
    values = _values(3)
    default = torch.full((3,), -7.0, requires_grad=True)
    offsets = make_offsets([0, 2, 0, 1])  # first row empty: must not read index -1
    out = jagged_last(values, offsets, default, kernel=kernel)
    assert out[:, 0].tolist() == [-7.0, 4.0, -7.0, 7.0]
    out.sum().backward()
    assert default.grad.tolist() == [2.0, 2.0, 2.0]
    assert values.grad[:, 0].tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("kernel", KERNELS)
def test_last_without_default_gives_zeros(kernel):
    out = jagged_last(torch.zeros(0, 2), make_offsets([0, 0]), kernel=kernel)
    assert torch.equal(out, torch.zeros(2, 2))


def test_mismatched_batches_raise():
    with pytest.raises(ValueError, match="batch sizes differ"):
        concat_2d_jagged(_values(1), make_offsets([1]), _values(1), make_offsets([1, 0]))


@settings(max_examples=10, deadline=None)
@given(
    lengths_a=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    data=st.data(),
    dim=st.integers(1, 40),
)
def test_triton_matches_pytorch_on_random_jagged(lengths_a, data, dim):
    batch = len(lengths_a)
    lengths_b = data.draw(st.lists(st.integers(0, 6), min_size=batch, max_size=batch))
    off_a, off_b = make_offsets(lengths_a), make_offsets(lengths_b)
    a = torch.randn(sum(lengths_a), dim, requires_grad=True)
    b = torch.randn(sum(lengths_b), dim, requires_grad=True)
    default = torch.randn(dim, requires_grad=True)
    max_len = max(lengths_a) if data.draw(st.booleans()) else 3  # 3: truncation

    def run(kernel):
        cat, off = concat_2d_jagged(a, off_a, b, off_b, kernel=kernel)
        dense = jagged_to_padded_dense(cat, off, max_len + 6, kernel=kernel)
        back = dense_to_jagged(dense * 2, off, kernel=kernel)
        sa, sb = split_2d_jagged(back, off_a, off_b, kernel=kernel)
        pad_a = jagged_to_padded_dense(sa, off_a, max_len, kernel=kernel)
        last = jagged_last(sb, off_b, default, kernel=kernel)
        return [pad_a.sum((1, 2)), last.sum(1)]

    outs = {k: torch.cat(run(k)) for k in KERNELS}
    torch.testing.assert_close(outs["TRITON"], outs["PYTORCH"])
    g = torch.randn_like(outs["PYTORCH"])
    grads = {k: torch.autograd.grad(outs[k], (a, b, default), g) for k in KERNELS}
    for x, y in zip(grads["TRITON"], grads["PYTORCH"], strict=True):
        torch.testing.assert_close(x, y)


def test_jagged_positions_and_reverse_index():
    from tzrec.kernels import jagged_positions, jagged_reverse_index

    offsets = torch.tensor([0, 3, 3, 5, 6])
    rows, pos = jagged_positions(offsets, 6)
    assert rows.tolist() == [0, 0, 0, 2, 2, 3]
    assert pos.tolist() == [0, 1, 2, 0, 1, 0]
    assert jagged_reverse_index(offsets, 6).tolist() == [2, 1, 0, 4, 3, 5]
    empty = torch.tensor([0, 0])
    assert jagged_positions(empty, 0)[1].numel() == 0
    assert jagged_reverse_index(empty, 0).numel() == 0
    scripted = torch.jit.script(jagged_positions)  # the scripted serving path calls it
    assert scripted(offsets, 6)[1].tolist() == pos.tolist()
