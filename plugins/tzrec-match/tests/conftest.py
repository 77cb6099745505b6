"""tzrec-match tests: planted retrieval data shared by the model tests (tiny, session-wide)."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def write_match_data(
    out_dir: Path,
    num_rows: int = 1024,
    num_eval_rows: int = 256,
    num_users: int = 150,
    num_items: int = 200,
    clusters: int = 8,
    seed: int = 0,
) -> dict[str, str]:
    """Rows whose click history determines the positive's cluster; an item table.

    Each user likes two of ``clusters`` item clusters (item ``i`` is in cluster ``i %
    clusters``); a row's history holds 3-12 items of the user's clusters and its positive is
    an item of the cluster of one of those history items. So a model reading the history
    (or memorising the user) ranks the positive's cluster first; random ranking scores
    ``k / candidates``.
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    per = num_items // clusters
    liked = [rng.choice(clusters, 2, replace=False) for _ in range(num_users)]

    def rows(n: int) -> pa.Table:
        users = rng.integers(0, num_users, n)
        hists, cats, pos = [], [], []
        for u in users:
            length = int(rng.integers(3, 13))
            hist_cluster = rng.choice(liked[u], length)
            hist = rng.integers(0, per, length) * clusters + hist_cluster
            hists.append(";".join(str(i) for i in hist))
            cats.append(";".join(str(i % clusters) for i in hist))
            pos.append(int(rng.integers(0, per)) * clusters + int(rng.choice(hist_cluster)))
        pos_arr = np.asarray(pos, dtype=np.int64)
        return pa.table(
            {
                "user_id": users,
                "age_level": (users * 7) % 10,
                "item_id": pos_arr,
                "cate_id": pos_arr % clusters,
                "brand": [f"b{i % 13}" for i in pos_arr],
                "click_seq__item_id": hists,
                "click_seq__cate_id": cats,
                "clk": np.ones(n, dtype=np.int64),
            }
        )

    paths = {
        "train": str(out_dir / "match_train.parquet"),
        "eval": str(out_dir / "match_eval.parquet"),
        "items": str(out_dir / "match_items.parquet"),
    }
    pq.write_table(rows(num_rows), paths["train"], row_group_size=256)
    pq.write_table(rows(num_eval_rows), paths["eval"])
    ids = np.arange(num_items, dtype=np.int64)
    pq.write_table(
        pa.table(
            {
                "id": ids,
                "weight": np.ones(num_items),
                "item_id": ids,
                "cate_id": ids % clusters,
                "brand": [f"b{i % 13}" for i in ids],
            }
        ),
        paths["items"],
    )
    return paths


@pytest.fixture(scope="session")
def match_data(tmp_path_factory) -> dict[str, str]:
    """The planted data of :func:`write_match_data` (seed 0)."""
    return write_match_data(tmp_path_factory.mktemp("match") / "data")
