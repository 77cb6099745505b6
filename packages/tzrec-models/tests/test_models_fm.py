"""FactorizationMachine: the FM second-order term against the explicit pairwise sum."""

import itertools

import torch

from tzrec.models.modules.fm import FactorizationMachine


def test_two_features_give_their_elementwise_product():
    v = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    torch.testing.assert_close(FactorizationMachine()(v), torch.tensor([[3.0, 8.0]]))


def test_equals_the_sum_over_pairs_i_lt_j():
    torch.manual_seed(0)
    v = torch.randn(5, 4, 3, dtype=torch.float64)
    expected = sum(v[:, i] * v[:, j] for i, j in itertools.combinations(range(4), 2))
    torch.testing.assert_close(FactorizationMachine()(v), expected)


def test_one_feature_has_no_interaction():
    v = torch.randn(3, 1, 4)
    assert torch.equal(FactorizationMachine()(v), torch.zeros(3, 4))
