"""CLI start-up cost: CPU seconds of `tzrec --help`, `plugins`, `<cmd> --help` and config errors.

Usage: uv run python benchmarks/startup.py [--repeats N] [--json]

Each command runs in a fresh process ``--repeats`` times; the table shows the median and the
minimum CPU time (user + system of the child) and wall time, beside ``python -c "import
torch"`` measured in the same run, so the ratio holds on a loaded machine too. Commands that
do real work (train, export, ...) import torch; these must not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DSSM = REPO / "docs" / "examples" / "dssm.config"


def commands(tmp: Path) -> dict[str, list[str]]:
    """Label -> argv; every ``tzrec`` line goes through the installed console script."""
    tzrec = str(Path(sys.executable).with_name("tzrec"))
    bad_field = tmp / "bad_field.config"
    bad_field.write_text('model_dir: "m"\nno_such_field: 1\n')
    return {
        'python -c "pass"': [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "tzrec --help": [tzrec, "--help"],
        "tzrec plugins": [tzrec, "plugins"],
        "tzrec train --help": [tzrec, "train", "--help"],
        "tzrec export --help": [tzrec, "export", "--help"],
        "tzrec train <missing config>": [
            tzrec,
            "train",
            "--pipeline_config_path",
            str(tmp / "missing.config"),
        ],
        "tzrec train <unknown field>": [tzrec, "train", "--pipeline_config_path", str(bad_field)],
        "tzrec train <undefined feature>": [
            tzrec,
            "train",
            "--pipeline_config_path",
            str(DSSM),
            "--edit_config_json",
            '{"model_config.feature_groups[0].feature_names[0]": "no_such_feature"}',
        ],
    }


def cpu_and_wall(argv: list[str]) -> tuple[float, float, int]:
    """One run of ``argv``: (child CPU seconds, wall seconds, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, wall, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per command")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, argv in commands(Path(tmp)).items():
            runs = [cpu_and_wall(argv) for _ in range(args.repeats)]
            cpu = [r[0] for r in runs]
            wall = [r[1] for r in runs]
            rows.append(
                {
                    "command": label,
                    "exit_code": runs[-1][2],
                    "cpu_s_median": statistics.median(cpu),
                    "cpu_s_min": min(cpu),
                    "wall_s_median": statistics.median(wall),
                }
            )
    torch_cpu = next(r["cpu_s_median"] for r in rows if "import torch" in r["command"])
    for row in rows:
        row["vs_import_torch"] = row["cpu_s_median"] / torch_cpu
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'command':34} {'rc':>3} {'cpu med':>8} {'cpu min':>8} {'wall med':>9} {'/torch':>7}")
    for r in rows:
        print(
            f"{r['command']:34} {r['exit_code']:>3} {r['cpu_s_median']:>7.2f}s "
            f"{r['cpu_s_min']:>7.2f}s {r['wall_s_median']:>8.2f}s {r['vs_import_torch']:>7.2f}"
        )


if __name__ == "__main__":
    main()
