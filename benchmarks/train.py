"""Training throughput of the engine vs a minimal loop over pre-made batches (same run).

DSSM with 10 id features (5 user, 5 item), batch 1024, a negative sampler, on a generated
parquet file (default 1M rows). Two measurements in one process:

* ``engine``: ``train_and_evaluate`` end to end for ``--steps`` steps, data loading
  (reader workers, parsing, negative sampling) included;
* ``loop``: the same model, sharding and optimizers, stepping over batches that were read
  into memory beforehand (no data loading, no progress, no summaries).

The ratio engine/loop is the engine's efficiency; the issue's target is >= 0.7.
Usage: ``uv run python benchmarks/train.py [--rows 1000000] [--steps 200] [--workers 2]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

USER = ["user_id", "age_level", "gender", "city", "device"]
ITEM = ["item_id", "cate_id", "brand", "shop_id", "price_level"]
BUCKETS = {
    "user_id": 100_000,
    "age_level": 10,
    "gender": 3,
    "city": 400,
    "device": 50,
    "item_id": 100_000,
    "cate_id": 1_000,
    "brand": 5_000,
    "shop_id": 20_000,
    "price_level": 20,
}


def make_data(root: Path, rows: int, items: int = 100_000) -> dict[str, str]:
    """Write the training parquet (row groups of 64k rows) and the sampler's item table."""
    rng = np.random.default_rng(0)
    item_attrs = {name: rng.integers(0, BUCKETS[name], items) for name in ITEM if name != "item_id"}
    item_ids = rng.integers(0, items, rows)
    cols = {name: rng.integers(0, BUCKETS[name], rows) for name in USER}
    cols["item_id"] = item_ids
    for name, values in item_attrs.items():
        cols[name] = values[item_ids]
    cols["clk"] = np.ones(rows, dtype=np.int64)
    train = root / "train.parquet"
    pq.write_table(pa.table(cols), train, row_group_size=65_536)
    table = root / "items.txt"
    with open(table, "w", encoding="utf-8") as f:
        f.write("id:int64\tweight:float\tfeature:string\n")
        attrs = np.stack([np.arange(items)] + [item_attrs[n] for n in ITEM[1:]], axis=1)
        f.writelines(f"{i}\t1.0\t{chr(2).join(map(str, row))}\n" for i, row in enumerate(attrs))
    return {"train": str(train), "items": str(table)}


def config_text(paths: dict[str, str], model_dir: Path, batch: int, workers: int) -> str:
    """A DSSM pipeline config over the generated columns."""
    feats = "\n".join(
        f'feature_configs {{ id_feature {{ feature_name: "{n}" num_buckets: {BUCKETS[n]} '
        f"embedding_dim: 16 }} }}"
        for n in USER + ITEM
    )
    attrs = ", ".join(f'"{n}"' for n in ITEM)
    return f"""
train_input_path: "{paths["train"]}"
eval_input_path: "{paths["train"]}"
model_dir: "{model_dir}"
train_config {{
  sparse_optimizer {{ adagrad_optimizer {{ lr: 0.01 }} constant_learning_rate {{}} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.001 }} constant_learning_rate {{}} }}
  num_epochs: 1
  save_checkpoints_steps: 1000000
  use_tensorboard: false
}}
data_config {{
  batch_size: {batch}
  dataset_type: ParquetDataset
  label_fields: "clk"
  num_workers: {workers}
  negative_sampler {{
    input_path: "{paths["items"]}"
    num_sample: 128
    attr_fields: [{attrs}]
    item_id_field: "item_id"
    attr_delimiter: "\\x02"
  }}
}}
{feats}
model_config {{
  feature_groups {{ group_name: "user" feature_names: [{", ".join(f'"{n}"' for n in USER)}]
                    group_type: DEEP }}
  feature_groups {{ group_name: "item" feature_names: [{attrs}] group_type: DEEP }}
  dssm {{
    user_tower {{ input: "user" mlp {{ hidden_units: [256, 128] }} }}
    item_tower {{ input: "item" mlp {{ hidden_units: [256, 128] }} }}
    output_dim: 64
    temperature: 0.05
  }}
  losses {{ softmax_cross_entropy {{}} }}
}}
"""


def main() -> None:
    """Run both measurements and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from tzrec.core import build
    from tzrec.core.config import parse_pipeline_config
    from tzrec.core.engine import distributed, engine, loop

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="tzrec_bench_train_"))
    t0 = time.perf_counter()
    paths = make_data(root, args.rows)
    print(f"data: {args.rows} rows in {time.perf_counter() - t0:.1f}s under {root}")

    # -- engine, end to end (train only: no eval input pass, no checkpoints until the end)
    config = parse_pipeline_config(config_text(paths, root / "engine", args.batch, args.workers))
    config.train_config.num_steps = args.steps + loop.WARMUP_STEPS
    config.ClearField("eval_input_path")
    t0 = time.perf_counter()
    result = loop.train_and_evaluate(config)
    engine_wall = time.perf_counter() - t0
    engine_sps = (result["steady_steps_per_second"] or result["steps_per_second"]) * args.batch
    engine_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # the loop reads nothing: give it every core

    # -- minimal loop over pre-made batches, same model/sharding/optimizers
    config = parse_pipeline_config(config_text(paths, root / "loop", args.batch, 0))
    device = distributed.init_distributed()
    features = build.create_features(config)
    ds = build.build_dataset(config, features, config.train_input_path, "train")
    batches = []
    for batch in ds:
        batches.append(batch)
        if len(batches) >= args.steps + args.warmup:
            break
    trained = engine.Engine(config, build.build_model(config, ds.features), device, True)
    for batch in batches[: args.warmup]:
        trained.train_step(batch)
    t0 = time.perf_counter()
    for batch in batches[args.warmup :]:
        trained.dmp.train()
        trained.optimizer.zero_grad()
        loss, _ = trained.dmp(batch)
        loss.backward()
        trained.optimizer.step()
    loop_sps = len(batches[args.warmup :]) * args.batch / (time.perf_counter() - t0)

    rows = [
        (f"engine ({args.workers} readers, {engine_threads} threads)", engine_sps),
        (f"minimal loop (in memory, {args.threads} threads)", loop_sps),
    ]
    print(f"\nDSSM, batch {args.batch}, 10 id features, 128 sampled negatives")
    print(f"{'':34s} {'samples/s':>10s}")
    for name, sps in rows:
        print(f"{name:34s} {sps:10.0f}")
    print(f"{'engine / loop':34s} {engine_sps / loop_sps:10.2f}   (target >= 0.70)")
    print(f"engine wall time incl. start-up: {engine_wall:.1f}s; data stats {result['data']}")
    print(json.dumps({"engine_sps": engine_sps, "loop_sps": loop_sps}))


if __name__ == "__main__":
    main()
