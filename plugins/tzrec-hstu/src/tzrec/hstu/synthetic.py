"""Synthetic KuaiRand-shaped data with planted user -> item structure, for HSTUMatch.

Writes the columns ``docs/examples/hstu_match_kuairand.config`` reads: ``user_id``,
``user_active_degree``, ``register_days_range``, the history ``uih_seq__video_id`` /
``uih_seq__action_timestamp`` / ``uih_seq__action_weight`` / ``uih_seq__watch_time``
(``|``-joined, oldest first), the positive ``cand_seq__video_id``, ``request_time`` and
``cand_seq__action_weight`` / ``cand_seq__watch_time`` (per-candidate labels, as upstream);
plus the negative sampler's item table.

Planted structure: item ``i`` belongs to taste cluster ``i % clusters``, and each cluster's
items form a ring. A user has a home cluster; their history walks that ring (mostly one
step forward, sometimes a jump within the cluster, rarely an item from another cluster), and
the next item (the positive) is the step after the last history item. A model that reads
the history ranks the positive far above random negatives; random ranking gives
recall@k = k / (1 + num_neg).

For DlrmHSTU (ranking), :func:`write_dlrm_hstu_data` writes one row per request in the
layout of ``docs/examples/dlrm_hstu_kuairand.config``: the same history columns, several
candidates per row (``cand_seq__video_id``, ``cand_seq__query_time``) and their labels
``cand_seq__action_weight`` (bitmask: 1 click, 2 like, 4 follow) and
``cand_seq__watch_time``. Planted structure: a user clicks items of their home cluster
(``user_id % clusters``, which also shows in ``user_active_degree`` and in the history) far
more often than others, and "popular" items (``(i // clusters) % 2 == 0``) more often than
the rest; they like clicked items that are "likeable" (``(i // clusters) % 3 == 0``).
Random scoring gives AUC 0.5.

Usage::

    python -m tzrec.hstu.synthetic OUT_DIR [--num_rows N] [--seed S] [--dlrm]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BASE_TIME = 1_000_000  # seconds; small enough to be exact in float32


def _rows(
    rng: np.random.Generator,
    n: int,
    num_users: int,
    num_items: int,
    clusters: int,
    max_history: int,
    empty_fraction: float,
) -> pa.Table:
    per_cluster = num_items // clusters
    users = rng.integers(0, num_users, n)
    home = users % clusters
    cols: dict[str, list] = {
        k: []
        for k in (
            "uih_seq__video_id",
            "uih_seq__action_timestamp",
            "uih_seq__action_weight",
            "uih_seq__watch_time",
            "cand_seq__video_id",
            "cand_seq__action_weight",
            "cand_seq__watch_time",
            "request_time",
        )
    }
    for u in range(n):
        c = int(home[u])
        length = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_history + 1))
        pos = int(rng.integers(0, per_cluster))
        items, ts = [], []
        t = BASE_TIME + int(rng.integers(0, 1_000_000))
        for _ in range(length):
            r = rng.random()
            if r < 0.1:
                items.append(int(rng.integers(0, num_items)))  # noise: any item
            else:
                if r < 0.25:
                    pos = int(rng.integers(0, per_cluster))  # jump within the cluster
                else:
                    pos = (pos + 1) % per_cluster
                items.append(pos * clusters + c)
            t += int(rng.integers(10, 3600))
            ts.append(t)
        nxt = (pos + 1) % per_cluster
        actions = rng.integers(1, 16, length)
        watch = rng.integers(1, 120, length)
        cols["uih_seq__video_id"].append("|".join(map(str, items)))
        cols["uih_seq__action_timestamp"].append("|".join(map(str, ts)))
        cols["uih_seq__action_weight"].append("|".join(map(str, actions)))
        cols["uih_seq__watch_time"].append("|".join(map(str, watch)))
        cols["cand_seq__video_id"].append(str(nxt * clusters + c))
        cols["request_time"].append(float(t + int(rng.integers(1, 600))))
    # one label per candidate, as KuaiRand's candidate sequences carry them (drawn from
    # their own generator so the planted histories do not depend on them)
    label_rng = np.random.default_rng(n)
    cols["cand_seq__action_weight"] = [str(v) for v in label_rng.integers(1, 16, n)]
    cols["cand_seq__watch_time"] = [str(v) for v in label_rng.integers(1, 120, n)]
    return pa.table(
        {
            "user_id": users,
            "user_active_degree": users % 8,
            "register_days_range": (users // 8) % 8,
            **{k: v for k, v in cols.items()},
        }
    )


def write_hstu_data(
    out_dir: Path,
    num_rows: int = 4000,
    num_eval_rows: int = 1000,
    num_users: int = 500,
    num_items: int = 1200,
    clusters: int = 12,
    max_history: int = 24,
    empty_fraction: float = 0.02,
    seed: int = 0,
) -> dict[str, str]:
    """Write train/eval parquet files and the item table; return their paths.

    Returns:
        ``{"train": ..., "eval": ..., "items": ...}``.
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "train": str(out_dir / "kuairand_match_train.parquet"),
        "eval": str(out_dir / "kuairand_match_eval.parquet"),
        "items": str(out_dir / "kuairand_match_items.parquet"),
    }
    args = (num_users, num_items, clusters, max_history, empty_fraction)
    pq.write_table(_rows(rng, num_rows, *args), paths["train"], row_group_size=500)
    pq.write_table(_rows(rng, num_eval_rows, *args), paths["eval"], row_group_size=500)
    # one row per item: the sampler's node table (id, weight, attribute columns) and the
    # input of the exported item tower (its scalar view reads ``video_id``)
    ids = np.arange(num_items, dtype=np.int64)
    items = pa.table({"id": ids, "weight": np.ones(num_items), "video_id": ids})
    pq.write_table(items, paths["items"])
    return paths


CLICK, LIKE, FOLLOW = 1, 2, 4


def _candidate_actions(
    rng: np.random.Generator, items: np.ndarray, home: int, clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Action bitmasks and watch times (seconds) of items shown to a user of cluster home."""
    at_home = (items % clusters) == home
    popular = ((items // clusters) % 2) == 0
    clicked = rng.random(items.shape[0]) < 0.05 + 0.55 * at_home + 0.3 * popular
    likeable = ((items // clusters) % 3) == 0
    liked = clicked & (rng.random(items.shape[0]) < np.where(likeable, 0.8, 0.05))
    follow = rng.random(items.shape[0]) < 0.05
    actions = clicked * CLICK | liked * LIKE | follow * FOLLOW
    watch = np.where(
        clicked, rng.integers(30, 120, items.shape[0]), rng.integers(1, 20, items.shape[0])
    )
    return actions.astype(np.int64), watch.astype(np.int64)


def _dlrm_rows(
    rng: np.random.Generator,
    n: int,
    num_users: int,
    num_items: int,
    clusters: int,
    max_history: int,
    max_candidates: int,
    empty_fraction: float,
    full_length: bool = False,
) -> pa.Table:
    users = rng.integers(0, num_users, n)
    names = (
        "uih_seq__video_id",
        "uih_seq__action_timestamp",
        "uih_seq__action_weight",
        "uih_seq__watch_time",
        "cand_seq__video_id",
        "cand_seq__query_time",
        "cand_seq__action_weight",
        "cand_seq__watch_time",
    )
    cols: dict[str, list[str]] = {k: [] for k in names}

    def shown(k: int, home: int) -> np.ndarray:
        """``k`` items: half from the home cluster, half from anywhere."""
        own = rng.integers(0, num_items // clusters, k) * clusters + home
        return np.where(rng.random(k) < 0.5, own, rng.integers(0, num_items, k))

    for u in range(n):
        home = int(users[u] % clusters)
        length = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_history + 1))
        length = max_history if full_length else length
        items = shown(length, home)
        actions, watch = _candidate_actions(rng, items, home, clusters)
        ts = BASE_TIME + np.cumsum(rng.integers(10, 3600, length)) + int(rng.integers(0, 10**6))
        query = int(ts[-1]) + int(rng.integers(1, 600)) if length else BASE_TIME + 10**6
        k = max_candidates if full_length else int(rng.integers(1, max_candidates + 1))
        cands = shown(k, home)
        cand_actions, cand_watch = _candidate_actions(rng, cands, home, clusters)
        for key, values in (
            ("uih_seq__video_id", items),
            ("uih_seq__action_timestamp", ts),
            ("uih_seq__action_weight", actions),
            ("uih_seq__watch_time", watch),
            ("cand_seq__video_id", cands),
            ("cand_seq__query_time", [query] * k),
            ("cand_seq__action_weight", cand_actions),
            ("cand_seq__watch_time", cand_watch),
        ):
            cols[key].append("|".join(map(str, values)))
    return pa.table(
        {
            "user_id": users,
            "user_active_degree": users % 8,
            "follow_user_num_range": (users // 8) % 9,
            "fans_user_num_range": (users // 72) % 9,
            "friend_user_num_range": (users // 3) % 8,
            "register_days_range": (users // 8) % 8,
            **cols,
        }
    )


def write_dlrm_hstu_data(
    out_dir: Path,
    num_rows: int = 4000,
    num_eval_rows: int = 1000,
    num_users: int = 200,
    num_items: int = 240,
    clusters: int = 4,
    max_history: int = 16,
    max_candidates: int = 6,
    empty_fraction: float = 0.05,
    seed: int = 0,
    full_length: bool = False,
) -> dict[str, str]:
    """Write DlrmHSTU train/eval parquet files (module doc); return their paths.

    ``full_length``: every history has ``max_history`` items and every request
    ``max_candidates`` candidates (benchmarks); otherwise lengths are drawn per row.

    Returns:
        ``{"train": ..., "eval": ...}``.
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "train": str(out_dir / "kuairand_rank_train.parquet"),
        "eval": str(out_dir / "kuairand_rank_eval.parquet"),
    }
    args = (num_users, num_items, clusters, max_history, max_candidates, empty_fraction)
    for key, n in (("train", num_rows), ("eval", num_eval_rows)):
        table = _dlrm_rows(rng, n, *args, full_length=full_length)
        pq.write_table(table, paths[key], row_group_size=500)
    return paths


def main(argv: list[str] | None = None) -> None:
    """CLI: write the data under OUT_DIR and print the paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--num_rows", type=int, default=4000)
    parser.add_argument("--num_eval_rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dlrm", action="store_true", help="ranking data for dlrm_hstu (no item table)"
    )
    args = parser.parse_args(argv)
    write = write_dlrm_hstu_data if args.dlrm else write_hstu_data
    paths = write(
        args.out_dir, num_rows=args.num_rows, num_eval_rows=args.num_eval_rows, seed=args.seed
    )
    for k, v in paths.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
