"""Non-finite values never pass export's parity check or its parameter check."""

import math
from pathlib import Path

import pytest
import torch

from tzrec.core.errors import ConfigError
from tzrec.export.exporter import _max_abs_diff, check_finite_parameters
from tzrec.export.predict import nonfinite_rows


def test_parity_fails_on_nan_in_the_exported_output():
    ref = {"probs": torch.tensor([0.1, 0.2, 0.3])}
    got = {"probs": torch.tensor([0.1, math.nan, 0.3])}
    # max(0.0, nan) is 0.0 in Python: the old check reported a zero difference
    with pytest.raises(ConfigError, match="1 NaN/inf values exported, 0 eager, of 3"):
        _max_abs_diff(ref, got)


def test_parity_fails_when_eager_and_exported_are_both_nan_or_inf():
    both = {"emb": torch.tensor([[math.nan, 1.0], [math.inf, 0.0]])}
    with pytest.raises(ConfigError, match="output 'emb' is not finite"):
        _max_abs_diff(both, {"emb": both["emb"].clone()})


def test_parity_of_finite_outputs_is_the_largest_difference():
    ref = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.0], [0.0]])}
    got = {"a": torch.tensor([1.0, 2.5]), "b": torch.tensor([[0.25], [0.0]])}
    assert _max_abs_diff(ref, got) == pytest.approx(0.5)


def test_a_model_with_a_nan_parameter_is_refused_naming_it():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    check_finite_parameters(model, Path("ckpt"))  # finite: accepted
    with torch.no_grad():
        model[1].weight[0, 1] = math.nan
        model[1].bias.fill_(math.inf)
    with pytest.raises(ConfigError) as e:
        check_finite_parameters(model, Path("model.ckpt-7"))
    line = str(e.value)
    assert "\n" not in line
    assert line.startswith("model.ckpt-7: parameter '1.weight' holds 1 of 2 non-finite")
    assert "(2 tensors affected)" in line


def test_nonfinite_rows_counts_rows_not_values():
    value = torch.tensor([[1.0, math.nan], [math.nan, math.inf], [0.0, 0.0]])
    assert nonfinite_rows(value) == 2
    assert nonfinite_rows(torch.tensor([math.inf, 1.0, -math.inf])) == 2
    assert nonfinite_rows(torch.zeros(0, 4)) == 0
    assert nonfinite_rows(torch.tensor([1, 2])) == 0
