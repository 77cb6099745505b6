"""Benchmark semi-local attention (ULTRA-HSTU SLA) against full causal jagged HSTU attention.

Run ``uv run --frozen python benchmarks/sla_attention.py`` (``--quick``: L = 1k, 4k only).
Every (method, L) runs in a fresh subprocess with a fixed thread count: one warm-up at a
small size, then forward + backward ``--reps`` times (best time kept; full attention at the
longest L runs once), and the peak resident set growth over those steps (/proc VmHWM after
a reset; inputs excluded). Times are the process's CPU time (one thread: its wall time on
an idle machine). Prints the table, the least-squares exponent of SLA time in L
(time ∝ L^p) and the speedup at the longest L.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch

from tzrec.kernels import hstu_mha, sla_hstu_mha

BATCH, HEADS, DIM, ALPHA, K1, K2 = 1, 2, 16, 0.25, 256, 64

METHODS = {
    "SLA (K1=256, K2=64)": lambda n, q, k, v, o: sla_hstu_mha(n, ALPHA, q, k, v, o, K1, K2),
    "full causal": lambda n, q, k, v, o: hstu_mha(n, ALPHA, q, k, v, o),
}


def make_inputs(length: int):
    """Random jagged q, k, v (requiring grad) of BATCH rows of ``length``, offsets, grad."""
    g = torch.Generator().manual_seed(1)
    total = BATCH * length
    offsets = torch.arange(BATCH + 1) * length
    q, k, v, grad = (torch.randn(total, HEADS, DIM, generator=g) for _ in range(4))
    return [t.requires_grad_() for t in (q, k, v)], offsets, grad


def step(method: str, length: int, inputs) -> None:
    """One forward + backward."""
    (q, k, v), offsets, grad = inputs
    for t in (q, k, v):
        t.grad = None
    METHODS[method](length, q, k, v, offsets).backward(grad)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _child(method: str, length: int, reps: int) -> None:
    """Subprocess body: print best seconds and peak RSS growth as JSON."""
    step(method, 300, make_inputs(300))  # load libraries, thread pools
    inputs = make_inputs(length)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _rss_bytes()
    times = []
    for _ in range(reps):
        start = time.process_time()  # CPU time: robust to other processes on the machine
        step(method, length, inputs)
        times.append(time.process_time() - start)
    print(json.dumps({"s": min(times), "peak": max(_peak_rss_bytes() - base, 0)}))


def run_case(method: str, length: int, reps: int, threads: int) -> dict:
    """Time and peak memory of one case in a fresh subprocess."""
    cmd = [sys.executable, __file__, "--_child", method, str(length), str(reps)]
    cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fitted_exponent(lengths: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) on log(length)."""
    xs = [math.log(n) for n in lengths]
    ys = [math.log(s) for s in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def main() -> None:
    """Parse arguments, run every case, print the table and the fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="L = 1k, 4k only")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print rows as JSON")
    parser.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args._child:
        _child(args._child[0], int(args._child[1]), int(args._child[2]))
        return
    lengths = [1024, 4096] if args.quick else [1024, 4096, 16384]
    print(
        f"cpu threads={args.threads} B={BATCH} heads={HEADS} dim={DIM} fp32, forward+backward, "
        f"best of {args.reps} (full causal at L={lengths[-1]}: 1 run)"
    )
    header = f"{'L':>6} {'method':<20} {'ms':>10} {'peak MiB':>9} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    rows, sla_times = [], []
    for n in lengths:
        res = {}
        for method in METHODS:
            reps = 1 if (method == "full causal" and n == lengths[-1]) else args.reps
            res[method] = run_case(method, n, reps, args.threads)
        sla, full = res["SLA (K1=256, K2=64)"], res["full causal"]
        sla_times.append(sla["s"])
        for method, r in res.items():
            speed = full["s"] / r["s"]
            rows.append(dict(L=n, method=method, ms=r["s"] * 1e3, peak_mib=r["peak"] / 2**20,
                             speedup=speed))  # fmt: skip
            print(
                f"{n:>6} {method:<20} {r['s'] * 1e3:>10.1f} {r['peak'] / 2**20:>9.1f} "
                f"{speed:>7.1f}x"
            )
    p = fitted_exponent(lengths, sla_times)
    print(f"SLA time ~ L^{p:.2f} (target <= 1.1); speedup at L={lengths[-1]}: "
          f"{rows[-1]['ms'] / rows[-2]['ms']:.1f}x (target >= 10x)")  # fmt: skip
    if args.json:
        print(json.dumps({"rows": rows, "sla_exponent": p}))


if __name__ == "__main__":
    main()
