"""Recognise the "CUDA fbgemm-gpu on a machine without an NVIDIA driver" failure.

torchrec depends on ``fbgemm-gpu`` (the CUDA build), so a plain ``pip install tzrec-core
tzrec-hstu`` on a CPU machine installs it, and importing torchrec then fails deep inside
``torch.ops.load_library`` after fbgemm has logged the failure at ERROR level. The CLI turns
that into one line with the exact fix; the CPU build ``fbgemm-gpu-cpu`` provides the same
``fbgemm_gpu`` module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

_MODULE = "fbgemm_gpu"
_CUDA_DIST = "fbgemm-gpu"
_CPU_DIST = "fbgemm-gpu-cpu"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _matching_fbgemm_version() -> str:
    """The fbgemm version to install: the installed one, else torchrec's release line."""
    for dist in (_CUDA_DIST, _CPU_DIST):
        found = _version(dist)
        if found:
            return found
    torchrec = _version("torchrec")
    if torchrec:
        major, minor = torchrec.split(".")[:2]
        return f"{major}.{minor}.0"  # torchrec X.Y pairs with fbgemm X.Y
    return "1.9.0"


def fbgemm_fix(error: BaseException) -> str | None:
    """The one-line explanation and fix when ``error`` comes from loading fbgemm, else None."""
    for exc in _chain(error):
        text = str(exc)
        if isinstance(exc, ModuleNotFoundError) and exc.name == _MODULE:
            version = _matching_fbgemm_version()
            return (
                f"torchrec needs the {_MODULE} module, which is not installed: pip install "
                f"--no-deps {_CPU_DIST}=={version} (CPU) or {_CUDA_DIST}=={version} "
                "(NVIDIA GPU)"
            )
        if isinstance(exc, OSError) and _MODULE in text:
            reason = next(
                (str(e) for e in _chain(exc) if e is not exc and str(e)), "library failed to load"
            )
            version = _matching_fbgemm_version()
            if _version(_CUDA_DIST) is None:  # the CPU build itself is broken
                return (
                    f"{_CPU_DIST} {version} cannot load ({reason}): pip install "
                    f"--force-reinstall --no-deps {_CPU_DIST}=={version}"
                )
            return (
                f"{_CUDA_DIST} {version} (the CUDA build torchrec depends on) cannot load "
                f"here ({reason}); on a machine without an NVIDIA GPU use the CPU build: "
                f"{cpu_swap_command(version)}"
            )
    return None


def cpu_swap_command(version: str) -> str:
    """The pip command that replaces the CUDA fbgemm-gpu by the CPU build of ``version``."""
    return (
        f"pip uninstall -y {_CUDA_DIST} && pip install --force-reinstall --no-deps "
        f"{_CPU_DIST}=={version}"
    )


def is_fbgemm_load_record(record: logging.LogRecord) -> bool:
    """Whether ``record`` is fbgemm's own ERROR about its library failing to load."""
    return f"/{_MODULE}/" in record.pathname and record.getMessage().startswith(
        "Could not load the library"
    )
