"""Export benchmark: exported vs eager HSTUMatch user tower, item embedding, faiss IVF.

    uv run python benchmarks/export.py [--items 100000] [--history 200] [--repeats 20]

Builds HSTUMatch from docs/examples/hstu_match_kuairand.config (histories up to
``--history``; random weights: latency and index recall do not depend on training) on
synthetic KuaiRand-shaped data, exports both towers (TorchScript and AOT) and reports:

1. user-tower latency at batch 1 and 256 (median of ``--repeats``, real rows from the eval
   file): the eager model on its training path (torchrec lookups + jagged attention), the
   exported TorchScript artefact and the AOT (torch.export) artefact;
2. item-table embedding throughput (items/s) with the exported item tower, model only and
   end to end through ``tzrec predict`` (read parquet, embed, write parquet);
3. faiss IVF vs flat: share of the exact (flat) top-K that IVF returns, per nprobe, and the
   search time.

Run it on a quiet machine: with 2 cores a concurrent process distorts every number.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timing import median_ms

from tzrec.core.build import build_model
from tzrec.core.config import load_pipeline_config
from tzrec.data import create_features
from tzrec.data.readers.parquet import ParquetDataset
from tzrec.export.artifact import load_exported
from tzrec.export.exporter import sample_inputs, target_config, write_artefact
from tzrec.export.predict import predict
from tzrec.export.retrieval import build_index
from tzrec.export.wrappers import export_modules
from tzrec.hstu.synthetic import write_hstu_data
from tzrec.models.inference import inputs_from_batch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "hstu_match_kuairand.config"


def main() -> None:
    # every measurement uses all cores (the engine would drop busy ones): run on a quiet box
    os.environ.setdefault("TZREC_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    torch.set_num_threads(int(os.environ["TZREC_NUM_THREADS"]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--top_k", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="tzrec_export_bench_"))
    paths = write_hstu_data(
        work / "data",
        num_rows=1000,
        num_eval_rows=2000,
        num_items=args.items,
        max_history=args.history,
    )
    config = load_pipeline_config(str(EXAMPLE))
    config.train_input_path = paths["train"]
    config.eval_input_path = paths["eval"]
    config.data_config.negative_sampler.input_path = paths["items"]
    for fc in config.feature_configs:
        if fc.WhichOneof("feature") == "sequence_feature":
            if fc.sequence_feature.sequence_name == "uih_seq":
                fc.sequence_feature.sequence_length = args.history
    config.model_config.hstu_match.user_tower.max_seq_len = args.history
    features = create_features(config.feature_configs, config.data_config)
    train_ds = ParquetDataset(config.data_config, features, paths["train"], mode="train")
    model = build_model(config, train_ds.features)
    model.eval()
    model.set_is_inference(True)
    user, item = export_modules(model)
    print(f"work dir {work}; torch threads {torch.get_num_threads()}")

    # -- 1. user tower latency ---------------------------------------------------------
    dirs = {}
    for fmt in ("torchscript", "aot"):
        for module in (user, item):
            target = work / fmt / module.name
            target.mkdir(parents=True)
            cfg = target_config(config, module)
            source = paths["items"] if module is item else paths["eval"]
            start = time.perf_counter()
            write_artefact(module, cfg, sample_inputs(cfg, source), target, fmt == "aot", work)
            took = time.perf_counter() - start
            print(f"export {module.name:10s} {fmt:11s} {took:6.1f} s")
            dirs[(fmt, module.name)] = target
    ts_user = load_exported(dirs[("torchscript", "user_tower")])
    aot_user = load_exported(dirs[("aot", "user_tower")])
    print("\nuser tower latency, ms (median)")
    print(f"{'batch':>6} {'mean hist':>9} {'eager':>9} {'torchscript':>12} {'aot':>9}")
    for batch_size in (1, 256):
        config.data_config.batch_size = batch_size
        eval_ds = ParquetDataset(config.data_config, features, paths["eval"], mode="eval")
        batch = next(iter(eval_ds))
        inputs = inputs_from_batch(batch, user.features)
        hist = float(inputs["uih_seq__video_id.lengths"].float().mean())

        def eager(batch=batch):
            with torch.no_grad():
                model.user_embedding(model.embedding_group(batch))

        row = [median_ms(eager, args.repeats)]
        row.append(median_ms(lambda x=inputs: ts_user(x), args.repeats))
        row.append(median_ms(lambda x=inputs: aot_user(x), args.repeats))
        print(f"{batch_size:6d} {hist:9.1f} {row[0]:9.2f} {row[1]:12.2f} {row[2]:9.2f}")

    # -- 2. item embedding throughput ----------------------------------------------------
    ts_item = load_exported(dirs[("torchscript", "item_tower")])
    ids = torch.arange(args.items, dtype=torch.int64)
    inputs = {"video_id.values": ids, "video_id.lengths": torch.ones_like(ids)}
    start = time.perf_counter()
    items = ts_item(inputs)["item_tower_emb"]
    model_rate = args.items / (time.perf_counter() - start)
    start = time.perf_counter()
    stats = predict(
        str(dirs[("torchscript", "item_tower")]),
        paths["items"],
        str(work / "items_emb.parquet"),
        reserved_columns=["video_id"],
        batch_size=8192,
        num_workers=0,
    )
    e2e_rate = stats["rows_out"] / (time.perf_counter() - start)
    print(
        f"\nitem embedding: {args.items} items, model only {model_rate:,.0f} items/s, "
        f"tzrec predict end to end {e2e_rate:,.0f} items/s"
    )

    # -- 3. faiss IVF vs flat -------------------------------------------------------------
    item_np = np.ascontiguousarray(items.numpy(), dtype=np.float32)
    config.data_config.batch_size = 2000
    eval_ds = ParquetDataset(config.data_config, features, paths["eval"], mode="eval")
    users = ts_user(inputs_from_batch(next(iter(eval_ds)), user.features))["user_tower_emb"]
    users_np = np.ascontiguousarray(users.numpy(), dtype=np.float32)
    k = args.top_k
    flat = build_index(item_np, "flat")
    start = time.perf_counter()
    _, exact = flat.search(users_np, k)
    flat_ms = (time.perf_counter() - start) * 1e3 / len(users_np)
    print(f"\nfaiss, {len(users_np)} queries, top {k} of {args.items} items")
    print(f"{'index':>14} {'recall vs flat':>15} {'ms/query':>9}")
    print(f"{'flat':>14} {1.0:15.3f} {flat_ms:9.3f}")
    nlist = max(1, int(np.sqrt(args.items)))
    for nprobe in (1, 4, 16, 64):
        ivf = build_index(item_np, "ivf", nlist=nlist, nprobe=nprobe)
        start = time.perf_counter()
        _, approx = ivf.search(users_np, k)
        ms = (time.perf_counter() - start) * 1e3 / len(users_np)
        overlap = np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact, strict=True)])
        print(f"{f'ivf {nlist}/{nprobe}':>14} {overlap:15.3f} {ms:9.3f}")


if __name__ == "__main__":
    main()
