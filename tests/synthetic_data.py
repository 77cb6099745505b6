"""Synthetic datasets with planted structure, for end-to-end tests and benchmarks.

Users belong to ``clusters`` taste groups; a user's positive items come from its group, so a
model that learns the user -> group mapping beats random recall by a wide margin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


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
