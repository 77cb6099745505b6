"""Test support for tzrec's test suites: running commands and finding ``uv``.

Only tests import it (it needs pytest); a failing command fails the calling test.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

__all__ = ["run", "uv_bin"]


def uv_bin() -> str:
    """The ``uv`` executable; fails the test when it is not on PATH."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("these tests need `uv` on PATH (pip install uv)")
    return uv


def run(cmd: Any, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command; with ``check``, fail the test with its output when it exits non-zero."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc
