"""Kernel selection: which implementation of an op runs, and graceful degradation."""

from __future__ import annotations

import enum
import logging
import os

import torch

logger = logging.getLogger(__name__)

_warned: set[str] = set()


class Kernel(enum.IntEnum):
    """Implementation choice; values match the config enum `tzrec.protos.Kernel`."""

    TRITON = 0
    PYTORCH = 1
    CUTLASS = 2


def _warn_once(key: str, message: str) -> None:
    """Log `message` as a warning the first time `key` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def triton_interpret_enabled() -> bool:
    """Whether Triton kernels run in the CPU interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")


def triton_importable() -> bool:
    """Whether the `triton` package can be imported."""
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


def cuda_available() -> bool:
    """Whether a CUDA device is usable (separate function so tests can patch it)."""
    return torch.cuda.is_available()


def is_tracing() -> bool:
    """Whether the code runs under ``torch.export``/``torch.compile`` or ``torch.jit.trace``.

    Export artefacts must not depend on Triton or fbgemm, nor on Python control flow over
    tensor values, so ops take their pure-PyTorch, shape-generic path while tracing.
    """
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling())


def to_kernel(kernel: Kernel | int | str) -> Kernel:
    """Convert a config value (enum, int or name such as "TRITON") to `Kernel`."""
    if isinstance(kernel, Kernel):
        return kernel
    if isinstance(kernel, str):
        try:
            return Kernel[kernel.upper()]
        except KeyError:
            raise ValueError(
                f"unknown kernel {kernel!r}; expected one of {', '.join(k.name for k in Kernel)}"
            ) from None
    return Kernel(int(kernel))


def resolve_kernel(kernel: Kernel | int | str, device: torch.device | None = None) -> Kernel:
    """Return the kernel that will actually run for a request on `device`.

    While tracing for export (:func:`is_tracing`) it is always `PYTORCH`. `TRITON` runs
    when the Triton interpreter is enabled (`TRITON_INTERPRET=1`,
    tensors on CPU) or when the tensors live on a CUDA device; otherwise it
    degrades to `PYTORCH` with a warning logged once. `CUTLASS` is accepted
    for config compatibility and always degrades to `PYTORCH`.
    """
    kernel = to_kernel(kernel)
    if kernel == Kernel.PYTORCH or is_tracing():
        return Kernel.PYTORCH
    if kernel == Kernel.CUTLASS:
        _warn_once(
            "cutlass",
            "kernel CUTLASS is not implemented in tzrec.kernels; using PYTORCH",
        )
        return Kernel.PYTORCH
    if not triton_importable():
        _warn_once(
            "no-triton",
            "kernel TRITON requested but triton is not installed; using PYTORCH",
        )
        return Kernel.PYTORCH
    on_cuda = device is not None and device.type == "cuda"
    if device is None:
        on_cuda = cuda_available()
    if on_cuda and cuda_available():
        return Kernel.TRITON
    if triton_interpret_enabled() and (device is None or device.type == "cpu"):
        return Kernel.TRITON
    _warn_once(
        "triton-no-gpu",
        "kernel TRITON requested but no CUDA device is available (and "
        "TRITON_INTERPRET is not set); using PYTORCH",
    )
    return Kernel.PYTORCH
