"""docs/cli.md shows what `tzrec <command> --help` prints today, for every registered command."""

import subprocess
import sys
from pathlib import Path

import pytest

from tzrec.core.cli import main
from tzrec.core.plugins import get_plugin_manager, reset_plugin_manager

REPO_ROOT = Path(__file__).resolve().parents[1]

STALE = "docs/cli.md is stale: uv run python scripts/gen_cli_docs.py"
#: Upstream's entry points (python -m ...) that docs/cli.md documents; each has a flag table.
ALIASES = ["tzrec.train_eval", "tzrec.eval"]


def registered_commands() -> list[str]:
    reset_plugin_manager()
    try:
        return sorted(get_plugin_manager().registry("commands"))
    finally:
        reset_plugin_manager()


def cli_doc() -> str:
    return (REPO_ROOT / "docs" / "cli.md").read_text()


@pytest.mark.parametrize("command", [[], *([c] for c in registered_commands())])
def test_cli_reference_matches_help_output(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    help_text = capsys.readouterr().out.strip()
    assert help_text in cli_doc(), STALE


def test_every_core_and_export_command_is_documented():
    commands = registered_commands()
    assert {"plugins", "run", "train", "eval", "export", "predict"} <= set(commands)
    for command in commands:
        assert f"\n## tzrec {command}\n" in cli_doc(), STALE


@pytest.mark.parametrize("module", ALIASES)
def test_upstream_alias_help_and_flag_table_are_documented(module, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True
    ).stdout.strip()
    doc = cli_doc()
    assert f"\n## python -m {module}\n" in doc and out in doc, STALE
    table = doc[doc.index("\n## Upstream flags\n") :]
    assert f"`python -m {module}` = `tzrec " in table


# -- runnable walkthroughs ---------------------------------------------------------------

#: A fenced block opening with this info string is executed by the test below.
RUNNABLE = "```bash runnable"
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
#: What a walkthrough promises to leave behind (globs, relative to its directory).
EXPECTED_FILES = {
    "README.md": [
        "data/dssm/train.parquet",
        "runs/dssm/model.ckpt-*/done",
        "runs/dssm/export/user/scripted_model.pt",
        "runs/dssm/export/item/scripted_model.pt",
        "out/users.parquet",
    ],
}


def runnable_blocks(path):
    """The ``bash runnable`` blocks of a markdown file, in order, with their first line."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if current is None and line.strip() == RUNNABLE:
            current, start = [], number + 1
        elif current is not None and line.strip() == "```":
            blocks.append((start, "\n".join(current) + "\n"))
            current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"{path}: unclosed {RUNNABLE} block at line {start}"
    return blocks


def test_runnable_blocks_are_found():
    blocks = runnable_blocks(REPO_ROOT / "README.md")
    assert len(blocks) >= 2
    assert any("tzrec synth-data" in text for _, text in blocks)


@pytest.mark.parametrize("doc", [p for p in DOC_FILES if runnable_blocks(p)], ids=lambda p: p.name)
def test_runnable_walkthrough_runs_as_written(doc, tmp_path):
    """Every ``bash runnable`` block of ``doc`` in order, in a fresh directory (as a clone's
    root: ``docs/`` is linked in), with ``uv run`` pointed at this workspace."""
    import os

    (tmp_path / "docs").symlink_to(REPO_ROOT / "docs")
    env = {**os.environ, "UV_PROJECT": str(REPO_ROOT), "UV_FROZEN": "1", "COLUMNS": "100"}
    for line, text in runnable_blocks(doc):
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", text],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, (
            f"{doc.name}:{line}: block failed (exit {proc.returncode})\n{text}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
    for pattern in EXPECTED_FILES.get(doc.name, []):
        assert list(tmp_path.glob(pattern)), f"{doc.name}: the walkthrough wrote no {pattern}"
