"""Timestamp/position embeddings: bucket rule and Triton parity."""

import math

import pytest
import torch

from tzrec.kernels import (
    add_timestamp_positional_embeddings,
    timestamp_position_buckets,
)


def make_offsets(lengths):
    """int64 offsets (B + 1,) from row lengths."""
    return torch.tensor([0, *lengths], dtype=torch.int64).cumsum(0)


def test_buckets_count_back_from_the_newest_item():
    offsets = make_offsets([4, 0, 2])
    ts = torch.tensor([0, 100, 9990, 10000, 50, 60])
    pos, time = timestamp_position_buckets(offsets, ts, 3, 50)
    assert pos.tolist() == [2, 2, 1, 0, 1, 0]  # 3, clamped to 2, then 2, 1, 0
    # dt = 10000, 9900, 10, 0 -> clamped to 1 ; 10 ; 0 -> 1
    assert time.tolist() == [49, 49, 3, 1, 3, 1]  # sqrt(10000) = 100 -> 49


def test_log_buckets_and_explicit_query_time():
    offsets = make_offsets([2])
    ts = torch.tensor([0, 1000])
    _, time = timestamp_position_buckets(
        offsets, ts, 4, 100, query_time=torch.tensor([2000]), time_bucket_fn="log"
    )
    assert time.tolist() == [math.floor(math.log(2000)), math.floor(math.log(1000))]


def test_output_is_scaled_input_plus_both_embeddings():
    offsets = make_offsets([2])
    x = torch.ones(2, 3)
    pos_emb = torch.arange(6.0).view(2, 3)
    ts_emb = torch.arange(12.0).view(4, 3) * 100
    out = add_timestamp_positional_embeddings(
        x, offsets, torch.tensor([0, 4]), pos_emb, ts_emb, alpha=2.0
    )
    # item 0: pos 1, dt 4 -> sqrt 2 -> bucket 2 ; item 1: pos 0, dt 1 -> bucket 1
    expected = torch.stack([2 + pos_emb[1] + ts_emb[2], 2 + pos_emb[0] + ts_emb[1]])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("lengths", [[0], [5, 0, 9], [40]])
def test_triton_matches_pytorch(lengths, assert_matches):
    torch.manual_seed(0)
    offsets = make_offsets(lengths)
    total = sum(lengths)
    x = torch.randn(total, 20, requires_grad=True)
    ts = torch.randint(0, 100_000, (total,)).sort().values
    pos_emb = torch.randn(8, 20, requires_grad=True)
    ts_emb = torch.randn(16, 20, requires_grad=True)
    assert_matches(
        lambda: add_timestamp_positional_embeddings(
            x, offsets, ts, pos_emb, ts_emb, 0.5, time_bucket_fn="log", kernel="TRITON"
        ),
        lambda: add_timestamp_positional_embeddings(
            x, offsets, ts, pos_emb, ts_emb, 0.5, time_bucket_fn="log"
        ),
        (x, pos_emb, ts_emb),
    )
