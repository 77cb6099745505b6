"""``model_config.variational_dropout``: learned feature dropout, its penalty and importance."""

import csv
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tzrec.core import build
from tzrec.core.config import parse_pipeline_config, validate_pipeline_config
from tzrec.core.engine import loop
from tzrec.core.engine.checkpoint import CheckpointStore, load
from tzrec.core.engine.engine import TrainWrapper
from tzrec.core.errors import ConfigError
from tzrec.data import ParquetDataset
from tzrec.models.modules.variational_dropout import (
    VariationalDropout,
    feature_importance,
    write_feature_importance,
)
from tzrec.models.rank import MultiTower, RankModel

DIMS = {"a": 2, "b": 1, "c": 3}
EPS = torch.finfo(torch.float32).eps


def _module(embedding_wise=False, lam=0.5):
    torch.manual_seed(0)
    vd = VariationalDropout(DIMS, "g", lam, embedding_wise)
    with torch.no_grad():
        n = 6 if embedding_wise else 3
        vd.feature_p.copy_(torch.linspace(-1.5, 2.0, n))
    return vd


def _reference(x, theta, u, cols, lam, training):
    """Our own statement of the formula (see the module docstring)."""
    p = 1.0 / (1.0 + np.exp(-theta))
    if training:
        logit = np.log(p + EPS) - np.log(1 - p + EPS) + np.log(u + EPS) - np.log(1 - u + EPS)
        drop = (1.0 / (1.0 + np.exp(-logit / 0.1)))[:, cols]
    else:
        drop = p[cols][None, :]
    return x * (1 - drop), lam / x.shape[0] * np.sum(1 - p)


@pytest.mark.parametrize("embedding_wise", [False, True])
def test_forward_train_is_a_concrete_sample_and_eval_the_expectation(embedding_wise):
    vd = _module(embedding_wise)
    x = torch.randn(5, 6)
    theta = vd.feature_p.detach().numpy().astype(np.float64)
    cols = np.arange(6) if embedding_wise else np.array([0, 0, 1, 2, 2, 2])
    vd.eval()
    out, loss = vd(x)
    want, want_loss = _reference(x.numpy(), theta, None, cols, 0.5, False)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-5, atol=1e-6)
    assert math.isclose(float(loss), want_loss, rel_tol=1e-5)
    vd.train()
    torch.manual_seed(7)
    out, loss = vd(x)
    torch.manual_seed(7)
    u = torch.rand(5, theta.size).numpy().astype(np.float64)
    want, want_loss = _reference(x.numpy(), theta, u, cols, 0.5, True)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-4, atol=1e-5)
    assert math.isclose(float(loss), want_loss, rel_tol=1e-5)
    # a feature's columns share one draw per row (feature-wise)
    if not embedding_wise:
        ratio = out.detach() / x
        torch.testing.assert_close(ratio[:, 3], ratio[:, 5])
    # eval is deterministic, training is not
    vd.eval()
    torch.testing.assert_close(vd(x)[0], vd(x)[0])
    vd.train()
    assert not torch.equal(vd(x)[0], vd(x)[0])


def test_penalty_value_for_fixed_parameters():
    vd = _module(lam=0.2)
    with torch.no_grad():
        vd.feature_p.copy_(torch.tensor([0.0, math.log(3.0), -math.log(3.0)]))
    # p = 0.5, 0.75, 0.25 -> sum(1 - p) = 1.5; lambda / B = 0.2 / 4
    _, loss = vd(torch.ones(4, 6))
    assert math.isclose(float(loss), 0.2 / 4 * 1.5, rel_tol=1e-6)


def test_gradients_reach_the_logits_and_the_input():
    vd = _module()
    x = torch.randn(8, 6, requires_grad=True)
    out, loss = vd(x)
    (out.square().sum() + loss).backward()
    assert vd.feature_p.grad is not None and torch.all(vd.feature_p.grad != 0)
    assert x.grad is not None and torch.any(x.grad != 0)
    # the penalty alone pushes every p up (its gradient on theta is negative)
    vd.feature_p.grad = None
    vd(x.detach())[1].backward()
    assert torch.all(vd.feature_p.grad < 0)


def test_importance_is_ordered_by_dropout_probability_and_written_as_upstream(tmp_path):
    vd = _module()
    model = torch.nn.ModuleDict({"tower": torch.nn.ModuleDict({"g": vd})})
    ranked = feature_importance(model)["g"]
    p = torch.sigmoid(torch.linspace(-1.5, 2.0, 3)).tolist()
    assert [name for name, _ in ranked] == ["a", "b", "c"]
    for (_, got), want in zip(ranked, p, strict=True):
        assert math.isclose(got, want, rel_tol=1e-6)
    with torch.no_grad():
        vd.feature_p.copy_(torch.tensor([3.0, -2.0, 0.0]))
    files = write_feature_importance(model, tmp_path / "fs")
    with files["g"].open() as f:
        rows = list(csv.reader(f))
    assert files["g"].name == "feature_dropout_ratio_g.csv"
    assert rows[0] == ["feature_name", "mean_drop_p"]
    assert [r[0] for r in rows[1:]] == ["b", "c", "a"]
    assert math.isclose(float(rows[1][1]), 1 / (1 + math.exp(2.0)), rel_tol=1e-6)
    # embedding-wise: a feature's importance is the mean p of its columns
    ew = _module(embedding_wise=True)
    theta = torch.linspace(-1.5, 2.0, 6)
    got = dict(feature_importance(ew)["g"])
    sig = torch.sigmoid(theta)
    assert math.isclose(got["a"], float(sig[:2].mean()), rel_tol=1e-6)
    assert math.isclose(got["b"], float(sig[2]), rel_tol=1e-6)
    assert math.isclose(got["c"], float(sig[3:].mean()), rel_tol=1e-6)
    with pytest.raises(ConfigError, match="no variational dropout layer"):
        feature_importance(torch.nn.Linear(2, 2))


# -- in models -----------------------------------------------------------------------------

ROWS, BATCH, STEPS = 256, 32, 24

CONFIG = """
train_input_path: "{data}"
eval_input_path: "{data}"
model_dir: "{model_dir}"
train_config {{
  sparse_optimizer {{ adagrad_optimizer {{ lr: 0.5 }} constant_learning_rate {{}} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.05 }} constant_learning_rate {{}} }}
  num_steps: {steps}
  save_checkpoints_steps: 1000
}}
eval_config {{}}
data_config {{
  batch_size: {batch} dataset_type: ParquetDataset label_fields: "clk" num_workers: 0
  shuffle: false
}}
feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: 50 embedding_dim: 4 }} }}
feature_configs {{ id_feature {{ feature_name: "item_id" num_buckets: 50 embedding_dim: 4 }} }}
feature_configs {{ raw_feature {{ feature_name: "noise" }} }}
model_config {{
  feature_groups {{
    group_name: "all" feature_names: ["user_id", "item_id", "noise"] group_type: DEEP
  }}
  feature_groups {{ group_name: "one" feature_names: ["item_id"] group_type: DEEP }}
  multi_tower {{
    towers {{ input: "all" mlp {{ hidden_units: [8] }} }}
    towers {{ input: "one" }}
    final {{ hidden_units: [4] }}
  }}
  losses {{ binary_cross_entropy {{}} }}
  variational_dropout {{ regularization_lambda: {lam} }}
}}
"""


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, ROWS)
    clk = ((users % 2 == 0) ^ (rng.random(ROWS) < 0.1)).astype(np.int64)
    table = pa.table(
        {
            "user_id": users,
            "item_id": rng.integers(0, 50, ROWS),
            "noise": rng.random(ROWS),
            "clk": clk,
        }
    )
    path = tmp_path_factory.mktemp("vd") / "train.parquet"
    pq.write_table(table, path)
    return str(path)


def _config(data, model_dir, lam=0.5):
    return parse_pipeline_config(
        CONFIG.format(data=data, model_dir=model_dir, steps=STEPS, batch=BATCH, lam=lam)
    )


def _model_and_batch(config):
    features = build.create_features(config)
    ds = ParquetDataset(config.data_config, features, config.train_input_path, mode="train")
    torch.manual_seed(0)
    return build.build_model(config, ds.features), next(iter(ds))


def test_multi_tower_applies_it_per_group_and_adds_the_penalty_in_training(data_path, tmp_path):
    config = _config(data_path, tmp_path / "m")
    validate_pipeline_config(config)  # the declared fields pass the schema walk
    model, batch = _model_and_batch(config)
    # upstream: groups of more than one feature only, dims in column order
    assert list(model.group_variational_dropouts) == ["all"]
    vd = model.group_variational_dropouts["all"]
    assert vd.feature_dims == {"user_id": 4, "item_id": 4, "noise": 1}
    assert vd.regularization_lambda == 0.5
    model.train()
    losses = model.loss(model.predict(batch), batch)
    assert sorted(losses) == ["all_feature_p_loss", "binary_cross_entropy"]
    p = torch.sigmoid(vd.feature_p.detach())
    assert math.isclose(
        float(losses["all_feature_p_loss"]), 0.5 / BATCH * float((1 - p).sum()), rel_tol=1e-5
    )
    sum(losses.values()).backward()
    assert torch.all(vd.feature_p.grad != 0)
    # eval: no penalty, and the group scaled by 1 - p (deterministic)
    model.eval()
    with torch.no_grad():
        first = model.predict(batch)
        assert sorted(model.loss(first, batch)) == ["binary_cross_entropy"]
        torch.testing.assert_close(model.predict(batch)["logits"], first["logits"])
        grouped = model.embedding_group(batch)
        scaled = grouped["all"] * (1 - p[torch.tensor([0] * 4 + [1] * 4 + [2])])
        dropouts, model.group_variational_dropouts = model.group_variational_dropouts, None
        by_hand = model.dense_forward({**grouped, "all": scaled})["logits"]
        plain = model.dense_forward(grouped)["logits"]
        model.group_variational_dropouts = dropouts
    torch.testing.assert_close(first["logits"], by_hand)
    assert not torch.allclose(first["logits"], plain)


def test_dssm_towers_each_get_their_penalty():
    config = parse_pipeline_config(
        """
        train_input_path: "x" eval_input_path: "x" model_dir: "m"
        data_config { batch_size: 4 dataset_type: ParquetDataset label_fields: "clk" }
        feature_configs { id_feature { feature_name: "u1" num_buckets: 10 embedding_dim: 4 } }
        feature_configs { id_feature { feature_name: "u2" num_buckets: 10 embedding_dim: 4 } }
        feature_configs { id_feature { feature_name: "i1" num_buckets: 10 embedding_dim: 4 } }
        feature_configs { id_feature { feature_name: "i2" num_buckets: 10 embedding_dim: 4 } }
        model_config {
          feature_groups { group_name: "user" feature_names: ["u1", "u2"] group_type: DEEP }
          feature_groups { group_name: "item" feature_names: ["i1", "i2"] group_type: DEEP }
          dssm {
            user_tower { input: "user" mlp { hidden_units: [4] } }
            item_tower { input: "item" mlp { hidden_units: [4] } }
            in_batch_negative: true
          }
          losses { softmax_cross_entropy {} }
          variational_dropout { embedding_wise_variational_dropout: true }
        }
        """
    )
    model = build.build_model(config, build.create_features(config))
    for tower, group in ((model.user_tower, "user"), (model.item_tower, "item")):
        vd = tower.group_variational_dropouts[group]
        assert vd.embedding_wise and vd.feature_p.shape == (8,)
        assert math.isclose(vd.regularization_lambda, 0.01, rel_tol=1e-6)  # proto default
    model.train()
    grouped = {"user": torch.randn(4, 8), "item": torch.randn(4, 8)}
    user = model.user_tower.tower_embedding(grouped)
    item = model.item_tower.tower_embedding(grouped)
    sim = model.sim(user, item)
    losses = model.loss({"similarity": sim}, None)
    assert sorted(losses) == ["item_feature_p_loss", "softmax_cross_entropy", "user_feature_p_loss"]


def test_models_that_do_not_apply_it_refuse_it_and_bad_lambda_is_refused(data_path, tmp_path):
    class Plain(RankModel):
        pass

    config = _config(data_path, tmp_path / "m")
    features = build.create_features(config)
    with pytest.raises(
        ConfigError, match=r"^model_config.variational_dropout: not supported by Plain$"
    ):
        Plain(config.model_config, features, ["clk"])
    bad = _config(data_path, tmp_path / "m", lam=-1)
    with pytest.raises(ConfigError, match="regularization_lambda: must be >= 0, got -1"):
        MultiTower(bad.model_config, features, ["clk"])


def test_a_tiny_config_trains_and_its_checkpoint_gives_the_importance(data_path, tmp_path):
    model_dir = tmp_path / "m"
    config = _config(data_path, model_dir, lam=2.0)
    model, _ = _model_and_batch(config)
    init = torch.sigmoid(model.group_variational_dropouts["all"].feature_p.detach().clone())
    loop.train_and_evaluate(config)
    (_, ckpt), *_ = reversed(CheckpointStore(model_dir).checkpoints())
    restored, _ = _model_and_batch(config)
    load(ckpt, TrainWrapper(restored))
    trained = torch.sigmoid(restored.group_variational_dropouts["all"].feature_p.detach())
    # the penalty (lambda 2) raises every dropout probability over training
    assert torch.all(trained > init), (init, trained)
    files = write_feature_importance(restored, tmp_path / "fs")
    with files["all"].open() as f:
        rows = list(csv.DictReader(f))
    got = {r["feature_name"]: float(r["mean_drop_p"]) for r in rows}
    assert sorted(got) == ["item_id", "noise", "user_id"]
    assert [float(r["mean_drop_p"]) for r in rows] == sorted(got.values())
    for i, name in enumerate(["user_id", "item_id", "noise"]):
        assert math.isclose(got[name], float(trained[i]), rel_tol=1e-6)


def test_eval_view_traces_for_export():
    """The dense part of an export is ``torch.jit.trace``d: the layer must trace and match."""
    vd = _module().eval()
    x = torch.randn(3, 6)
    traced = torch.jit.trace(vd, (x,))
    for got, want in zip(traced(x), vd(x), strict=True):
        torch.testing.assert_close(got, want)
