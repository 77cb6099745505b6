"""DlrmHSTU benchmark: training samples/s and exported-model latency on CPU (PYTORCH kernel).

    uv run python benchmarks/dlrm_hstu.py [--history 200] [--candidates 10] [--steps 30]

1. training: ``tzrec train`` on synthetic ranking data (docs/examples/dlrm_hstu_kuairand
   .config, histories up to ``--history``, ``--candidates`` per request), samples/s =
   requests/s and candidates/s after a warm-up;
2. latency at batch 1 and 64 (full ``--history``-long histories, ``--candidates`` each):
   the eager model (torchrec lookups + jagged attention), the exported TorchScript artefact
   and the AOT (torch.export) artefact, median of ``--repeats``.

Run it on a quiet machine (2 cores: any other busy process distorts the numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path

import torch
from timing import median_ms

from tzrec.core.cli import main as tzrec_main
from tzrec.core.config import load_pipeline_config
from tzrec.export.artifact import load_exported
from tzrec.export.exporter import (
    load_trained_model,
    resolve_checkpoint,
    sample_inputs,
    target_config,
    write_artefact,
)
from tzrec.export.wrappers import export_modules
from tzrec.hstu.synthetic import write_dlrm_hstu_data
from tzrec.models.inference import inputs_from_batch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "docs" / "examples" / "dlrm_hstu_kuairand.config"


def main() -> None:
    # every measurement uses all cores (the engine would drop busy ones): run on a quiet box
    os.environ.setdefault("TZREC_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    torch.set_num_threads(int(os.environ["TZREC_NUM_THREADS"]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tzrec_dlrm_bench_"))
    paths = write_dlrm_hstu_data(
        work / "data",
        num_rows=max(args.steps * args.batch_size, 256),
        num_eval_rows=128,
        max_history=args.history,
        max_candidates=args.candidates,
        empty_fraction=0.0,
        full_length=True,
    )
    model_dir = work / "model"
    edits = {
        "train_input_path": paths["train"],
        "eval_input_path": paths["eval"],
        "model_dir": str(model_dir),
        "data_config.batch_size": args.batch_size,
        "train_config.num_steps": args.steps,
        "eval_config.num_steps": 1,
        "model_config.dlrm_hstu.max_seq_len": args.history + args.candidates + 16,
        "feature_configs[sequence_name=uih_seq].sequence_feature.sequence_length": args.history,
        "feature_configs[sequence_name=cand_seq].sequence_feature.sequence_length": (
            args.candidates
        ),
    }
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = tzrec_main(
            [
                "train",
                "--pipeline_config_path",
                str(CONFIG),
                "--edit_config_json",
                json.dumps(edits),
            ]
        )
    if rc != 0:
        raise SystemExit(f"training failed (rc {rc}):\n{out.getvalue()[-2000:]}")
    steps_per_s = float(re.search(r"\(([\d.]+) steps/s\)", out.getvalue()).group(1))
    print(
        f"training: batch {args.batch_size}, histories {args.history}, {args.candidates} "
        f"candidates: {steps_per_s:.2f} steps/s = {steps_per_s * args.batch_size:.1f} "
        f"requests/s = {steps_per_s * args.batch_size * args.candidates:.0f} candidates/s"
    )

    config = load_pipeline_config(str(model_dir / "pipeline.config"))
    model, features = load_trained_model(config, resolve_checkpoint(config, None))
    model.set_is_inference(True)
    (module,) = export_modules(model)
    cfg = target_config(config, module)
    inputs = sample_inputs(cfg, paths["eval"])
    artefacts = {}
    for fmt in ("torchscript", "aot"):
        target = work / "export" / fmt
        target.mkdir(parents=True)
        start = time.perf_counter()
        write_artefact(module, cfg, inputs, target, fmt == "aot", work)
        print(f"export {fmt}: {time.perf_counter() - start:.1f} s")
        artefacts[fmt] = load_exported(target)

    from tzrec.core.build import build_dataset

    print(f"\nlatency, ms (median of {args.repeats}), {torch.get_num_threads()} threads")
    print(f"{'batch':>6} {'hist':>5} {'cands':>6} {'eager':>9} {'torchscript':>12} {'aot':>9}")
    for batch_size in (1, 64):
        config.data_config.batch_size = batch_size
        ds = build_dataset(config, features, paths["eval"], "eval")
        batch = next(iter(ds.make_dataloader()))
        x = inputs_from_batch(batch, module.features)
        hist = float(x["uih_seq__video_id.lengths"].float().mean())
        cands = float(x["cand_seq__video_id.lengths"].float().mean())

        def eager(batch=batch):
            with torch.no_grad():
                model.predict(batch)

        row = [median_ms(eager, args.repeats)]
        for fmt in ("torchscript", "aot"):
            row.append(median_ms(lambda a=artefacts[fmt], x=x: a(x), args.repeats))
        print(
            f"{batch_size:6d} {hist:5.0f} {cands:6.1f} {row[0]:9.2f} {row[1]:12.2f} {row[2]:9.2f}"
        )


if __name__ == "__main__":
    main()
