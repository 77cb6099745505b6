"""Failing commands end promptly; eval refuses an unwritable result file before evaluating."""

import errno
import tempfile

import pytest

from tzrec.core import cli
from tzrec.core.engine import loop, summary
from tzrec.core.errors import ConfigError


def test_console_script_exits_at_once_after_an_error_and_normally_on_success(monkeypatch):
    exits: list[tuple[str, int]] = []
    monkeypatch.setattr(cli.os, "_exit", lambda rc: exits.append(("_exit", rc)))
    monkeypatch.setattr(cli, "main", lambda: 3)
    with pytest.raises(SystemExit) as done:  # os._exit is stubbed, so sys.exit follows
        cli.console_main()
    assert exits == [("_exit", 3)] and done.value.code == 3
    exits.clear()
    monkeypatch.setattr(cli, "main", lambda: 0)
    with pytest.raises(SystemExit) as done:
        cli.console_main()
    assert exits == [] and done.value.code == 0  # success: normal teardown (atexit, writers)


def test_result_file_under_a_file_is_refused_in_one_line(tmp_path):
    blocker = tmp_path / "model_dir"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as err:
        summary.check_result_writable(blocker / "eval_result.txt")
    message = str(err.value)
    assert message.startswith(f"{blocker / 'eval_result.txt'}: cannot write the evaluation result")
    assert "\n" not in message


def test_eval_refuses_a_read_only_model_dir_before_evaluating(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(loop, "setup_process", lambda config: pytest.fail("evaluated anyway"))
    from tzrec.protos import pipeline_pb2

    config = pipeline_pb2.EasyRecConfig(model_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"Read-only file system"):
        loop.evaluate(config)
    assert summary.read_eval_results(tmp_path / "eval_result.txt") == []
