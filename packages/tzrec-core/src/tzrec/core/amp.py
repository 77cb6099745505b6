"""Loss scaling that also reaches the fused embedding tables.

``train_config.grad_scaler`` multiplies the loss by a scale ``s`` before backward (as
upstream, with ``torch.amp.GradScaler``) so FP16 gradients do not underflow. Dense gradients
are divided by ``s`` again by the scaler before the dense optimizer steps; the embedding
tables, though, are updated by fused optimizers *inside* backward, where no scaler can
reach. So while a scale is active, each embedding lookup's output gets a gradient hook that
divides the gradient by ``s`` on its way into the table's backward: the tables see the true
gradient. A non-finite gradient (an FP16 overflow, the case in which the scaler skips the
dense step) reaches the tables as zeros, so an overflowing step changes no table row.

The engine activates the scale around the forward (:func:`sparse_gradient_scale`); the
embedding modules call :func:`unscale_sparse_gradients` on their outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_SCALE: ContextVar[float | None] = ContextVar("tzrec_sparse_gradient_scale", default=None)


@contextmanager
def sparse_gradient_scale(scale: float | None) -> Iterator[None]:
    """Within the block, embedding outputs unscale their gradients by ``scale`` (None: off)."""
    token = _SCALE.set(scale)
    try:
        yield
    finally:
        _SCALE.reset(token)


def active_scale() -> float | None:
    """The loss scale of the running forward, or None when no loss scaling is active."""
    return _SCALE.get()


def unscale_sparse_gradients(tensors: Iterable[Any]) -> None:
    """Register the 1/scale gradient hook on each tensor that requires grad (no-op if off).

    ``tensors`` are embedding lookup outputs: ``torch.Tensor`` or torchrec ``JaggedTensor``
    (whose ``values()`` is what the table's backward receives).
    """
    scale = _SCALE.get()
    if scale is None or scale == 1.0:
        return
    import torch

    inv = 1.0 / scale

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad * inv
        return torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))

    for t in tensors:
        values = t if isinstance(t, torch.Tensor) else t.values()
        if values.requires_grad:
            values.register_hook(hook)


__all__ = ["active_scale", "sparse_gradient_scale", "unscale_sparse_gradients"]
