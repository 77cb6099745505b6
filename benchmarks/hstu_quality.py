"""Retrieval quality: HSTUMatch (last- and all-position) vs SASRec, DSSM and popularity.

Datasets (same run, same protocol):

* ``synthetic`` (the documented fallback): users walk a ring of items inside their taste
  cluster (the structure ``tzrec.hstu.synthetic`` plants), ``--length`` interactions each;
* ``ml-100k``: MovieLens-100k from a file you have (``--data``: ``u.data``, recbole's
  ``ml-100k.inter`` or a recbole 1.2.1 wheel). Nothing is downloaded; without ``--data``
  the dataset is skipped with a message.

Protocol (leave-one-out with a validation item): each user's interactions in time order;
targets up to n-3 make training rows (history → next item, the last ``--targets_per_user``
of them), n-2 is the validation target, n-1 the test target. Every model is evaluated after
each epoch on n-2 and the test numbers of its best validation epoch are reported. Every
item is ranked for every user; ``filtered`` removes every item of the user's history
(strict: a target that repeats a history item is a miss, never a free hit), ``unfiltered``
ranks the whole corpus. HR@10 / NDCG@10 are averaged over users, then over ``--seeds``
seeds (± the standard error).

Models: HSTUMatch as ``docs/examples/hstu_match_kuairand.config``, with the upstream
last-position loss and with ``all_position_loss``; DSSM over user_id + the two contextual
ids vs video_id; popularity (training-interaction counts); a SASRec-style baseline written
here (:class:`SASRec`: causal self-attention, full softmax at every position). tzrec models
use Adagrad for embedding tables and Adam for the rest, sampled softmax over
``--negatives`` negatives per row.

Usage: ``uv run python benchmarks/hstu_quality.py [--datasets synthetic,ml-100k --data u.data]``
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
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


def ml100k_users(path: Path):
    """Per-user (items, timestamps, ratings) of MovieLens-100k from ``u.data``/.inter/wheel."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            raw = z.read("recbole/dataset_example/ml-100k/ml-100k.inter")
        inter = np.loadtxt(io.BytesIO(raw), skiprows=1, dtype=np.int64)
    else:
        inter = np.loadtxt(path, skiprows=1 if path.suffix == ".inter" else 0, dtype=np.int64)
    order = np.lexsort((inter[:, 3], inter[:, 0]))
    inter = inter[order]
    t0 = int(inter[:, 3].min()) - 1
    users = []
    for uid in np.unique(inter[:, 0]):
        rows = inter[inter[:, 0] == uid]
        items, ts, ratings = rows[:, 1].tolist(), (rows[:, 3] - t0).tolist(), rows[:, 2].tolist()
        users.append((int(uid), 0, 0, items, ts, ratings))
    return users, int(inter[:, 1].max()) + 1


def write_rows(users, out_dir: Path, max_len: int, targets_per_user: int):
    """Train rows (targets ≤ n-3), validation (n-2) and test (n-1) rows, example columns."""

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
            # the example config's label columns (the match loss does not read them)
            "cand_seq__action_weight": str(1 << (min(int(ratings[t]), 4) - 1)),
            "cand_seq__watch_time": str(int(ratings[t]) * 10),
            "item_id": items[t],
            "request_time": float(ts[t]),
            "label": 1,
        }

    train = []
    split = {"val": ([], [], []), "test": ([], [], [])}  # rows, targets, seen
    sequences = []  # (train items ≤ n-3, items ≤ n-2, items ≤ n-1) for SASRec / popularity
    for u, a, g, items, ts, ratings in users:
        n = len(items)
        if n < 4:
            continue
        for t in range(max(1, n - 2 - targets_per_user), n - 2):
            train.append(row(u, a, g, items, ts, ratings, t))
        for name, t in (("val", n - 2), ("test", n - 1)):
            rows, targets, seen = split[name]
            rows.append(row(u, a, g, items, ts, ratings, t))
            targets.append(items[t])
            seen.append(set(items[:t]))
        sequences.append(list(items))
    rng = np.random.default_rng(0)
    train = [train[i] for i in rng.permutation(len(train))]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: str(out_dir / f"{name}.parquet") for name in ("train", "val", "test")}
    pq.write_table(pa.Table.from_pylist(train), paths["train"])
    for name in ("val", "test"):
        pq.write_table(pa.Table.from_pylist(split[name][0]), paths[name])
    evals = {name: (split[name][1], split[name][2]) for name in ("val", "test")}
    return paths, evals, sequences


def write_items(num_items: int, path: Path) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("id:int64\tweight:float\tfeature:string\n")
        for i in range(1, num_items):
            f.write(f"{i}\t1.0\t{i}\n")
    return str(path)


# -- models -----------------------------------------------------------------------------


def hstu_config(items_path: str, batch: int, negatives: int, max_len: int, all_position: bool):
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
    config.model_config.hstu_match.all_position_loss = all_position
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


def train(config, train_path: str, args, seed: int, evaluate) -> tuple:
    """Train ``args.epochs`` epochs; ``evaluate(model)`` after each; (best-val result, steps, s)."""
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    from tzrec.core.build import build_model
    from tzrec.data import create_features
    from tzrec.data.readers.parquet import ParquetDataset

    torch.manual_seed(seed)
    features = create_features(config.feature_configs, config.data_config)
    ds = ParquetDataset(config.data_config, features, train_path, mode="train")
    model = build_model(config, ds.features)
    tables = {
        id(p)
        for m in model.modules()
        if isinstance(m, EmbeddingBagCollection | EmbeddingCollection)
        for p in m.parameters()
    }
    sparse = [p for p in model.parameters() if id(p) in tables]
    dense = [p for p in model.parameters() if id(p) not in tables]
    # as the example config: Adagrad for embedding tables, Adam for the rest
    opts = [torch.optim.Adagrad(sparse, lr=args.sparse_lr), torch.optim.Adam(dense, lr=args.lr)]
    steps, secs, best = 0, 0.0, None
    for _ in range(args.epochs):
        model.train()
        start = time.time()
        for batch in ds:
            loss = sum(model.loss(model.predict(batch), batch).values())
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()
            steps += 1
        secs += time.time() - start
        best = pick_best(best, evaluate(model))
    return best, steps, secs


def pick_best(best: dict | None, result: dict) -> dict:
    """The result with the higher validation HR@10 (filtered); the first on ties."""
    if best is None or result["val"]["filtered"]["HR@10"] > best["val"]["filtered"]["HR@10"]:
        return result
    return best


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


def ranking_metrics(scores, targets, seen, k: int = 10) -> dict[str, dict[str, float]]:
    """HR@k / NDCG@k of each user's target among all items, filtered (strict) and unfiltered.

    Ties count against the target (rank = number of items scoring at least as high, minus
    the target itself), so a constant scorer gets no hits.
    """
    scores = scores.clone().float()
    scores[:, 0] = -math.inf  # id 0 is no item
    out = {}
    target = torch.tensor(targets)
    rows = torch.arange(len(targets))
    for name in ("unfiltered", "filtered"):
        if name == "filtered":
            for row, hist in enumerate(seen):
                if hist:
                    scores[row, list(hist)] = -math.inf  # strict: the target too
        tscore = scores[rows, target]
        rank = (scores >= tscore.unsqueeze(1)).sum(dim=1) - 1
        hit = (rank < k) & torch.isfinite(tscore)
        ndcg = hit.float() / torch.log2(rank.clamp(min=0).float() + 2.0)
        out[name] = {f"HR@{k}": float(hit.float().mean()), f"NDCG@{k}": float(ndcg.mean())}
    return out


class SASRec(torch.nn.Module):
    """SASRec-style baseline: item + position embeddings, causal self-attention, tied output.

    Trained with full softmax at every position (each prefix predicts its next item).
    """

    def __init__(self, num_items: int, dim: int, max_len: int, layers: int = 2, heads: int = 2):
        super().__init__()
        self.max_len = max_len
        self.item = torch.nn.Embedding(num_items, dim, padding_idx=0)
        self.pos = torch.nn.Embedding(max_len, dim)
        layer = torch.nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.2, batch_first=True, norm_first=True
        )
        self.encoder = torch.nn.TransformerEncoder(layer, layers)
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids → (B, L, D) states (position t saw items ≤ t)."""
        length = seq.shape[1]
        x = self.item(seq) + self.pos(torch.arange(length, device=seq.device))
        mask = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        x = self.encoder(x, mask=mask, src_key_padding_mask=seq == 0)
        return self.norm(torch.nan_to_num(x))


def left_pad(seqs: list[list[int]], max_len: int) -> torch.Tensor:
    """Last ``max_len`` items of every sequence, left-padded with 0."""
    out = torch.zeros(len(seqs), max_len, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        if s:
            out[i, max_len - len(s) :] = torch.tensor(s)
    return out


def run_sasrec(sequences, num_items: int, evals, args, seed: int) -> tuple:
    """Train SASRec on items ≤ n-3 (every position), evaluate on n-2 / n-1 each epoch."""
    torch.manual_seed(seed)
    model = SASRec(num_items, args.sasrec_dim, args.max_len)
    opt = torch.optim.Adam(model.parameters(), lr=args.sasrec_lr)
    train_seqs = left_pad([s[:-2] for s in sequences], args.max_len + 1)
    inputs = {
        name: left_pad([s[: len(s) - (2 if name == "val" else 1)] for s in sequences], args.max_len)
        for name in ("val", "test")
    }
    rng = np.random.default_rng(seed)
    steps, secs, best = 0, 0.0, None
    for _ in range(args.epochs * args.sasrec_epoch_factor):
        model.train()
        start = time.time()
        for idx in np.array_split(rng.permutation(len(train_seqs)), max(1, len(train_seqs) // 64)):
            seq = train_seqs[torch.as_tensor(idx)]
            x, y = seq[:, :-1], seq[:, 1:]
            logits = model(x) @ model.item.weight.T
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, num_items), y.reshape(-1), ignore_index=0
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        secs += time.time() - start
        model.eval()
        with torch.no_grad():
            result = {}
            for name in ("val", "test"):
                scores = model(inputs[name])[:, -1] @ model.item.weight.T
                result[name] = ranking_metrics(scores, *evals[name])
        best = pick_best(best, result)
    return best, steps, secs


def popularity(sequences, num_items: int, evals) -> dict:
    """Training-interaction counts (items ≤ n-3) as every user's score."""
    counts = torch.zeros(num_items)
    for s in sequences:
        for i in s[:-2]:
            counts[i] += 1
    counts = counts + 1e-3 * torch.rand(num_items, generator=torch.Generator().manual_seed(0))
    return {
        name: ranking_metrics(counts.expand(len(evals[name][0]), -1), *evals[name])
        for name in ("val", "test")
    }


def run_dataset(name: str, users, num_items: int, args, work: Path) -> list[dict]:
    paths, evals, sequences = write_rows(users, work / name, args.max_len, args.targets_per_user)
    items_path = write_items(num_items, work / name / "items.txt")
    runs: dict[str, list] = {}
    for seed in range(args.seeds):
        for kind in args.models.split(","):
            if kind == "popularity":
                best, steps, secs = popularity(sequences, num_items, evals), 0, 0.0
            elif kind == "sasrec":
                best, steps, secs = run_sasrec(sequences, num_items, evals, args, seed)
            else:
                if kind == "dssm":
                    config = dssm_config(items_path, args.batch_size, args.negatives)
                else:
                    every = kind == "hstu_all"
                    config = hstu_config(
                        items_path, args.batch_size, args.negatives, args.max_len, every
                    )
                model_kind = "dssm" if kind == "dssm" else "hstu"

                def evaluate(model, config=config, model_kind=model_kind):
                    out = {}
                    for split in ("val", "test"):
                        u, i = embeddings(model_kind, model, config, paths[split], num_items)
                        out[split] = ranking_metrics(u @ i.T, *evals[split])
                    return out

                best, steps, secs = train(config, paths["train"], args, seed, evaluate)
            row = {"dataset": name, "model": LABELS[kind], "seed": seed, **best["test"]}
            row.update({"train_steps": steps, "train_s": round(secs, 1)})
            print(json.dumps(row), flush=True)
            runs.setdefault(kind, []).append(row)
    results = []
    for kind, rows in runs.items():
        summary = {"dataset": name, "model": LABELS[kind], "users": len(sequences)}
        for split in ("filtered", "unfiltered"):
            for metric in ("HR@10", "NDCG@10"):
                vals = np.array([r[split][metric] for r in rows])
                se = vals.std(ddof=1) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0
                summary[f"{split} {metric}"] = (float(vals.mean()), float(se))
        summary["train_steps"] = rows[0]["train_steps"]
        summary["train_s"] = round(float(np.mean([r["train_s"] for r in rows])), 1)
        results.append(summary)
    return results


LABELS = {
    "popularity": "popularity",
    "dssm": "DSSM",
    "sasrec": "SASRec (benchmarks/)",
    "hstu_last": "HSTUMatch last-position",
    "hstu_all": "HSTUMatch all-position",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="synthetic,ml-100k")
    parser.add_argument("--data", type=Path, default=None, help="ml-100k: u.data/.inter/.whl")
    parser.add_argument("--models", default=",".join(LABELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--users", type=int, default=600, help="synthetic users")
    parser.add_argument("--items", type=int, default=1200, help="synthetic items")
    parser.add_argument("--length", type=int, default=40, help="synthetic interactions/user")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--negatives", type=int, default=31)
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--targets_per_user", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--sparse_lr", type=float, default=0.5)
    parser.add_argument("--sasrec_dim", type=int, default=32)
    parser.add_argument("--sasrec_lr", type=float, default=0.003)
    parser.add_argument(
        "--sasrec_epoch_factor", type=int, default=4, help="SASRec epochs per tzrec epoch"
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="tzrec_hstu_bench_") as tmp:
        for name in args.datasets.split(","):
            if name == "synthetic":
                users, num_items = synthetic_users(args.users, args.items, length=args.length)
            elif name == "ml-100k":
                if args.data is None or not args.data.exists():
                    print("ml-100k skipped: pass --data u.data (or ml-100k.inter)", flush=True)
                    continue
                users, num_items = ml100k_users(args.data)
            else:
                raise SystemExit(f"unknown dataset {name!r}")
            results += run_dataset(name, users, num_items, args, Path(tmp))
    print(f"\nload average: {os.getloadavg()}; seeds: {args.seeds}; mean ± standard error")
    cols = [f"{s} {m}" for s in ("filtered", "unfiltered") for m in ("HR@10", "NDCG@10")]
    print("| dataset | model | " + " | ".join(cols) + " | train steps | train s |")
    print("|---" * (len(cols) + 4) + "|")
    for r in results:
        cells = " | ".join(f"{r[c][0]:.4f} ± {r[c][1]:.4f}" for c in cols)
        print(f"| {r['dataset']} | {r['model']} | {cells} | {r['train_steps']} | {r['train_s']} |")


if __name__ == "__main__":
    main()
