"""XAUC, grouped XAUC and normalized entropy against brute-force formulas."""

import itertools
import math

import numpy as np
import pytest
import torch

from tzrec.core.errors import ConfigError
from tzrec.models.metrics.normalized_entropy import NormalizedEntropy
from tzrec.models.metrics.xauc import (
    XAUC,
    GroupedXAUC,
    concordant_counts,
    earlier_smaller_counts,
    grouped_xauc,
    xauc,
)
from tzrec.protos import metric_pb2


def _brute_xauc(p, t):
    pairs = list(itertools.combinations(range(len(p)), 2))
    return sum((t[i] - t[j]) * (p[i] - p[j]) > 0 for i, j in pairs) / len(pairs)


def _brute_grouped(p, t, g):
    num = den = 0.0
    for key in sorted(set(g.tolist())):
        rows = np.flatnonzero(g == key)
        if len(rows) > 1:
            num += _brute_xauc(p[rows], t[rows]) * len(rows)
            den += len(rows)
    return num / den


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_earlier_smaller_and_concordant_counts_match_the_quadratic_definition(seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 7, 57)  # many ties
    want = [sum(v[i] < v[j] for i in range(j)) for j in range(len(v))]
    assert earlier_smaller_counts(v).tolist() == want
    x, y = rng.integers(0, 5, 41), rng.integers(0, 5, 41)
    want = [sum(x[i] < x[j] and y[i] < y[j] for i in range(41)) for j in range(41)]
    assert concordant_counts(x, y).tolist() == want


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xauc_is_the_exact_fraction_of_concordant_pairs(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 6, 120).astype(np.float64)  # watch-time-like labels with ties
    p = np.round(t + rng.normal(0, 2, 120), 1)  # prediction ties too
    got = float(xauc(torch.tensor(p), torch.tensor(t)))
    assert got == pytest.approx(_brute_xauc(p, t), abs=1e-12)
    perm = rng.permutation(120)  # row order (process count, batch order) does not matter
    assert float(xauc(torch.tensor(p[perm]), torch.tensor(t[perm]))) == pytest.approx(got)


def test_xauc_extremes_and_tiny_inputs():
    t = torch.arange(10.0)
    assert float(xauc(t * 3, t)) == 1.0
    assert float(xauc(-t, t)) == 0.0
    assert float(xauc(torch.ones(10), t)) == 0.0  # prediction ties are not concordant
    assert float(xauc(torch.tensor([1.0]), torch.tensor([2.0]))) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_grouped_xauc_is_the_size_weighted_mean_of_group_xaucs(seed):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 9, 150)
    g[0] = 99  # a one-row group is skipped
    t = rng.integers(0, 5, 150).astype(np.float64)
    p = np.round(t * (g % 3 - 1) + rng.normal(0, 1, 150), 1)  # per-group direction differs
    got = float(grouped_xauc(torch.tensor(p), torch.tensor(t), torch.tensor(g)))
    assert got == pytest.approx(_brute_grouped(p, t, g), abs=1e-12)


def test_metrics_accumulate_batches_like_one_set():
    rng = np.random.default_rng(5)
    t = rng.integers(0, 5, 64).astype(np.float32)
    p = (t + rng.normal(0, 1.5, 64)).astype(np.float32)
    g = rng.integers(0, 4, 64)
    m, gm = XAUC(metric_pb2.XAUC()), GroupedXAUC(metric_pb2.GroupedXAUC(grouping_key="u"))
    for s in range(0, 64, 16):
        m.update(torch.tensor(p[s : s + 16]), torch.tensor(t[s : s + 16]))
        gm.update(
            torch.tensor(p[s : s + 16]), torch.tensor(t[s : s + 16]), torch.tensor(g[s : s + 16])
        )
    assert float(m.compute()) == pytest.approx(_brute_xauc(p, t), abs=1e-6)
    assert float(gm.compute()) == pytest.approx(_brute_grouped(p, t, g), abs=1e-6)
    inb = XAUC(metric_pb2.XAUC(in_batch=True))
    for s in range(0, 64, 16):
        inb.update(torch.tensor(p[s : s + 16]), torch.tensor(t[s : s + 16]))
    want = np.mean([_brute_xauc(p[s : s + 16], t[s : s + 16]) for s in range(0, 64, 16)])
    assert float(inb.compute()) == pytest.approx(want, abs=1e-6)


def test_normalized_entropy_matches_its_formula():
    rng = np.random.default_rng(2)
    t = rng.integers(0, 2, 200).astype(np.float64)
    p = np.clip(0.3 + 0.4 * t + rng.normal(0, 0.1, 200), 0.01, 0.99)
    ne = NormalizedEntropy(metric_pb2.NormalizedEntropy())
    ne.update(torch.tensor(p[:100]), torch.tensor(t[:100]))
    ne.update(torch.tensor(p[100:]), torch.tensor(t[100:]))
    ce = -np.sum(t * np.log(p) + (1 - t) * np.log(1 - p))
    r = t.mean()
    base = -(t.sum() * math.log(r) + (len(t) - t.sum()) * math.log(1 - r))
    assert float(ne.compute()) == pytest.approx(ce / base, rel=1e-6)
    assert float(ne.compute()) < 1.0  # better than the label rate


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: XAUC(metric_pb2.XAUC(sample_ratio=0)), "xauc.sample_ratio: expected a value in"),
        (lambda: XAUC(metric_pb2.XAUC(), num_class=2), "xauc needs num_class 1"),
        (lambda: NormalizedEntropy(None, num_class=3), "normalized_entropy needs num_class <= 2"),
    ],
)
def test_bad_metric_settings_are_one_line(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
