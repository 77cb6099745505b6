"""Retrieval quality: HSTUMatch vs a DSSM baseline, leave-one-out, full-corpus ranking.

Datasets (same run, same protocol):

* ``synthetic``: users walk a ring of items inside their taste cluster (the structure
  ``tzrec.hstu.synthetic`` plants), 40 interactions each;
* ``ml-100k``: MovieLens-100k, read from the atomic files inside the recbole 1.2.1 wheel
  (``pip download --no-deps recbole==1.2.1`` into ``--cache_dir``; the wheel is cached there,
  the data is never written into the repository). Skipped with a message if unavailable.

Protocol: each user's interactions in time order; the last one is the test target, earlier
ones make training rows (history → next item; the last ``--targets_per_user`` targets of
each user). Every item is ranked for every user, items of the user's history are filtered
out, and HR@10 / NDCG@10 are averaged over users.

Both models are trained in-process (Adagrad for embedding tables, Adam for the rest):
HSTUMatch as ``docs/examples/hstu_match_kuairand.config``; DSSM over user_id + the two
contextual ids (user tower) and video_id (item tower); sampled softmax over
``--negatives`` negatives per row.

Usage: ``uv run python benchmarks/hstu_quality.py [--datasets synthetic,ml-100k]``
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

REPO = Path(__file__).resolve().parent.parent
HSTU_CONFIG = REPO / "docs" / "examples" / "hstu_match_kuairand.config"

DSSM_MODEL = """
feature_groups { group_name: "user" group_type: DEEP
  feature_names: ["user_id", "user_active_degree", "register_days_range"] }
feature_groups { group_name: "item" group_type: DEEP feature_names: "item_id" }
dssm {
  user_tower { input: "user" mlp { hidden_units: [64, 32] } }
  item_tower { input: "item" mlp { hidden_units: [64, 32] } }
  output_dim: 16
  similarity: COSINE
  temperature: 0.05
}
losses { softmax_cross_entropy {} }
"""


# -- data -------------------------------------------------------------------------------


def synthetic_users(num_users=600, num_items=1200, clusters=12, length=40, seed=0):
    """Per-user (items, timestamps, ratings) with ring walks inside a home cluster."""
    rng = np.random.default_rng(seed)
    per = num_items // clusters
    users = []
    for u in range(num_users):
        c = u % clusters
        pos = int(rng.integers(0, per))
        items, ts, t = [], [], 1_000_000 + int(rng.integers(0, 10**6))
        for _ in range(length):
            r = rng.random()
            if r < 0.1:
                items.append(int(rng.integers(0, num_items)))
            else:
                pos = int(rng.integers(0, per)) if r < 0.25 else (pos + 1) % per
                items.append(pos * clusters + c)
            t += int(rng.integers(10, 3600))
            ts.append(t)
        users.append((u, u % 8, (u // 8) % 8, items, ts, list(rng.integers(1, 6, length))))
    return users, num_items


def ml100k_users(cache_dir: Path):
    """Per-user interactions of MovieLens-100k from the recbole wheel (downloaded once)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = list(cache_dir.glob("recbole-1.2.1-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "recbole==1.2.1"]
        subprocess.run([*cmd, "-d", str(cache_dir)], check=True, capture_output=True)
        wheels = list(cache_dir.glob("recbole-1.2.1-*.whl"))
    root = "recbole/dataset_example/ml-100k/"
    with zipfile.ZipFile(wheels[0]) as z:
        inter = np.loadtxt(io.BytesIO(z.read(root + "ml-100k.inter")), skiprows=1, dtype=np.int64)
        user_lines = z.read(root + "ml-100k.user").decode().splitlines()[1:]
    attrs = {}
    for line in user_lines:
        uid, age, gender, _occ, _zip = line.split("\t")
        attrs[int(uid)] = (min(int(age) // 10, 7), 1 if gender == "M" else 0)
    order = np.lexsort((inter[:, 3], inter[:, 0]))
    inter = inter[order]
    t0 = int(inter[:, 3].min()) - 1
    users = []
    for uid in np.unique(inter[:, 0]):
        rows = inter[inter[:, 0] == uid]
        a, g = attrs[int(uid)]
        users.append(
            (int(uid), a, g, rows[:, 1].tolist(), (rows[:, 3] - t0).tolist(), rows[:, 2].tolist())
        )
    return users, int(inter[:, 1].max()) + 1


def write_rows(users, out_dir: Path, max_len: int, targets_per_user: int):
    """Train rows (history → next) and one test row per user, in the example's columns."""

    def row(u, a, g, items, ts, ratings, t):
        lo = max(0, t - max_len)
        hist = slice(lo, t)
        acts = [1 << (min(int(r), 4) - 1) for r in ratings[hist]]
        return {
            "user_id": u,
            "user_active_degree": a,
            "register_days_range": g,
            "uih_seq__video_id": "|".join(map(str, items[hist])),
            "uih_seq__action_timestamp": "|".join(map(str, ts[hist])),
            "uih_seq__action_weight": "|".join(map(str, acts)),
            "uih_seq__watch_time": "|".join(str(int(r) * 10) for r in ratings[hist]),
            "cand_seq__video_id": str(items[t]),
            "item_id": items[t],
            "request_time": float(ts[t]),
            "label": 1,
        }

    train, test, seen = [], [], []
    for u, a, g, items, ts, ratings in users:
        n = len(items)
        if n < 3:
            continue
        for t in range(max(1, n - 1 - targets_per_user), n - 1):
            train.append(row(u, a, g, items, ts, ratings, t))
        test.append(row(u, a, g, items, ts, ratings, n - 1))
        seen.append(set(items[: n - 1]))
    rng = np.random.default_rng(0)
    train = [train[i] for i in rng.permutation(len(train))]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"train": str(out_dir / "train.parquet"), "test": str(out_dir / "test.parquet")}
    pq.write_table(pa.Table.from_pylist(train), paths["train"])
    pq.write_table(pa.Table.from_pylist(test), paths["test"])
    return paths, [r["item_id"] for r in test], seen


def write_items(num_items: int, path: Path) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("id:int64\tweight:float\tfeature:string\n")
        for i in range(1, num_items):
            f.write(f"{i}\t1.0\t{i}\n")
    return str(path)


# -- models -----------------------------------------------------------------------------


def hstu_config(items_path: str, batch: int, negatives: int, max_len: int):
    from tzrec.core.config import load_pipeline_config

    config = load_pipeline_config(str(HSTU_CONFIG))
    config.data_config.batch_size = batch
    config.data_config.negative_sampler.input_path = items_path
    config.data_config.negative_sampler.num_sample = batch * negatives
    for fc in config.feature_configs:
        if fc.WhichOneof("feature") == "sequence_feature":
            seq = fc.sequence_feature
            seq.sequence_length = max_len if seq.sequence_name == "uih_seq" else 1 + negatives
    config.model_config.hstu_match.user_tower.max_seq_len = max_len
    return config


def dssm_config(items_path: str, batch: int, negatives: int):
    from google.protobuf import text_format

    from tzrec.core.config import load_pipeline_config
    from tzrec.protos import model_pb2

    config = load_pipeline_config(str(HSTU_CONFIG))
    config.data_config.batch_size = batch
    sampler = config.data_config.negative_sampler
    sampler.input_path = items_path
    sampler.num_sample = negatives
    sampler.item_id_field = "item_id"
    sampler.attr_fields[:] = ["item_id"]
    keep = [f for f in config.feature_configs if f.WhichOneof("feature") == "id_feature"]
    del config.feature_configs[:]
    config.feature_configs.extend(keep)
    item = config.feature_configs.add().id_feature
    item.feature_name, item.embedding_dim, item.num_buckets = "item_id", 16, 100000
    config.model_config.CopyFrom(text_format.Parse(DSSM_MODEL, model_pb2.ModelConfig()))
    return config


def train(config, train_path: str, epochs: int, lr: float, sparse_lr: float) -> tuple:
    from tzrec.core.build import build_model
    from tzrec.data import create_features
    from tzrec.data.readers.parquet import ParquetDataset

    torch.manual_seed(0)
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, train_path, mode="train")
    model = build_model(config, ds.features)
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    tables = {
        id(p)
        for m in model.modules()
        if isinstance(m, EmbeddingBagCollection | EmbeddingCollection)
        for p in m.parameters()
    }
    sparse = [p for p in model.parameters() if id(p) in tables]
    dense = [p for p in model.parameters() if id(p) not in tables]
    # as the example config: Adagrad for embedding tables, Adam for the rest
    opts = [torch.optim.Adagrad(sparse, lr=sparse_lr), torch.optim.Adam(dense, lr=lr)]
    model.train()
    steps, start = 0, time.time()
    for _ in range(epochs):
        for batch in ds:
            loss = sum(model.loss(model.predict(batch), batch).values())
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()
            steps += 1
    return model, steps, time.time() - start


def _table(module, name: str) -> torch.Tensor:
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    for m in module.modules():
        if isinstance(m, EmbeddingCollection) and name in m.embeddings:
            return m.embeddings[name].weight
        if isinstance(m, EmbeddingBagCollection) and name in m.embedding_bags:
            return m.embedding_bags[name].weight
    raise KeyError(name)


@torch.no_grad()
def embeddings(kind: str, model, config, test_path: str, num_items: int):
    """(users, D) for the test rows and (num_items, D) for every item."""
    import torch.nn.functional as F

    from tzrec.data import create_features
    from tzrec.data.readers.parquet import ParquetDataset

    model.eval()
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, test_path, mode="predict")
    ids = torch.arange(num_items)
    users = []
    for batch in ds:
        if kind == "hstu":
            users.append(model.user_embedding(model.embedding_group(batch)))
        else:
            users.append(model.user_tower(batch))
    if kind == "hstu":
        items = model.item_embedding({"candidate.sequence": _table(model, "video_id_emb")[ids]})
    else:
        tower = model.item_tower
        x = _table(tower, "item_id_emb")[ids]
        x = tower.output(tower.mlp(x))
        items = F.normalize(x, p=2.0, dim=1) if tower.normalize else x
    return torch.cat(users), items


def ranking_metrics(users, items, targets, seen, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of each user's target among all items, history filtered."""
    scores = users @ items.T
    scores[:, 0] = -math.inf  # id 0 is no item
    for row, hist in enumerate(seen):
        hist = [i for i in hist if i != targets[row]]
        if hist:
            scores[row, hist] = -math.inf
    target = torch.tensor(targets)
    tscore = scores[torch.arange(len(targets)), target]
    rank = (scores > tscore.unsqueeze(1)).sum(dim=1)  # 0-based
    hit = (rank < k).float()
    ndcg = hit / torch.log2(rank.float() + 2.0)
    return {f"HR@{k}": float(hit.mean()), f"NDCG@{k}": float(ndcg.mean())}


def run_dataset(name: str, users, num_items: int, args, work: Path) -> list[dict]:
    paths, targets, seen = write_rows(users, work / name, args.max_len, args.targets_per_user)
    items_path = write_items(num_items, work / name / "items.txt")
    results = []
    for kind in ("hstu", "dssm"):
        if kind == "hstu":
            config = hstu_config(items_path, args.batch_size, args.negatives, args.max_len)
        else:
            config = dssm_config(items_path, args.batch_size, args.negatives)
        model, steps, secs = train(config, paths["train"], args.epochs, args.lr, args.sparse_lr)
        u, i = embeddings(kind, model, config, paths["test"], num_items)
        metrics = ranking_metrics(u, i, targets, seen)
        row = {"dataset": name, "model": "HSTUMatch" if kind == "hstu" else "DSSM", **metrics}
        row.update({"train_steps": steps, "train_s": round(secs, 1), "users": len(targets)})
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="synthetic,ml-100k")
    parser.add_argument("--cache_dir", type=Path, default=Path.home() / ".cache" / "tzrec-bench")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--negatives", type=int, default=31)
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--targets_per_user", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--sparse_lr", type=float, default=0.5)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="tzrec_hstu_bench_") as tmp:
        for name in args.datasets.split(","):
            if name == "synthetic":
                users, num_items = synthetic_users()
            elif name == "ml-100k":
                try:
                    users, num_items = ml100k_users(args.cache_dir)
                except (OSError, subprocess.CalledProcessError, zipfile.BadZipFile) as err:
                    print(f"ml-100k skipped: {err}", flush=True)
                    continue
            else:
                raise SystemExit(f"unknown dataset {name!r}")
            results += run_dataset(name, users, num_items, args, Path(tmp))
    print("\n| dataset | model | HR@10 | NDCG@10 | train steps | train s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['dataset']} | {r['model']} | {r['HR@10']:.4f} | {r['NDCG@10']:.4f} | "
            f"{r['train_steps']} | {r['train_s']} |"
        )


if __name__ == "__main__":
    main()
