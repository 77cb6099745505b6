"""Helpers shared by the cross-package tests (importable: tests/ is on pytest's pythonpath)."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def uv_bin() -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("these tests need `uv` on PATH (pip install uv)")
    return uv


def run(cmd, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; with ``check``, fail the test with its output when it exits non-zero."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc
