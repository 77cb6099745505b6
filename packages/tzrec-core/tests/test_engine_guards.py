"""Non-finite and label-domain guards: what they find and the one line they print."""

from types import SimpleNamespace

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedTensor

from tzrec.core.engine import guards
from tzrec.core.errors import ConfigError, DataError

NAN, INF = float("nan"), float("inf")


def _batch(labels=None, dense=None, seq=None, weights=None):
    dense_kt = {}
    if dense:
        keys = list(dense)
        dense_kt["__BASE__"] = KeyedTensor(
            keys=keys,
            length_per_key=[1] * len(keys),
            values=torch.stack([torch.tensor(dense[k]) for k in keys], dim=1),
        )
    return SimpleNamespace(
        labels={k: torch.tensor(v) for k, v in (labels or {}).items()},
        sample_weights={k: torch.tensor(v) for k, v in (weights or {}).items()},
        dense_features=dense_kt,
        sequence_dense_features={
            k: JaggedTensor(values=torch.tensor(v), lengths=torch.tensor([len(v)]))
            for k, v in (seq or {}).items()
        },
    )


def test_nonfinite_columns_names_labels_weights_and_features():
    batch = _batch(
        labels={"clk": [0.0, NAN, 1.0]},
        weights={"w": [1.0, 1.0, INF]},
        dense={"price": [1.0, INF, NAN], "age": [1.0, 2.0, 3.0]},
        seq={"hist_price": [[1.0], [NAN]]},
    )
    assert guards.nonfinite_columns(batch) == [
        "label 'clk' (1 value)",
        "sample weight 'w' (1 value)",
        "feature 'price' (2 values)",
        "feature 'hist_price' (1 value)",
    ]
    assert guards.nonfinite_columns(_batch(labels={"clk": [1, 0]})) == []


def test_non_finite_message_names_step_loss_and_cause():
    batch = _batch(labels={"clk": [NAN]})
    line = guards.non_finite_message(7, {"bce": NAN, "aux": 0.5}, batch)
    assert line.startswith("training stopped at step 7: non-finite loss (bce=nan); ")
    assert "label 'clk' (1 value)" in line and "TZREC_NON_FINITE_LOSS=skip" in line
    diverged = guards.non_finite_message(3, {"bce": INF}, _batch(labels={"clk": [1.0]}))
    assert "the model diverged" in diverged


def test_policy_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(guards.NON_FINITE_ENV, raising=False)
    assert guards.non_finite_policy() == "stop"
    monkeypatch.setenv(guards.NON_FINITE_ENV, "Skip")
    assert guards.non_finite_policy() == "skip"
    monkeypatch.setenv(guards.NON_FINITE_ENV, "ignore")
    with pytest.raises(ConfigError, match="TZREC_NON_FINITE_LOSS='ignore': expected 'stop'"):
        guards.non_finite_policy()


def test_softmax_class_ids_must_be_integers_in_range():
    domains = {"cls": guards.LabelDomain(0, 3, True, "softmax_cross_entropy")}
    guards.check_labels(_batch(labels={"cls": [0, 3, 2]}), domains, "in.parquet")
    with pytest.raises(DataError) as e:
        guards.check_labels(_batch(labels={"cls": [0, 4, 7]}), domains, "in.parquet")
    assert str(e.value) == (
        "in.parquet: label 'cls' holds 2 value(s) outside integers [0, 3] in a batch (e.g. 4); "
        "softmax_cross_entropy needs labels in integers [0, 3]"
    )
    with pytest.raises(DataError, match="outside integers"):
        guards.check_labels(_batch(labels={"cls": [0.5]}), domains, "in.parquet")


def test_non_finite_labels_fail_evaluation_but_pass_to_the_training_guard():
    domains = {"clk": guards.LabelDomain(0, 1, False, "binary_cross_entropy")}
    batch = _batch(labels={"clk": [0.0, NAN]})
    guards.check_labels(batch, domains, "t.parquet", allow_non_finite=True)
    with pytest.raises(DataError, match="t.parquet: label 'clk' holds 1 non-finite value"):
        guards.check_labels(batch, domains, "t.parquet")


def test_models_without_declared_domains_are_not_checked():
    assert guards.label_domains(object()) == {}
    model = SimpleNamespace(label_domains=lambda: {"y": guards.LabelDomain(0, 1, False, "x")})
    assert list(guards.label_domains(model)) == ["y"]
