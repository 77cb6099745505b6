"""Helpers for export tests: trained-model loading and random feature tensors."""

from __future__ import annotations

import numpy as np
import torch

from tzrec.data import BaseFeature


def random_inputs(
    features: list[BaseFeature],
    lengths_by_parent: dict[str, list[int]] | None = None,
    batch: int | None = None,
    seed: int = 0,
    max_len: int = 6,
) -> dict[str, torch.Tensor]:
    """Feature tensors for ``features``: sub-features of one sequence share lengths.

    ``lengths_by_parent`` fixes the per-row lengths of a sequence parent (its
    ``sequence_name``, or the feature name of a standalone sequence); others are random.
    """
    rng = np.random.default_rng(seed)
    lengths_by_parent = dict(lengths_by_parent or {})
    if batch is None:
        batch = len(next(iter(lengths_by_parent.values()))) if lengths_by_parent else 3
    out: dict[str, torch.Tensor] = {}
    for f in features:
        if f.is_sequence:
            parent = f.sequence_name or f.name
            if parent not in lengths_by_parent:
                lengths_by_parent[parent] = rng.integers(0, max_len + 1, batch).tolist()
            lengths = torch.tensor(lengths_by_parent[parent], dtype=torch.int64)
        else:
            lengths = torch.ones(batch, dtype=torch.int64)
        n = int(lengths.sum())
        if f.is_sparse:
            out[f"{f.name}.values"] = torch.from_numpy(rng.integers(0, f.num_embeddings, n))
            out[f"{f.name}.lengths"] = lengths
            if f.is_weighted:
                out[f"{f.name}.weights"] = torch.rand(n)
        elif f.is_sequence:
            dim = max(f.value_dim, 1)
            values = rng.integers(0, 8, (n, dim)).astype(np.float32)
            out[f"{f.name}.values"] = torch.from_numpy(values)
            out[f"{f.name}.lengths"] = lengths
        else:
            dim = max(f.value_dim, 1)
            out[f.name] = torch.from_numpy(rng.random((batch, dim)).astype(np.float32))
    return out


def assert_outputs_close(expected: dict, actual: dict, atol: float = 1e-5) -> None:
    """Same keys, shapes and values (within ``atol``)."""
    assert set(actual) >= set(expected), (sorted(expected), sorted(actual))
    for key, ref in expected.items():
        got = actual[key]
        assert tuple(got.shape) == tuple(ref.shape), (key, got.shape, ref.shape)
        torch.testing.assert_close(got, ref, atol=atol, rtol=0)
