"""InteractionArch: DLRM's pairwise dot products, in upper-triangle order."""

import torch

from tzrec.models.modules.interaction import InteractionArch


def test_pairs_by_hand_in_row_major_order():
    x = torch.tensor([[[1.0, 0.0], [2.0, 3.0], [0.0, 1.0]]])
    arch = InteractionArch(3)
    # (0,1): 2, (0,2): 0, (1,2): 3
    torch.testing.assert_close(arch(x), torch.tensor([[2.0, 0.0, 3.0]]))
    assert arch.output_dim() == 3


def test_matches_explicit_dot_products():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 3)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    expected = torch.stack([(x[:, i] * x[:, j]).sum(-1) for i, j in pairs], dim=1)
    got = InteractionArch(5)(x)
    torch.testing.assert_close(got, expected)
    assert InteractionArch(5).output_dim() == len(pairs) == 10


def test_triangle_indices_are_not_saved_in_checkpoints():
    assert "triu_indices" not in InteractionArch(4).state_dict()
