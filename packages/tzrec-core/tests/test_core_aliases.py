"""`python -m tzrec.train_eval` / `tzrec.eval` take upstream's flags and run our commands."""

import subprocess
import sys

import pytest

import tzrec.eval
import tzrec.train_eval
from tzrec.core import builtin_commands
from tzrec.core.cli import main

# Every flag of upstream's tzrec/train_eval.py and tzrec/eval.py argparse, as upstream spells it
UPSTREAM_TRAIN_EVAL = [
    "--pipeline_config_path", "p.config",
    "--model_dir", "m",
    "--train_input_path", "train.parquet",
    "--eval_input_path", "eval.parquet",
    "--continue_train",
    "--fine_tune_checkpoint", "ckpt",
    "--edit_config_json", '{"train_config.num_steps": 3}',
    "--ignore_restore_optimizer",
]  # fmt: skip
UPSTREAM_EVAL = [
    "--pipeline_config_path", "p.config",
    "--checkpoint_path", "m/model.ckpt-3",
    "--eval_input_path", "eval.parquet",
    "--eval_result_filename", "result.txt",
]  # fmt: skip


@pytest.fixture
def captured(monkeypatch):
    """Replace the commands' ``run`` so a call records the parsed flags instead of training."""
    seen = []

    def record(self, args):
        # "command" is the top-level parser's subcommand name; the alias has no subcommands
        seen.append({k: v for k, v in vars(args).items() if k not in ("_command", "command")})
        return 0

    monkeypatch.setattr(builtin_commands.TrainCommand, "run", record)
    monkeypatch.setattr(builtin_commands.EvalCommand, "run", record)
    return seen


@pytest.mark.parametrize(
    ("alias", "command", "argv"),
    [
        (tzrec.train_eval, "train", UPSTREAM_TRAIN_EVAL),
        (tzrec.eval, "eval", UPSTREAM_EVAL),
    ],
)
def test_alias_parses_upstream_flags_exactly_like_the_command(captured, alias, command, argv):
    assert alias.main(argv) == 0
    assert main([command, *argv]) == 0
    via_alias, via_command = captured
    assert via_alias == via_command
    assert via_alias["pipeline_config_path"] == "p.config"
    if command == "train":
        assert via_alias["continue_train"] and via_alias["ignore_restore_optimizer"]
        assert via_alias["fine_tune_checkpoint"] == "ckpt"
    else:
        assert via_alias["checkpoint_path"] == "m/model.ckpt-3"
        assert via_alias["eval_result_filename"] == "result.txt"


def test_unknown_flag_is_refused_not_ignored(captured, capsys):
    with pytest.raises(SystemExit) as exc:
        tzrec.eval.main([*UPSTREAM_EVAL, "--no_such_flag"])
    assert exc.value.code == 2
    assert "python -m tzrec.eval: error: unrecognized arguments: --no_such_flag" in (
        capsys.readouterr().err
    )
    assert captured == []


def test_alias_errors_are_one_line_like_the_command(capsys, tmp_path):
    missing = str(tmp_path / "missing.config")
    assert tzrec.train_eval.main(["--pipeline_config_path", missing]) == 1
    assert capsys.readouterr().err == f"tzrec: error: {missing}: pipeline config not found\n"


@pytest.mark.parametrize("module", ["tzrec.train_eval", "tzrec.eval"])
def test_python_dash_m_runs_the_alias(module):
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith(f"usage: python -m {module} ")
    assert "--pipeline_config_path" in proc.stdout
