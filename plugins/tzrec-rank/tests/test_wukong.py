"""WuKong: feature rows (dense row first), stacked layers, final MLP, and its refusals."""

import pytest
import torch

from tzrec.core.errors import ConfigError

CONFIG = "wukong_criteo"


def test_dense_row_then_sparse_rows_through_the_layers(model_and_batch):
    model, batch = model_and_batch(CONFIG)
    # 5 sparse rows of width 8 + the dense_mlp row -> 6; each layer maps to 4 + 4 rows
    assert [type(m.residual_projection).__name__ for m in model._wukong_layers] == [
        "LinearCompressBlock",
        "Identity",
    ]
    assert model.final_mlp.mlp[0].perceptron[0].in_features == 8 * 8
    model.eval()
    with torch.no_grad():
        grouped = model.embedding_group(batch)
        x = torch.cat(
            [model.dense_mlp(grouped["dense"]).unsqueeze(1), grouped["sparse"].reshape(-1, 5, 8)],
            dim=1,
        )
        for layer in model._wukong_layers:
            x = layer(x)
        logits = model.output_mlp(model.final_mlp(x.flatten(1))).squeeze(-1)
        out = model.predict(batch)
    torch.testing.assert_close(out["logits"], logits)


def test_one_group_needs_no_dense_mlp(model_and_batch):
    def edit(config):
        del config.model_config.feature_groups[0]
        config.model_config.wukong.ClearField("dense_mlp")

    model, batch = model_and_batch(CONFIG, edit)
    assert model.dense_mlp is None
    assert model._wukong_layers[0].lcb.weight.shape == (5, 4)
    assert model.predict(batch)["logits"].shape == (128,)


def _drop_dense_mlp(config):
    config.model_config.wukong.ClearField("dense_mlp")


def _dense_mlp_width(config):
    config.model_config.wukong.dense_mlp.hidden_units[-1] = 4


def _mixed_widths(config):
    config.model_config.feature_groups[1].feature_names.append("int_0")


def _extra_group(config):
    config.model_config.feature_groups[0].group_name = "numeric"


def _no_layers(config):
    config.model_config.wukong.ClearField("wukong_layers")


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop_dense_mlp, "wukong.dense_mlp: required with a 'dense' group"),
        (_dense_mlp_width, "last hidden unit 4 must equal the sparse feature width 8"),
        (_mixed_widths, r"group 'sparse' need one embedding_dim, got \[1, 8\]"),
        (_extra_group, "groups 'sparse' and 'dense'; got numeric, sparse"),
        (_no_layers, "wukong_layers: set at least one layer"),
    ],
    ids=["dense_group_without_mlp", "dense_width", "mixed_widths", "extra_group", "no_layers"],
)
def test_bad_groups_and_widths_are_refused_in_one_line(model_and_batch, edit, message):
    with pytest.raises(ConfigError, match=message):
        model_and_batch(CONFIG, edit)
