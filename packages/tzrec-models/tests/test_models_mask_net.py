"""MaskBlock / MaskNetModule against hand-computed values and an independent formula."""

import pytest
import torch
import torch.nn.functional as F

from tzrec.core.errors import ConfigError
from tzrec.models.modules.mask_net import MaskBlock, MaskNetModule, aggregation_dim
from tzrec.protos import module_pb2


def _block_cfg(**fields) -> module_pb2.MaskBlock:
    return module_pb2.MaskBlock(**fields)


def test_mask_block_hand_computed_value():
    block = MaskBlock(input_dim=2, mask_input_dim=2, hidden_dim=2, aggregation_dim=1)
    with torch.no_grad():
        block.mask_generator[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
        block.mask_generator[0].bias.zero_()
        block.mask_generator[2].weight.copy_(torch.tensor([[1.0], [2.0]]))
        block.mask_generator[2].bias.zero_()
        block.ffn[0].weight.copy_(torch.eye(2))
        block.ffn[0].bias.zero_()
    # mask(e=[1, 2]) = [1, 2] * relu(1 + 2) = [3, 6]; x * mask = [3, -6];
    # LayerNorm -> [(3 + 1.5) / 4.5, (-6 + 1.5) / 4.5] = [1, -1]; ReLU -> [1, 0]
    out = block(torch.tensor([[1.0, -1.0]]), torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0]]), atol=1e-5, rtol=0)
    assert block.output_dim() == 2


def test_aggregation_width_follows_reduction_ratio_else_aggregation_dim():
    assert aggregation_dim(8, _block_cfg(hidden_dim=4)) == 8  # default ratio 1
    assert aggregation_dim(8, _block_cfg(hidden_dim=4, reduction_ratio=0.5)) == 4
    assert aggregation_dim(8, _block_cfg(hidden_dim=4, aggregation_dim=3)) == 3
    # both set: reduction_ratio wins, as upstream
    assert aggregation_dim(8, _block_cfg(hidden_dim=4, reduction_ratio=2, aggregation_dim=3)) == 16
    # reduction_ratio 0 means "use aggregation_dim", as upstream's falsy check
    assert aggregation_dim(8, _block_cfg(hidden_dim=4, reduction_ratio=0, aggregation_dim=5)) == 5
    with pytest.raises(ConfigError, match="aggregation width"):
        aggregation_dim(8, _block_cfg(hidden_dim=4, reduction_ratio=0.1))


def _reference_block(block: MaskBlock, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    g1, g2 = block.mask_generator[0], block.mask_generator[2]
    mask = F.linear(F.relu(F.linear(e, g1.weight, g1.bias)), g2.weight, g2.bias)
    lin, ln = block.ffn[0], block.ffn[1]
    h = F.linear(x * mask, lin.weight, lin.bias)
    return F.relu(F.layer_norm(h, (h.shape[-1],), ln.weight, ln.bias))


def _reference(module: MaskNetModule, e: torch.Tensor, parallel: bool) -> torch.Tensor:
    normed = F.layer_norm(e, (e.shape[-1],), module.ln_emb.weight, module.ln_emb.bias)
    if parallel:
        return torch.cat([_reference_block(b, normed, e) for b in module.mask_blocks], dim=-1)
    h = normed
    for b in module.mask_blocks:
        h = _reference_block(b, h, e)  # every mask reads the raw embedding
    return h


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "serial"])
def test_module_equals_the_block_formula(parallel):
    torch.manual_seed(0)
    module = MaskNetModule(6, 3, _block_cfg(hidden_dim=4, reduction_ratio=0.5), None, parallel)
    e = torch.randn(5, 6) * 3 + 1
    out = module(e)
    assert out.shape == (5, 12 if parallel else 4)
    assert module.output_dim() == out.shape[1]
    torch.testing.assert_close(out, _reference(module, e, parallel))


def test_serial_blocks_after_the_first_read_the_hidden_width():
    module = MaskNetModule(6, 3, _block_cfg(hidden_dim=4, reduction_ratio=0.5), None, False)
    widths = [
        (
            b.mask_generator[0].in_features,
            b.mask_generator[0].out_features,
            b.mask_generator[2].out_features,
        )
        for b in module.mask_blocks
    ]
    # mask input: the feature width 6; aggregation: int(input * 0.5); mask output: input width
    assert widths == [(6, 3, 6), (6, 2, 4), (6, 2, 4)]


def test_top_mlp_is_applied_and_from_config_reads_every_field():
    torch.manual_seed(0)
    cfg = module_pb2.MaskNetModule(
        n_mask_blocks=2,
        mask_block=_block_cfg(hidden_dim=4),
        top_mlp=module_pb2.MLP(hidden_units=[5, 3]),
        use_parallel=False,
    )
    module = MaskNetModule.from_config(6, cfg)
    e = torch.randn(4, 6)
    assert not module.use_parallel and len(module.mask_blocks) == 2
    assert module.output_dim() == 3
    torch.testing.assert_close(module(e), module.top_mlp(_reference(module, e, False)))


def test_zero_blocks_is_refused():
    with pytest.raises(ConfigError, match="n_mask_blocks must be > 0"):
        MaskNetModule(6, 0, _block_cfg(hidden_dim=4))
