"""RocketLaunching: outputs per mode, upstream's distillation losses, gradient routing, metrics."""

import pytest
import torch
import torch.nn.functional as F

from tzrec.core.errors import ConfigError
from tzrec.protos import simi_pb2
from tzrec.rank.rocket_launching import distillation_pairs

CONFIG = "rocket_launching_criteo"


def test_light_layers_pair_with_the_first_booster_layer_of_their_width():
    assert distillation_pairs([32, 16, 8], [64, 32, 16, 32]) == {0: 1, 1: 2}
    assert distillation_pairs([5], [6, 7]) == {}


def test_training_outputs_both_nets_and_eval_only_the_light_net(model_and_batch):
    model, batch = model_and_batch(CONFIG)
    model.train()
    out = model.predict(batch)
    # num_class 2: (B, 2) logits per net; light [32, 16] pairs with booster [64, 32, 16]
    assert sorted(out) == sorted(
        ["logits_light", "probs_light", "logits_booster", "probs_booster"]
        + ["light_0", "booster_1", "light_1", "booster_2"]
    )
    assert out["logits_booster"].shape == (128, 2) and out["light_0"].shape == (128, 32)
    model.eval()
    with torch.no_grad():
        served = model.predict(batch)
        grouped = model.embedding_group(batch)
        light = model.light_linear(model.light_mlp(grouped["deep"]))
    assert sorted(served) == ["logits_light", "probs_light"]
    torch.testing.assert_close(served["logits_light"], light)
    torch.testing.assert_close(served["probs_light"], torch.softmax(light, dim=-1))
    assert sorted(model.loss(served, batch)) == ["softmax_cross_entropy_light"]


def _reference_losses(out, label, weight=None, cosine=True):
    w = torch.ones_like(label, dtype=torch.float32) if weight is None else weight / weight.mean()

    def ce(logits):
        return (F.cross_entropy(logits, label, reduction="none") * w).mean()

    ref = {
        "softmax_cross_entropy_booster": ce(out["logits_booster"]),
        "softmax_cross_entropy_light": ce(out["logits_light"]),
    }
    for i, j in ((0, 1), (1, 2)):
        light, booster = out[f"light_{i}"], out[f"booster_{j}"]
        if cosine:
            cos = F.cosine_similarity(light, booster, dim=1, eps=1e-12)
            ref[f"similarity_{i}_{j}"] = -0.1 * (cos * w).mean()
        else:
            ref[f"similarity_{i}_{j}"] = torch.sqrt((((booster - light) ** 2).sum(1) * w).sum())
    hint = ((out["logits_light"] - out["logits_booster"]) ** 2).mean(dim=1)
    ref["hint_l2_loss"] = (hint * w).mean()
    return ref


@pytest.mark.parametrize("function", ["COSINE", "EUCLID"])
def test_losses_are_upstreams_classifier_hint_and_similarity_terms(model_and_batch, function):
    def edit(config):
        rl = config.model_config.rocket_launching
        rl.feature_distillation_function = simi_pb2.Similarity.Value(function)

    model, batch = model_and_batch(CONFIG, edit)
    model.train()
    out = model.predict(batch)
    losses = model.loss(out, batch)
    ref = _reference_losses(out, batch.labels["label"], cosine=function == "COSINE")
    assert list(losses) == list(ref)
    for name, value in ref.items():
        torch.testing.assert_close(losses[name], value, msg=name)


def test_sample_weights_weigh_every_term_by_w_over_mean_w(model_and_batch, tmp_path):
    import pyarrow.parquet as pq

    def edit(config):
        table = pq.read_table(config.train_input_path)
        weights = [float(1 + (i % 3)) for i in range(table.num_rows)]
        path = tmp_path / "weighted.parquet"
        pq.write_table(table.append_column("w", [weights]), path)
        config.train_input_path = str(path)
        config.data_config.sample_weight_fields.append("w")

    model, batch = model_and_batch(CONFIG, edit)
    model.train()
    out = model.predict(batch)
    losses = model.loss(out, batch)
    ref = _reference_losses(out, batch.labels["label"], weight=batch.sample_weights["w"])
    assert list(losses) == list(ref)
    for name, value in ref.items():
        torch.testing.assert_close(losses[name], value, msg=name)


def _grads(model, loss):
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {
        part: any(
            p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, part).parameters()
        )
        for part in ("share_mlp", "booster_mlp", "light_mlp", "embedding_group")
    }


def test_the_light_net_and_the_distillation_terms_never_train_the_booster_or_the_bottom(
    model_and_batch,
):
    def edit(config):
        config.model_config.rocket_launching.share_mlp.hidden_units.append(24)

    model, batch = model_and_batch(CONFIG, edit)
    model.train()
    losses = model.loss(model.predict(batch), batch)
    assert _grads(model, losses["softmax_cross_entropy_booster"]) == {
        "share_mlp": True,
        "booster_mlp": True,
        "light_mlp": False,
        "embedding_group": True,
    }
    light_only = {
        "share_mlp": False,
        "booster_mlp": False,
        "light_mlp": True,
        "embedding_group": False,
    }
    for name in ("softmax_cross_entropy_light", "hint_l2_loss", "similarity_0_1", "similarity_1_2"):
        assert _grads(model, losses[name]) == light_only, name


def test_metrics_are_the_light_nets_and_training_metrics_both_nets(model_and_batch):
    def edit(config):
        config.model_config.train_metrics.add().auc.SetInParent()
        config.model_config.metrics[0].auc.thresholds = 0  # exact AUC

    model, batch = model_and_batch(CONFIG, edit)
    model.train()
    out = {k: v.detach() for k, v in model.predict(batch).items()}
    model.update_train_metric(out, batch)
    assert sorted(model.compute_train_metric()) == ["auc_booster", "auc_light"]
    model.eval()
    with torch.no_grad():
        served = model.predict(batch)
    model.update_metric(served, batch)
    from torchmetrics.functional.classification import binary_auroc

    expected = binary_auroc(served["probs_light"][:, 1], batch.labels["label"])
    assert model.compute_metric() == pytest.approx({"auc_light": float(expected)}, abs=1e-6)


def test_more_than_one_feature_group_is_refused(model_and_batch):
    def edit(config):
        group = config.model_config.feature_groups.add()
        group.CopyFrom(config.model_config.feature_groups[0])
        group.group_name = "other"

    with pytest.raises(ConfigError, match="rocket_launching reads one DEEP feature group, got 2"):
        model_and_batch(CONFIG, edit)
