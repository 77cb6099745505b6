"""docs/cli.md shows what `tzrec <command> --help` prints today."""

import pytest
from tzrec_testing import REPO_ROOT

from tzrec.core.cli import main


@pytest.mark.parametrize(
    "command",
    [[], ["plugins"], ["run"], ["train"], ["eval"], ["export"], ["predict"], ["synth-data"]],
)
def test_cli_reference_matches_help_output(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    help_text = capsys.readouterr().out.strip()
    doc = (REPO_ROOT / "docs" / "cli.md").read_text()
    assert help_text in doc, "docs/cli.md is stale: uv run python scripts/gen_cli_docs.py"
