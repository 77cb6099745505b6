"""tzrec-multitask tests: planted two-task data (click and a rare purchase) and helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def write_multitask_data(
    out_dir: Path, num_rows: int = 2000, num_eval_rows: int = 1000, seed: int = 0
) -> dict[str, str]:
    """Clicks and rare purchases that share one signal: the item's attractiveness.

    40% of the 400 items are attractive (clicked with p 0.6, others 0.03); a click becomes
    a purchase with p 0.12, so purchases are rare (~4%, about one per attractive item in
    training). Learnt alone, which items sell is barely visible; the click task shows which
    items are attractive, and a model whose tasks share the item representation ranks
    purchases by it. ``occupation`` (0..2, a domain) is ``user_id % 3``; ``click_seq`` lists
    attractive items (the DBMTL sequence variant reads it).
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    structure = np.random.default_rng(1234)  # the same items are attractive in every seed
    attractive = structure.random(400) < 0.4
    liked = np.flatnonzero(attractive)

    def rows(n: int) -> pa.Table:
        users = rng.integers(0, 40, n)
        items = rng.integers(0, 400, n)
        clk = rng.random(n) < np.where(attractive[items], 0.6, 0.03)
        buy = clk & (rng.random(n) < 0.12)
        seqs = [rng.choice(liked, 3) for _ in range(n)]
        return pa.table(
            {
                "user_id": users,
                "item_id": items,
                "cate_id": items % 10,
                "occupation": users % 3,
                "click_seq__item_id": [";".join(str(s) for s in seq) for seq in seqs],
                "click_seq__cate_id": [";".join(str(s % 10) for s in seq) for seq in seqs],
                "clk": clk.astype(np.int64),
                "buy": buy.astype(np.int64),
            }
        )

    paths = {"train": str(out_dir / "train.parquet"), "eval": str(out_dir / "eval.parquet")}
    pq.write_table(rows(num_rows), paths["train"], row_group_size=500)
    pq.write_table(rows(num_eval_rows), paths["eval"])
    return paths


@pytest.fixture(scope="session")
def planted_data(tmp_path_factory) -> dict[str, str]:
    """The planted click/purchase data (seed 0), shared by the end-to-end tests."""
    return write_multitask_data(tmp_path_factory.mktemp("multitask") / "data")
