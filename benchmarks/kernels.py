"""Benchmark HSTU attention: jagged PYTORCH / TRITON vs padded dense baselines.

Run ``uv run python benchmarks/kernels.py`` (``--quick`` for a short run).
Times forward + backward (best of ``--reps`` after one warm-up) and peak
memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident
set size growth of a fresh subprocess running one forward + backward (inputs
excluded; /proc VmHWM after a reset). GFLOP/s count 4·heads·dim·nᵢ² per
forward and 3x that for forward + backward, whatever the method skips.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from tzrec.kernels import Kernel, hstu_mha, jagged_to_padded_dense, padded_hstu_mha

BATCH, HEADS, DIM, ALPHA = 32, 2, 64, 1.0 / 8


def make_lengths(max_len: int, dist: str, seed: int = 0) -> list[int]:
    """Row lengths: 'full' uniform in [0.9, 1]·max_len, 'skewed' mean ~15%."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(BATCH, generator=g)
    if dist == "full":
        frac = 0.9 + 0.1 * u
    else:  # u^a has mean 1 / (1 + a); a = 17/3 gives 0.15
        frac = u ** (17 / 3)
    return [max(1, min(max_len, round(max_len * f))) for f in frac.tolist()]


def make_inputs(lengths: list[int], device: str):
    """Random q, k, v (requiring grad), offsets and an output gradient."""
    g = torch.Generator().manual_seed(1)
    total = sum(lengths)
    offsets = torch.tensor([0, *lengths]).cumsum(0).to(device)
    q, k, v, grad = (torch.randn(total, HEADS, DIM, generator=g).to(device) for _ in range(4))
    return [t.requires_grad_() for t in (q, k, v)], offsets, grad


def sdpa_padded(max_len, q, k, v, offsets):
    """Softmax attention on padded tensors (F.scaled_dot_product_attention)."""
    total = q.shape[0]
    pad = [
        jagged_to_padded_dense(t.reshape(total, -1), offsets, max_len)
        .view(-1, max_len, HEADS, DIM)
        .transpose(1, 2)
        for t in (q, k, v)
    ]
    out = F.scaled_dot_product_attention(*pad, is_causal=True)
    from tzrec.kernels import dense_to_jagged

    out = out.transpose(1, 2).reshape(-1, max_len, HEADS * DIM)
    return dense_to_jagged(out, offsets, total).view(total, HEADS, DIM)


METHODS = {
    "jagged PYTORCH": lambda n, q, k, v, o: hstu_mha(n, ALPHA, q, k, v, o),
    "jagged TRITON": lambda n, q, k, v, o: hstu_mha(n, ALPHA, q, k, v, o, kernel=Kernel.TRITON),
    "padded dense": lambda n, q, k, v, o: padded_hstu_mha(n, ALPHA, q, k, v, o),
    "padded SDPA (softmax)": sdpa_padded,
}


def step(method: str, max_len: int, inputs) -> None:
    """One forward + backward."""
    (q, k, v), offsets, grad = inputs
    for t in (q, k, v):
        t.grad = None
    out = METHODS[method](max_len, q, k, v, offsets)
    out.backward(grad)


def _sync(device: str) -> None:
    """Wait for the device."""
    if device == "cuda":
        torch.cuda.synchronize()


def time_method(method, max_len, inputs, reps, device) -> float:
    """Best wall seconds of forward + backward after a warm-up."""
    step(method, max_len, inputs)
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        step(method, max_len, inputs)
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_memory(method, max_len, dist, device, threads) -> float:
    """Peak extra bytes of one forward + backward."""
    if device == "cuda":
        inputs = make_inputs(make_lengths(max_len, dist), device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(method, max_len, inputs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    cmd = [sys.executable, __file__, "--_memory", method, str(max_len), dist]
    cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process image (VmHWM; not inherited)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _memory_child(method: str, max_len: int, dist: str) -> None:
    """Subprocess body: print peak RSS growth of one forward + backward."""
    step(method, 16, make_inputs([16, 3], "cpu"))  # load libraries, thread pools
    inputs = make_inputs(make_lengths(max_len, dist), "cpu")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _rss_bytes()
    step(method, max_len, inputs)
    print(max(_peak_rss_bytes() - base, 0))


def main() -> None:
    """Parse arguments, run every case, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="max_len 256 only, 2 reps")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print rows as JSON")
    parser.add_argument("--_memory", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args._memory:
        _memory_child(args._memory[0], int(args._memory[1]), args._memory[2])
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    max_lens = [256] if args.quick else [256, 1024]
    reps = 2 if args.quick else args.reps
    methods = [m for m in METHODS if device == "cuda" or m != "jagged TRITON"]
    print(
        f"device={device} threads={args.threads} B={BATCH} heads={HEADS} "
        f"dim={DIM} fp32, forward+backward, best of {reps}"
    )
    header = (
        f"{'max_len':>7} {'lengths':>7} {'method':<22} {'ms':>9} "
        f"{'x padded':>9} {'GFLOP/s':>8} {'peak MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for max_len in max_lens:
        for dist in ("full", "skewed"):
            lengths = make_lengths(max_len, dist)
            flops = 3 * 4 * HEADS * DIM * sum(n * n for n in lengths)
            inputs = make_inputs(lengths, device)
            results = {}
            for method in methods:
                results[method] = time_method(method, max_len, inputs, reps, device)
            for method in methods:
                sec = results[method]
                mem = (
                    float("nan")
                    if args.no_memory
                    else peak_memory(method, max_len, dist, device, args.threads)
                )
                row = dict(
                    max_len=max_len,
                    lengths=dist,
                    mean_len=sum(lengths) / len(lengths),
                    method=method,
                    ms=sec * 1e3,
                    speedup_vs_padded=results["padded dense"] / sec,
                    gflops=flops / sec / 1e9,
                    peak_mib=mem / 2**20,
                )
                rows.append(row)
                print(
                    f"{max_len:>7} {dist:>7} {method:<22} {row['ms']:>9.1f} "
                    f"{row['speedup_vs_padded']:>8.2f}x {row['gflops']:>8.1f} "
                    f"{row['peak_mib']:>9.1f}",
                    flush=True,
                )
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
