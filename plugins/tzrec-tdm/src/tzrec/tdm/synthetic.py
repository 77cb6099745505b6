"""Planted TDM data: items in categories, users who click mostly one category.

Used by tzrec-tdm's tests and docs; retrieval on it depends on the tree's category structure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUM_ITEMS = 64
NUM_CATES = 8


def write_tdm_data(out_dir: Path, num_rows: int = 512, num_eval_rows: int = 128, seed: int = 0):
    """Items in 8 categories of 8; each user clicks mostly (85%) their preferred category.

    A row's target item is from the user's preferred category, so a model that scores a
    tree node by how well its category matches the history retrieves the target's category
    (recall@8 near 1 at best, 8/64 for random items). ``items.parquet`` also carries an
    embedding near its category's centre (a planted 3-level hierarchy) for ``tdm-cluster-tree``.
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = np.arange(NUM_ITEMS)
    cates = items // (NUM_ITEMS // NUM_CATES)
    # category c's centre spells its bits with halving scales: a 2-way balanced k-means
    # splits on the largest first, so the learnt tree recovers the categories
    bits = (np.arange(NUM_CATES)[:, None] >> np.arange(2, -1, -1)[None, :]) & 1
    centres = (2.0 * bits - 1.0) * np.array([4.0, 2.0, 1.0])
    emb = centres[cates] + rng.normal(size=(NUM_ITEMS, 3)) * 0.1
    pq.write_table(
        pa.table(
            {
                "item_id": items,
                "cate_id": cates,
                "price": rng.integers(1, 100, NUM_ITEMS),
                "item_emb": [list(map(float, e)) for e in emb],
            }
        ),
        out_dir / "items.parquet",
    )
    per_cate = NUM_ITEMS // NUM_CATES

    def rows(n: int) -> pa.Table:
        users = rng.integers(0, 300, n)
        pref = users % NUM_CATES
        target = pref * per_cate + rng.integers(0, per_cate, n)
        seqs = []
        for p in pref:
            length = int(rng.integers(3, 11))
            cat = np.where(rng.random(length) < 0.85, p, rng.integers(0, NUM_CATES, length))
            seqs.append(cat * per_cate + rng.integers(0, per_cate, length))
        return pa.table(
            {
                "user_id": users,
                "item_id": target,
                "cate_id": target // per_cate,
                "click_seq__item_id": [";".join(map(str, s)) for s in seqs],
                "click_seq__cate_id": [";".join(str(x // per_cate) for x in s) for s in seqs],
                "clk": np.ones(n, dtype=np.int64),
            }
        )

    paths = {
        "items": str(out_dir / "items.parquet"),
        "train": str(out_dir / "tdm_train.parquet"),
        "eval": str(out_dir / "tdm_eval.parquet"),
    }
    pq.write_table(rows(num_rows), paths["train"])
    pq.write_table(rows(num_eval_rows), paths["eval"])
    return paths


__all__ = ["NUM_CATES", "NUM_ITEMS", "write_tdm_data"]
