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
    pq.write_table(rows(num_rows), paths["train"])
    pq.write_table(rows(max(num_rows // 4, 64)), paths["eval"])
    with open(paths["items"], "w", encoding="utf-8") as f:
        f.write("id:int64\tweight:float\tfeature:string\n")
        for i in range(num_items):
            f.write(f"{i}\t1.0\t{i}\x02{i % clusters}\x02b{i % 13}\n")
    return paths


def write_din_data(
    out_dir: Path, num_rows: int = 2000, num_items: int = 200, seed: int = 0
) -> dict:
    """Click data where the label is 1 iff the target item's category is in the history."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    cats = 10

    def rows(n: int) -> pa.Table:
        users = rng.integers(0, 500, n)
        target = rng.integers(0, num_items, n)
        seqs, labels = [], []
        for t in target:
            length = int(rng.integers(0, 8))
            hist = rng.integers(0, num_items, length)
            clicked = rng.random() < 0.5
            if clicked and length:
                hist[rng.integers(0, length)] = rng.integers(0, num_items // cats) * cats + t % cats
            labels.append(int(any(h % cats == t % cats for h in hist)))
            seqs.append(";".join(str(h) for h in hist))
        return pa.table(
            {
                "user_id": users,
                "item_id": target,
                "cate_id": target % cats,
                "click_seq__item_id": seqs,
                "click_seq__cate_id": [
                    ";".join(str(int(x) % cats) for x in s.split(";")) if s else "" for s in seqs
                ],
                "clk": np.array(labels, dtype=np.int64),
            }
        )

    paths = {"train": str(out_dir / "din_train.parquet"), "eval": str(out_dir / "din_eval.parquet")}
    pq.write_table(rows(num_rows), paths["train"])
    pq.write_table(rows(max(num_rows // 4, 64)), paths["eval"])
    return paths
