"""The multi-task models' structure, formulas and refusals (built from the test configs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tzrec.core.build import build_model, create_features
from tzrec.core.config import load_pipeline_config
from tzrec.core.errors import ConfigError, DataError
from tzrec.data import Batch
from tzrec.multitask.dbmtl import Intervention

CONFIGS = Path(__file__).resolve().parent / "configs"


def _config(name: str):
    return load_pipeline_config(str(CONFIGS / f"{name}.config"))


def _build(config):
    return build_model(config, create_features(config))


def _grouped(model, rows: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    eg = model.embedding_group
    return {g: torch.randn(rows, eg.group_total_dim(g), generator=gen) for g in eg.group_names()}


def test_dbmtl_relation_tower_reads_its_mlp_and_the_related_tower_output():
    model = _build(_config("dbmtl_taobao")).eval()
    grouped = _grouped(model)
    pred = model.dense_forward(grouped)
    h = model.bottom_mlp(grouped["all"])
    z = {t: model.task_mlps[t](h) for t in ("ctr", "cvr")}
    # ctr has no relation_mlp: r_ctr = z_ctr; cvr: r_cvr = relation_mlp([z_cvr, r_ctr])
    r_cvr = model.relation_mlps["cvr"](torch.cat([z["cvr"], z["ctr"]], dim=1))
    torch.testing.assert_close(pred["logits_ctr"], model.task_outputs[0](z["ctr"]).squeeze(1))
    torch.testing.assert_close(pred["logits_cvr"], model.task_outputs[1](r_cvr).squeeze(1))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda m: m.dbmtl.task_towers[1].ClearField("relation_mlp"),
            "relation_tower_names: needs relation_mlp",
        ),
        (
            lambda m: m.dbmtl.task_towers[1].relation_tower_names.append("cvr"),
            "'cvr' is not an earlier task tower",
        ),
        (lambda m: m.dbmtl.gate_mlp.hidden_units.append(4), "gate_mlp: needs expert_mlp"),
        (
            lambda m: m.feature_groups.add(group_name="x", feature_names=["user_id"]),
            "reads one DEEP feature group, got all, x",
        ),
    ],
)
def test_dbmtl_refuses_relations_it_cannot_honour(edit, message):
    config = _config("dbmtl_taobao")
    edit(config.model_config)
    with pytest.raises(ConfigError, match=message):
        _build(config)


def test_dbmtl_mask_net_bottom_feeds_the_bottom_mlp():
    config = _config("dbmtl_taobao")
    mask = config.model_config.dbmtl.mask_net
    mask.n_mask_blocks = 2
    mask.mask_block.hidden_dim = 6
    model = _build(config).eval()
    assert model.bottom_mlp.mlp[0].perceptron[0].in_features == 12  # 2 parallel blocks of 6
    grouped = _grouped(model)
    h = model.bottom_mlp(model.mask_net(grouped["all"]))
    torch.testing.assert_close(
        model.dense_forward(grouped)["logits_ctr"],
        model.task_outputs[0](model.task_mlps["ctr"](h)).squeeze(1),
    )


def test_intervention_moves_the_base_by_the_source_difference_in_an_orthonormal_space():
    torch.manual_seed(0)
    iv = Intervention(6, 5, 2, dropout_ratio=0.0)
    b, s = iv.base_rotate.weight, iv.source_rotate.weight
    torch.testing.assert_close(b.T @ b, torch.eye(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.T @ s, torch.eye(2), atol=1e-5, rtol=0)
    base = torch.randn(4, 6)
    source = torch.randn(4, 5, requires_grad=True)
    out = iv(base, source)
    torch.testing.assert_close(out, base + (base @ b - source @ s) @ b.T)
    out.sum().backward()
    assert source.grad is None or torch.count_nonzero(source.grad) == 0  # stop_grad(source)
    with pytest.raises(ValueError, match="low_rank_dim must be > 0 and below"):
        Intervention(6, 2, 2)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.ClearField("intervention_tower_names"),
            "low_rank_dim: needs intervention_tower_names",
        ),
        (lambda t: setattr(t, "low_rank_dim", 16), "low_rank_dim must be > 0 and below"),
    ],
)
def test_dc2vr_refuses_interventions_it_cannot_build(edit, message):
    config = _config("dc2vr_taobao")
    edit(config.model_config.dc2vr.task_towers[1])
    with pytest.raises(ConfigError, match=message):
        _build(config)


def test_pepnet_losses_and_metrics_read_each_rows_domain_tower():
    model = _build(_config("pepnet_taobao")).eval()
    grouped = _grouped(model, rows=6)
    pred = model.dense_forward(grouped)
    assert {f"probs_ctr_{k}" for k in range(3)} <= set(pred)
    domain = torch.tensor([0, 1, 2, 2, 1, 0])
    batch = Batch(labels={"occupation": domain, "clk": torch.ones(6), "buy": torch.zeros(6)})
    picked = model.select_predictions(pred, batch)
    for row, k in enumerate(domain.tolist()):
        assert picked["probs_cvr"][row] == pred[f"probs_cvr_{k}"][row]
    # EPNet scales the main embedding; PPNet gives each task its own input
    main = model.epnet(grouped["all"], grouped["domain"])
    inputs = model.ppnet(main, grouped["uia"])
    torch.testing.assert_close(pred["logits_ctr_1"], model.task_towers[1](inputs[0]).squeeze(1))
    torch.testing.assert_close(pred["logits_cvr_0"], model.task_towers[3](inputs[1]).squeeze(1))
    batch.labels["occupation"] = torch.tensor([0, 1, 2, 3, 1, 0])
    with pytest.raises(DataError, match="must be in \\[0, 2\\], got values in \\[0, 3\\]"):
        model.loss(pred, batch)
    assert model.label_domains()["occupation"].high == 2.0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.data_config.label_fields.remove("occupation"), "must be in data_config"),
        (
            lambda c: c.model_config.feature_groups.remove(c.model_config.feature_groups[2]),
            "ppnet_\\*: PPNet needs a feature group named 'uia'",
        ),
        (
            lambda c: setattr(c.model_config.feature_groups[0], "group_name", "main"),
            "needs a DEEP feature group named 'all'",
        ),
    ],
)
def test_pepnet_refuses_settings_without_their_groups_or_labels(edit, message):
    config = _config("pepnet_taobao")
    edit(config)
    with pytest.raises(ConfigError, match=message):
        _build(config)


def test_ple_towers_read_the_last_levels_task_outputs():
    model = _build(_config("ple_taobao")).eval()
    grouped = _grouped(model)
    x = grouped["all"]
    tasks, shared = model.extraction_nets[0]([x, x], x)
    tasks, shared = model.extraction_nets[1](tasks, shared)
    assert shared is None
    pred = model.dense_forward(grouped)
    torch.testing.assert_close(pred["logits_cvr"], model.task_towers[1](tasks[1]).squeeze(1))


def test_mmoe_towers_read_their_gate_mixture():
    model = _build(_config("mmoe_taobao")).eval()
    grouped = _grouped(model)
    mixes = model.mmoe(grouped["all"])
    pred = model.dense_forward(grouped)
    torch.testing.assert_close(pred["logits_ctr"], model.task_towers[0](mixes[0]).squeeze(1))
    torch.testing.assert_close(pred["logits_cvr"], model.task_towers[1](mixes[1]).squeeze(1))


def test_variational_dropout_applies_to_the_group_and_adds_its_loss():
    config = _config("mmoe_taobao")
    config.model_config.variational_dropout.regularization_lambda = 0.01
    model = _build(config)
    assert list(model.group_variational_dropouts) == ["all"]
    model.train()
    pred = model.dense_forward(_grouped(model))
    labels = {"clk": torch.ones(5), "buy": torch.zeros(5)}
    losses = model.loss(pred, Batch(labels=labels))
    assert sorted(losses) == [
        "all_feature_p_loss",
        "binary_cross_entropy_ctr",
        "binary_cross_entropy_cvr",
    ]
    assert losses["all_feature_p_loss"] > 0
