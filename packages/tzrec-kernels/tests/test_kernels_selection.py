"""Kernel enum and the TRITON -> PYTORCH degradation rule."""

import logging

import pytest
import torch

from tzrec.kernels import (
    Kernel,
    hstu_mha,
    resolve_kernel,
    to_kernel,
)
from tzrec.kernels import (
    kernel as kernel_mod,
)


def test_enum_values_match_config_enum():
    assert (Kernel.TRITON, Kernel.PYTORCH, Kernel.CUTLASS) == (0, 1, 2)


def test_to_kernel_accepts_names_ints_and_members():
    assert to_kernel("triton") is Kernel.TRITON
    assert to_kernel(1) is Kernel.PYTORCH
    assert to_kernel(Kernel.CUTLASS) is Kernel.CUTLASS
    with pytest.raises(ValueError, match="unknown kernel 'FOO'"):
        to_kernel("FOO")


def test_triton_runs_under_the_interpreter_on_cpu():
    assert resolve_kernel(Kernel.TRITON, torch.device("cpu")) is Kernel.TRITON


@pytest.fixture
def no_gpu_no_interpreter(monkeypatch):
    """Simulate a GPU-less machine without TRITON_INTERPRET."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(kernel_mod, "cuda_available", lambda: False)
    monkeypatch.setattr(kernel_mod, "_warned", set())


def test_triton_without_gpu_degrades_to_pytorch_with_one_warning(no_gpu_no_interpreter, caplog):
    with caplog.at_level(logging.WARNING, logger="tzrec.kernels.kernel"):
        assert resolve_kernel("TRITON", torch.device("cpu")) is Kernel.PYTORCH
        assert resolve_kernel("TRITON") is Kernel.PYTORCH
    warnings = [r for r in caplog.records if "no CUDA device" in r.getMessage()]
    assert len(warnings) == 1


def test_degraded_op_still_computes(no_gpu_no_interpreter, caplog):
    torch.manual_seed(0)
    q, k, v = (torch.randn(5, 1, 4) for _ in range(3))
    offsets = torch.tensor([0, 2, 5])
    with caplog.at_level(logging.WARNING):
        out = hstu_mha(3, 1.0, q, k, v, offsets, kernel=Kernel.TRITON)
    ref = hstu_mha(3, 1.0, q, k, v, offsets, kernel=Kernel.PYTORCH)
    torch.testing.assert_close(out, ref)
    assert "using PYTORCH" in caplog.text


def test_cutlass_degrades_to_pytorch_with_warning(monkeypatch, caplog):
    monkeypatch.setattr(kernel_mod, "_warned", set())
    with caplog.at_level(logging.WARNING):
        assert resolve_kernel(Kernel.CUTLASS) is Kernel.PYTORCH
    assert "CUTLASS" in caplog.text
