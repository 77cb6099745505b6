"""Parity of quantised serving lookups (``QUANT_EMB`` / ``QUANT_EC_EMB``) on export.

An artefact whose tables are stored INT8 or FP16 cannot equal the FP32 model exactly, so
its lookups are checked against the stated per-value bound instead: an INT8 row-wise value
is within half its row's step, ``scale / 2`` with ``scale = (max - min) / 255``; an FP16
value within ``2**-11`` of its magnitude (``2**-25`` absolute below FP16's normal range).
A pooled value is a (weighted) sum or mean of rows, so its bound is the same sum or mean
of its rows' bounds: it is computed by running the FP32 lookups over tables of bounds, with
``|weights|`` and the dense inputs zeroed. Plus a float32 rounding slack,
``FLOAT32_SLACK * (1 + |value|)``.
"""

from __future__ import annotations

import copy

import torch

from tzrec.core.errors import ConfigError
from tzrec.models.inference import InferenceEmbeddingGroup

#: relative float32 rounding slack on top of the quantisation bound (a few ulps)
FLOAT32_SLACK = 1e-6
#: FP16 round-to-nearest: relative half-spacing of normal values, absolute below them
FP16_RELATIVE = 2.0**-11
FP16_ABSOLUTE = 2.0**-25


def _bound_table(served: InferenceEmbeddingGroup, exact: InferenceEmbeddingGroup, name: str):
    """Per-value error bound of table ``name`` as stored in ``served`` (float32)."""
    weight = exact.tables[name]
    kind = served.quant[name]
    if kind == "INT8":
        return (served.scales[name] / 2).unsqueeze(1).expand_as(weight).contiguous()
    if kind == "FP16":
        return (weight.abs() * FP16_RELATIVE).clamp_min(FP16_ABSOLUTE)
    return torch.zeros_like(weight)


def lookup_bounds(
    served: InferenceEmbeddingGroup,
    exact: InferenceEmbeddingGroup,
    inputs: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Per-value bound on ``|served(inputs) - exact(inputs)|`` (float outputs only)."""
    bound = copy.copy(exact)
    bound.tables = {n: _bound_table(served, exact, n) for n in exact.tables}
    feed = dict(inputs)
    for _, feature, _, _, weighted in exact.pooled:
        if weighted:
            feed[feature + ".weights"] = inputs[feature + ".weights"].abs()
    for feature in exact.dense:
        feed[feature] = torch.zeros_like(inputs[feature])
    for feature in exact.seq_dense:
        feed[feature + ".values"] = torch.zeros_like(inputs[feature + ".values"])
    with torch.no_grad():
        return {k: v for k, v in bound(feed).items() if v.is_floating_point()}


def check_quantized_lookups(
    served: InferenceEmbeddingGroup,
    exact: InferenceEmbeddingGroup,
    inputs: dict[str, torch.Tensor],
    label: str,
) -> tuple[float, float]:
    """``(max |served - exact|, max bound)`` of the lookups; refuse a value past its bound.

    Raises:
        ConfigError: a grouped value further from FP32 than its stated bound, or an
            integer output (lengths) that changed.
    """
    with torch.no_grad():
        want, got = exact(inputs), served(inputs)
    bounds = lookup_bounds(served, exact, inputs)
    worst = worst_bound = 0.0
    for key, ref in want.items():
        value = got[key]
        if not ref.is_floating_point():
            if not torch.equal(value, ref):
                raise ConfigError(f"quantised lookups of the {label} changed '{key}'")
            continue
        if not ref.numel():
            continue
        diff = (value.double() - ref.double()).abs()
        tol = bounds[key].double() + FLOAT32_SLACK * (1 + ref.double().abs())
        if not bool((diff <= tol).all()):  # also False for NaN
            raise ConfigError(
                f"quantised lookups of the {label}: '{key}' differs from FP32 by "
                f"{float(diff.max()):.3g}, past its stated bound {float(tol.max()):.3g} "
                "(QUANT_EMB / QUANT_EC_EMB, see docs/export.md)"
            )
        worst = max(worst, float(diff.max()))
        worst_bound = max(worst_bound, float(bounds[key].max()))
    return worst, worst_bound
