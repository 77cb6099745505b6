"""Kernel tests run Triton in its CPU interpreter; this must precede triton's import."""

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


def _grads(out, inputs, grad_out):
    """Gradients of <out, grad_out> w.r.t. inputs (None where unused)."""
    return torch.autograd.grad(out, inputs, grad_out, allow_unused=True)


@pytest.fixture
def assert_matches():
    """Check two callables agree in value and in gradient w.r.t. `inputs`."""

    def check(fn_a, fn_b, inputs, atol=1e-5, rtol=1e-4):
        out_a, out_b = fn_a(), fn_b()
        assert out_a.shape == out_b.shape
        torch.testing.assert_close(out_a, out_b, atol=atol, rtol=rtol)
        grad_out = torch.randn_like(out_a)
        for ga, gb in zip(
            _grads(out_a, inputs, grad_out),
            _grads(out_b, inputs, grad_out),
            strict=True,
        ):
            if ga is None or gb is None:
                assert ga is None and gb is None
                continue
            torch.testing.assert_close(ga, gb, atol=atol, rtol=rtol)

    return check
