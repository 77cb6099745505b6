"""tzrec-multitask tests: planted two-task data (click and a rare purchase) and helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

CONFIGS = Path(__file__).resolve().parent / "configs"


def write_multitask_data(
    out_dir: Path, num_rows: int = 2000, num_eval_rows: int = 1000, seed: int = 0
) -> dict[str, str]:
    """Clicks and rare purchases that share one signal: the item's attractiveness.

    40% of the 400 items are attractive (clicked with p 0.6, others 0.03); half the items
    are good, and a click on a good item becomes a purchase with p 0.3, so purchases are
    rare (~4%, about one per attractive good item in training). Learnt alone, which items
    sell is barely visible; the click task shows which items are attractive, and a model
    whose tasks share the item representation ranks purchases by it. ``occupation``
    (0..2, a domain) is ``user_id % 3``; ``click_seq`` lists the user's attractive items
    (the DBMTL sequence variant reads it).
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    structure = np.random.default_rng(1234)  # the same items are attractive/good in every seed
    attractive = structure.random(400) < 0.4
    good = structure.random(400) < 0.5
    liked = np.flatnonzero(attractive)

    def rows(n: int) -> pa.Table:
        users = rng.integers(0, 40, n)
        items = rng.integers(0, 400, n)
        clk = rng.random(n) < np.where(attractive[items], 0.6, 0.03)
        buy = clk & good[items] & (rng.random(n) < 0.3)
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


def data_edits(paths: dict[str, str], model_dir: Path, **extra: object) -> str:
    """``--edit_config_json`` pointing a test config at generated data and a model_dir."""
    edits = {
        "train_input_path": paths["train"],
        "eval_input_path": paths["eval"],
        "model_dir": str(model_dir),
    }
    edits.update(extra)
    return json.dumps(edits)
