"""Test support shared by the packages' test suites (installed with tzrec-data).

Synthetic datasets with planted structure (:func:`write_dssm_data`, :func:`write_din_data`:
users belong to taste groups and their positives come from their group, so a model that
learns the user -> group mapping beats random recall by a wide margin), random feature
tensors for export parity (:func:`random_inputs`) and :func:`assert_outputs_close`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tzrec.data.features.base import BaseFeature

__all__ = ["assert_outputs_close", "random_inputs", "write_din_data", "write_dssm_data"]


def write_dssm_data(
    out_dir: Path,
    num_rows: int = 2000,
    num_users: int = 200,
    num_items: int = 400,
    clusters: int = 8,
    seed: int = 0,
) -> dict[str, str]:
    """Train/eval parquet and an item table for ``docs/examples/dssm.config``'s columns."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    def rows(n: int) -> pa.Table:
        users = rng.integers(0, num_users, n)
        group = users % clusters
        items = rng.integers(0, num_items // clusters, n) * clusters + group
        return pa.table(
            {
                "user_id": users,
                "age_level": (users * 7) % 10,
                "item_id": items,
                "cate_id": [str(i % clusters) for i in items],
                "brand": [f"b{i % 13}" for i in items],
                "clk": np.ones(n, dtype=np.int64),
            }
        )

    paths = {
        "train": str(out_dir / "dssm_train.parquet"),
        "eval": str(out_dir / "dssm_eval.parquet"),
        "items": str(out_dir / "dssm_items.txt"),
    }
    pq.write_table(rows(num_rows), paths["train"], row_group_size=250)
    pq.write_table(rows(max(num_rows // 4, 64)), paths["eval"])
    with open(paths["items"], "w", encoding="utf-8") as f:
        f.write("id:int64\tweight:float\tfeature:string\n")
        for i in range(num_items):
            f.write(f"{i}\t1.0\t{i}\x02{i % clusters}\x02b{i % 13}\n")
    # the same items one per row with the item tower's columns (export, retrieval eval)
    paths["item_table"] = str(out_dir / "dssm_item_table.parquet")
    ids = np.arange(num_items, dtype=np.int64)
    pq.write_table(
        pa.table(
            {
                "item_id": ids,
                "cate_id": [str(i % clusters) for i in ids],
                "brand": [f"b{i % 13}" for i in ids],
            }
        ),
        paths["item_table"],
    )
    return paths


def write_din_data(
    out_dir: Path, num_rows: int = 2000, num_items: int = 200, seed: int = 0
) -> dict[str, str]:
    """Clicks on targets from the category that dominates the user's click history.

    Each user clicks mostly (80%) items of one preferred category; a row is positive when
    the target item's category is that one, so attending from the target over the history
    predicts the label (AUC near 1), while ids alone only memorise.
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    cats = 10
    per_cat = num_items // cats

    def rows(n: int) -> pa.Table:
        users = rng.integers(0, 500, n)
        preferred = (users * 3) % cats
        positive = rng.random(n) < 0.5
        target_cat = np.where(positive, preferred, (preferred + rng.integers(1, cats, n)) % cats)
        target = rng.integers(0, per_cat, n) * cats + target_cat
        seqs = []
        for pref in preferred:
            length = int(rng.integers(1, 9))
            hist_cat = np.where(rng.random(length) < 0.8, pref, rng.integers(0, cats, length))
            seqs.append(rng.integers(0, per_cat, length) * cats + hist_cat)
        return pa.table(
            {
                "user_id": users,
                "item_id": target,
                "cate_id": target % cats,
                "click_seq__item_id": [";".join(str(h) for h in s) for s in seqs],
                "click_seq__cate_id": [";".join(str(h % cats) for h in s) for s in seqs],
                "clk": positive.astype(np.int64),
            }
        )

    paths = {"train": str(out_dir / "din_train.parquet"), "eval": str(out_dir / "din_eval.parquet")}
    pq.write_table(rows(num_rows), paths["train"], row_group_size=250)
    pq.write_table(rows(max(num_rows // 4, 64)), paths["eval"])
    return paths


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
