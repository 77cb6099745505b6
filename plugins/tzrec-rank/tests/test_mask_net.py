"""MaskNet: the mask-block module over the DEEP group, a bias-free output layer, refusals."""

import pytest
import torch

from tzrec.core.errors import ConfigError
from tzrec.protos import model_pb2

CONFIG = "mask_net_criteo"


def test_logits_are_the_bias_free_projection_of_the_mask_blocks(model_and_batch):
    model, batch = model_and_batch(CONFIG)
    layer = model.mask_net_layer
    # 5 ids x 8 + 3 raw = 43 wide; 3 parallel blocks, aggregation int(43 * 3); top MLP [32, 16]
    assert layer.use_parallel and len(layer.mask_blocks) == 3
    assert layer.mask_blocks[0].mask_generator[0].out_features == 129
    assert layer.top_mlp.output_dim() == 16
    assert model.output_linear.bias is None and model.output_linear.in_features == 16
    model.eval()
    with torch.no_grad():
        out = model.predict(batch)
        logits = model.output_linear(layer(model.embedding_group(batch)["all_features"]))
    torch.testing.assert_close(out["logits"], logits.squeeze(-1))
    torch.testing.assert_close(out["probs"], torch.sigmoid(logits.squeeze(-1)))


def test_serial_blocks_without_top_mlp_project_the_last_block(model_and_batch):
    def edit(config):
        module = config.model_config.mask_net.mask_net_module
        module.use_parallel = False
        module.ClearField("top_mlp")

    model, _ = model_and_batch(CONFIG, edit)
    assert not model.mask_net_layer.use_parallel and model.mask_net_layer.top_mlp is None
    assert model.output_linear.in_features == 32  # the last block's hidden_dim


def test_a_second_group_or_a_non_deep_group_is_refused(model_and_batch):
    def two_groups(config):
        group = config.model_config.feature_groups.add()
        group.CopyFrom(config.model_config.feature_groups[0])
        group.group_name = "other"

    with pytest.raises(ConfigError, match=r"mask_net reads one DEEP feature group, got 2"):
        model_and_batch(CONFIG, two_groups)

    def wide(config):
        group = config.model_config.feature_groups[0]
        del group.feature_names[5:]  # WIDE groups hold ids only
        group.group_type = model_pb2.WIDE

    with pytest.raises(ConfigError, match="needs group 'all_features' to be DEEP, got WIDE"):
        model_and_batch(CONFIG, wide)
