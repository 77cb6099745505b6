import json
import subprocess
import sys

import pytest

from tzrec.core import __version__
from tzrec.core.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"tzrec {__version__}"


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 2
    for command in ("run", "train", "eval", "export", "predict", "plugins"):
        assert command in out


def test_plugins_json_lists_first_party_registrations(capsys):
    code, out, _ = run_cli(capsys, "plugins", "--json")
    assert code == 0
    rows = {row["distribution"]: row for row in json.loads(out)}
    assert rows["tzrec-hstu"]["registers"]["models"] == ["dlrm_hstu", "hstu_match", "ultra_hstu"]
    assert rows["tzrec-export"]["registers"]["commands"] == [
        "create-faiss-index",
        "eval-retrieval",
        "export",
        "hitrate",
        "predict",
    ]


def test_plugins_text_shows_distribution_and_version(capsys):
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    assert "hstu (tzrec-hstu 0.1.0)" in out
    assert "  models: dlrm_hstu, hstu_match, ultra_hstu" in out


def test_train_with_missing_input_is_one_line(capsys, dssm_config_path, tmp_path):
    edits = f'{{"train_input_path": "{tmp_path}/none.parquet", "model_dir": "{tmp_path}/m"}}'
    code, _, err = run_cli(
        capsys,
        "train",
        "--pipeline_config_path",
        str(dssm_config_path),
        "--edit_config_json",
        edits,
    )
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("tzrec: error: ")
    assert f"{tmp_path}/none.parquet" in last


def test_train_with_bad_edit_config_json_is_one_line(capsys, hstu_config_path):
    code, _, err = run_cli(
        capsys,
        "train",
        "--pipeline_config_path",
        str(hstu_config_path),
        "--edit_config_json",
        '{"model_config.hstu_match.temprature": 0.1}',
    )
    assert code == 1
    assert err.startswith("tzrec: error: edit_config_json key 'model_config.hstu_match.temprature'")
    assert err.count("\n") == 1


def test_edit_config_json_must_be_an_object(capsys, hstu_config_path):
    code, _, err = run_cli(
        capsys, "eval", "--pipeline_config_path", str(hstu_config_path), "--edit_config_json", "[1]"
    )
    assert code == 1
    assert "--edit_config_json must be a JSON object, got list" in err


def test_missing_config_file_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--pipeline_config_path", str(tmp_path / "x.config"))
    assert code == 1
    assert err == f"tzrec: error: {tmp_path / 'x.config'}: pipeline config not found\n"


def test_debug_shows_the_traceback(tmp_path):
    from tzrec.core.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "train", "--pipeline_config_path", str(tmp_path / "x.config")])
    with pytest.raises(ConfigError):
        main(["train", "--pipeline_config_path", str(tmp_path / "x.config"), "--debug"])


def test_flags_override_config_paths(capsys, hstu_config_path, monkeypatch):
    seen = {}
    from tzrec.core import builtin_commands

    real = builtin_commands.validate_pipeline_config

    def spy(config, *args, **kwargs):
        seen["model_dir"] = config.model_dir
        seen["train"] = config.train_input_path
        return real(config, *args, **kwargs)

    monkeypatch.setattr(builtin_commands, "validate_pipeline_config", spy)
    run_cli(
        capsys,
        "train",
        "--pipeline_config_path",
        str(hstu_config_path),
        "--model_dir",
        "/tmp/m",
        "--train_input_path",
        "t.parquet",
    )
    assert seen == {"model_dir": "/tmp/m", "train": "t.parquet"}


def test_run_without_config_needs_an_example(capsys):
    code, _, err = run_cli(capsys, "run", "--example", "nope")
    assert code == 1
    assert "no installed plugin provides the built-in example 'nope'" in err


def test_export_refuses_existing_dir_without_overwrite(capsys, tmp_path, hstu_config_path):
    code, _, err = run_cli(
        capsys,
        "export",
        "--pipeline_config_path",
        str(hstu_config_path),
        "--export_dir",
        str(tmp_path),
    )
    assert code == 1
    assert "already exists; pass --overwrite" in err


def test_module_entry_point_runs_like_the_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "tzrec.core.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"tzrec {__version__}"


def test_unexpected_exception_is_one_line_with_a_debug_hint(capsys, monkeypatch):
    from tzrec.core import builtin_commands

    def boom(self, args):
        raise OSError("disk on fire")

    monkeypatch.setattr(builtin_commands.PluginsCommand, "run", boom)
    code, _, err = run_cli(capsys, "plugins")
    assert code == 1
    assert err == "tzrec: error: OSError: disk on fire (rerun with --debug for the traceback)\n"
