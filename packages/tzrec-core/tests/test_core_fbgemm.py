"""fbgemm load failures become one line with the exact fix; other errors are left alone."""

import logging

import pytest

from tzrec.core import fbgemm
from tzrec.core.errors import PluginError
from tzrec.core.fbgemm import cpu_swap_command, fbgemm_fix, is_fbgemm_load_record


def installed(monkeypatch, **versions):
    """Pretend exactly these distributions are installed."""
    table = {name.replace("_", "-"): v for name, v in versions.items()}
    monkeypatch.setattr(fbgemm, "_version", table.get)


def cuda_load_error() -> OSError:
    try:
        try:
            raise OSError("libnvidia-ml.so.1: cannot open shared object file")
        except OSError as inner:
            raise OSError("Could not load this library: /x/fbgemm_gpu/fbgemm_gpu_py.so") from inner
    except OSError as outer:
        return outer


def test_cuda_build_without_driver_names_the_swap(monkeypatch):
    installed(monkeypatch, fbgemm_gpu="1.9.0", torchrec="1.9.2")
    assert fbgemm_fix(cuda_load_error()) == (
        "fbgemm-gpu 1.9.0 (the CUDA build torchrec depends on) cannot load here "
        "(libnvidia-ml.so.1: cannot open shared object file); on a machine without an NVIDIA "
        "GPU use the CPU build: pip uninstall -y fbgemm-gpu && pip install --force-reinstall "
        "--no-deps fbgemm-gpu-cpu==1.9.0"
    )


def test_failure_wrapped_by_a_plugin_load_error_is_found(monkeypatch):
    installed(monkeypatch, fbgemm_gpu="1.9.0")
    try:
        raise PluginError("plugin 'x' failed to load") from cuda_load_error()
    except PluginError as e:
        fix = fbgemm_fix(e)
    assert fix is not None and fix.endswith(cpu_swap_command("1.9.0"))


def test_broken_cpu_build_says_reinstall_it(monkeypatch):
    installed(monkeypatch, fbgemm_gpu_cpu="1.9.0")
    assert fbgemm_fix(cuda_load_error()) == (
        "fbgemm-gpu-cpu 1.9.0 cannot load (libnvidia-ml.so.1: cannot open shared object file): "
        "pip install --force-reinstall --no-deps fbgemm-gpu-cpu==1.9.0"
    )


def test_missing_module_names_the_version_of_torchrec_s_release_line(monkeypatch):
    installed(monkeypatch, torchrec="1.9.2")
    error = ModuleNotFoundError("No module named 'fbgemm_gpu'", name="fbgemm_gpu")
    assert fbgemm_fix(error) == (
        "torchrec needs the fbgemm_gpu module, which is not installed: pip install --no-deps "
        "fbgemm-gpu-cpu==1.9.0 (CPU) or fbgemm-gpu==1.9.0 (NVIDIA GPU)"
    )


@pytest.mark.parametrize(
    "error",
    [
        OSError("disk full"),
        ModuleNotFoundError("No module named 'faiss'", name="faiss"),
        ValueError("fbgemm_gpu mentioned in an unrelated error"),
    ],
)
def test_other_errors_are_not_fbgemm_failures(error):
    assert fbgemm_fix(error) is None


def test_only_fbgemm_s_own_load_record_is_recognised():
    def record(path, msg):
        return logging.LogRecord("root", logging.ERROR, path, 1, msg, None, None)

    path = "/venv/site-packages/fbgemm_gpu/__init__.py"
    assert is_fbgemm_load_record(record(path, "Could not load the library 'fbgemm_gpu_py.so'!"))
    assert not is_fbgemm_load_record(record(path, "something else"))
    assert not is_fbgemm_load_record(record("/app/mine.py", "Could not load the library 'x'"))
