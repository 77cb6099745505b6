"""docs/cli.md shows what `tzrec <command> --help` prints today, for every registered command."""

import subprocess
import sys

import pytest
from tzrec_testing import REPO_ROOT

from tzrec.core.cli import main
from tzrec.core.plugins import get_plugin_manager, reset_plugin_manager

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
