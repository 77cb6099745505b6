"""Run TorchEasyRec's own example and test configs through tzrec on synthetic data.

For every ``examples/*.config`` and ``tzrec/tests/configs/*.config`` of the upstream repository
whose model is one of ``--kinds``: ``tzrec synth-data`` writes data with the columns the config
reads, then ``tzrec train`` (a few steps), ``tzrec eval`` and ``tzrec export`` run with only
data paths, ``model_dir`` and sizes changed (``--edit_config_json``). Prints one table row per
config: the last stage reached and the first error line.

    uv run --frozen python scripts/upstream_corpus.py /path/to/TorchEasyRec [--work /tmp/corpus]

The upstream path may be a work tree or a bare git repository (files are read with
``git show HEAD:<path>``). Configs are copied only into ``--work``; nothing is written to the
repository. One worker process runs the configs in order (torch is imported once; a config
that hangs past ``--timeout`` is recorded and the worker restarted); configs named ``*_rtp*``
run with ``USE_RTP=1``, as upstream's integration tests run them. Per-stage logs are kept in
``--work/<config>/``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

KINDS = ("dssm", "multi_tower", "multi_tower_din", "hstu_match", "dlrm_hstu")
STAGES = ("synth", "train", "eval", "export")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def list_configs(repo: Path, kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """``(path, kind, text)`` of upstream example/test configs whose model is one of ``kinds``."""
    names = _git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    out = []
    pattern = re.compile(r"^\s*(" + "|".join(kinds) + r")\s*\{", re.M)
    for name in names:
        if not re.match(r"^(examples|tzrec/tests/configs)/.*\.config$", name):
            continue
        text = _git(repo, "show", f"HEAD:{name}")
        m = pattern.search(text)
        if m:
            out.append((name, m.group(1), text))
    return sorted(out)


def first_error(stderr: str) -> str:
    """The line a user sees: ``tzrec: error: ...``, else the last non-empty line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("tzrec: error:"):
            return ln[len("tzrec: error:") :].strip()
    return lines[-1] if lines else "(no output)"


def edits_for(text: str, model_dir: Path, steps: int, batch_size: int) -> dict[str, object]:
    """Only data, model_dir and sizes: a few small steps on local parquet."""
    edits: dict[str, object] = {
        "model_dir": str(model_dir),
        "train_config.num_steps": steps,
        "train_config.num_epochs": 1,
        "eval_config.num_steps": 2,
        "data_config.batch_size": batch_size,
        "data_config.num_workers": 1,
    }
    if re.search(r"dataset_type:\s*OdpsDataset", text) or "dataset_type" not in text:
        edits["data_config.dataset_type"] = "ParquetDataset"
    return edits


def prepare(name: str, text: str, work: Path, rows: int, steps: int, batch_size: int) -> Path:
    """A case directory holding the upstream config and the four stages' command lines."""
    case = work / re.sub(r"[^A-Za-z0-9_.-]", "_", name.removesuffix(".config"))
    case.mkdir(parents=True, exist_ok=True)
    (case / "result.json").unlink(missing_ok=True)
    src = case / "upstream.config"
    src.write_text(text)
    cfg = case / "synth.config"
    edits = json.dumps(edits_for(text, case / "model", steps, batch_size))
    commands = {
        "synth": [
            "synth-data",
            "--pipeline_config_path",
            str(src),
            "--rows",
            str(rows),
            "--out",
            str(case / "data"),
            "--write_config",
            str(cfg),
        ],
        "train": ["train", "--pipeline_config_path", str(cfg), "--edit_config_json", edits],
        "eval": ["eval", "--pipeline_config_path", str(cfg), "--edit_config_json", edits],
        "export": [
            "export",
            "--pipeline_config_path",
            str(cfg),
            "--edit_config_json",
            edits,
            "--export_dir",
            str(case / "export"),
            "--overwrite",
        ],
    }
    # upstream's integration tests run the rtp configs with USE_RTP=1 (RTP sub-feature names)
    env = {"USE_RTP": "1"} if "_rtp" in name else {}
    (case / "commands.json").write_text(
        json.dumps({"env": env, "stages": [[st, commands[st]] for st in STAGES]})
    )
    return case


def run_cases(cases: list[Path], timeout: int) -> None:
    """Run the cases in one worker process (torch imports once); restart it after a hang."""
    todo = list(cases)
    while todo:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--cases", *map(str, todo)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started = time.time()
        while proc.poll() is None and time.time() - started < timeout:
            done = [c for c in todo if (c / "result.json").exists() and _finished(c)]
            if done:
                todo = [c for c in todo if c not in done]
                started = time.time()
            time.sleep(1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        todo = [c for c in todo if not _finished(c)]
        if todo:  # the first unfinished case hung or crashed the worker
            stuck = todo.pop(0)
            stage = (
                json.loads((stuck / "result.json").read_text())[0]
                if (stuck / "result.json").exists()
                else "-"
            )
            why = "timed out" if proc.returncode in (-9, None) else f"crashed ({proc.returncode})"
            (stuck / "result.json").write_text(json.dumps([stage, f"{why} after {stage}", True]))


def _finished(case: Path) -> bool:
    path = case / "result.json"
    return path.exists() and len(json.loads(path.read_text())) == 3


def run_case(case: Path) -> None:
    """Child process: run the stages of one case in-process (one import of torch)."""
    import contextlib
    import io
    import os

    from tzrec.core.cli import main as tzrec_main

    reached, err = "-", ""
    spec = json.loads((case / "commands.json").read_text())
    os.environ.pop("USE_RTP", None)
    os.environ.update(spec["env"])
    for stage, argv in spec["stages"]:
        items = case / "data" / "items.parquet"
        if stage == "export" and items.exists():  # a match model's item tower export input
            argv = [*argv, "--item_input_path", str(items)]
        buf = io.StringIO()
        try:
            with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
                code = tzrec_main(argv)
        except SystemExit as e:  # argparse usage errors
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: BLE001 - report whatever escaped the CLI
            code = 1
            buf.write(f"tzrec: error: {type(e).__name__}: {' '.join(str(e).split())}\n")
        (case / f"{stage}.log").write_text(buf.getvalue())
        if code != 0:
            err = f"{stage}: {first_error(buf.getvalue())}"
            break
        reached = stage
        (case / "result.json").write_text(json.dumps([reached, err]))
    (case / "result.json").write_text(json.dumps([reached, err, True]))


def main() -> int:
    """Run the corpus and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "upstream", type=Path, nargs="?", help="TorchEasyRec repository (work tree or bare)"
    )
    parser.add_argument("--cases", type=Path, nargs="+", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tzrec_upstream_corpus"))
    parser.add_argument("--kinds", default=",".join(KINDS), help="model kinds, comma separated")
    parser.add_argument("--only", default=None, help="regex on the config path")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--timeout", type=int, default=900, help="seconds a config may take before it is skipped"
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    if args.cases is not None:
        for case in args.cases:
            run_case(case)
        return 0
    if args.upstream is None:
        parser.error("the upstream repository path is required")
    configs = list_configs(args.upstream, tuple(args.kinds.split(",")))
    if args.only:
        configs = [c for c in configs if re.search(args.only, c[0])]
    rows = ["| config | kind | stage reached | first error |", "|---|---|---|---|"]
    print(rows[0], rows[1], sep="\n", flush=True)
    cases = [
        prepare(name, text, args.work, args.rows, args.steps, args.batch_size)
        for name, _, text in configs
    ]
    t0 = time.time()
    run_cases(cases, args.timeout)
    passed = 0
    for (name, kind, _), case in zip(configs, cases, strict=True):
        reached, err, _ = json.loads((case / "result.json").read_text())
        passed += reached == STAGES[-1]
        cell = err.replace("|", "\\|")[:300] or "ok"
        row = f"| {name} | {kind} | {reached} | {cell} |"
        rows.append(row)
        print(row, flush=True)
    summary = (
        f"\n{passed} of {len(configs)} configs trained, evaluated and exported "
        f"({time.time() - t0:.0f}s)."
    )
    print(summary)
    if args.markdown:
        args.markdown.write_text("\n".join(rows) + "\n" + summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
