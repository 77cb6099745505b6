"""TDM model: upstream's composition (multi-window DIN, other groups, MLP, logits)."""

import pytest
import torch

from tzrec.core import build
from tzrec.core.config import load_pipeline_config
from tzrec.core.errors import ConfigError


def _config(config_path, planted, **more):
    tree = planted["tree"]
    edits = {
        "train_input_path": planted["train"],
        "eval_input_path": planted["eval"],
        "data_config.tdm_sampler.item_input_path": f"{tree}/node_table.txt",
        "data_config.tdm_sampler.edge_input_path": f"{tree}/edge_table.txt",
        "data_config.tdm_sampler.predict_edge_input_path": f"{tree}/predict_edge_table.txt",
        **more,
    }
    return load_pipeline_config(str(config_path), edits=edits)


def test_forward_is_din_then_groups_then_mlp(config_path, planted):
    cfg = _config(config_path, planted)
    features = build.create_features(cfg)
    ds = build.build_dataset(cfg, features, cfg.train_input_path, "train")
    torch.manual_seed(0)
    model = build.build_model(cfg, ds.features)
    model.eval()
    batch = next(iter(ds.make_dataloader()))
    assert batch.batch_size == 64 * (1 + 5 + 21)  # row, 5 ancestors, sum(layer_num_sample)
    with torch.no_grad():
        out = model.predict(batch)
        g = model.embedding_group(batch)
        din = model.multiwindow_din.encode(
            g["seq.sequence"], g["seq.sequence_length"], g["seq.query"]
        )
        logits = model.output_mlp(model.deep_mlp(torch.cat([din, g["user"]], dim=-1)))
    assert din.shape == (batch.batch_size, 16 * 5)  # 4 windows + the query
    assert out["logits"].shape == (batch.batch_size, 2)
    assert torch.allclose(out["logits"], logits)
    assert torch.allclose(out["probs"], torch.softmax(logits, dim=-1))
    losses = model.loss(out, batch)
    assert set(losses) == {"softmax_cross_entropy"} and torch.isfinite(
        losses["softmax_cross_entropy"]
    )


def test_tdm_needs_one_sequence_group_with_a_query(config_path, planted):
    cfg = _config(config_path, planted)
    cfg.model_config.feature_groups[0].group_type = cfg.model_config.feature_groups[1].group_type
    with pytest.raises(ConfigError, match="exactly one SEQUENCE feature group"):
        build.build_model(cfg, build.create_features(cfg))
    cfg = _config(config_path, planted)
    del cfg.model_config.feature_groups[0].feature_names[2:]
    with pytest.raises(ConfigError, match="target node's"):
        build.build_model(cfg, build.create_features(cfg))
