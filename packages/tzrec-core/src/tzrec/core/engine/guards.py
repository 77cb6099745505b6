"""Guards against training on numbers that make no sense: non-finite losses, bad labels.

- **Non-finite loss.** The loss is checked before backward (so neither dense weights nor
  the fused embedding optimizers ever see its gradients). ``TZREC_NON_FINITE_LOSS`` says
  what happens: ``stop`` (default) ends training with one line naming the step and the
  label or feature columns of the batch that hold NaN/inf; ``skip`` drops the batch, counts
  it, and goes on (the count is logged and returned).
- **Label domains.** A model may declare, per label, the values its losses accept
  (``label_domains() -> {label: LabelDomain}``; rank models do: binary cross entropy, focal
  and JRC want ``[0, 1]``, softmax cross entropy class ids ``0 .. num_class-1``). Every
  training and evaluation batch is checked; a violation is one line naming the column.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from tzrec.core.errors import ConfigError, DataError, TzrecError

NON_FINITE_ENV = "TZREC_NON_FINITE_LOSS"
STOP, SKIP = "stop", "skip"


class NonFiniteLossError(TzrecError):
    """Training produced a NaN/inf loss and the policy is to stop."""


@dataclass(frozen=True)
class LabelDomain:
    """The values a label may take for a loss: ``low <= v <= high`` (integers if ``integral``)."""

    low: float
    high: float
    integral: bool
    loss: str


def non_finite_policy() -> str:
    """``stop`` or ``skip``, from ``TZREC_NON_FINITE_LOSS`` (default ``stop``)."""
    value = os.environ.get(NON_FINITE_ENV, STOP).strip().lower() or STOP
    if value not in (STOP, SKIP):
        raise ConfigError(f"{NON_FINITE_ENV}={value!r}: expected 'stop' or 'skip'")
    return value


def _count_bad(t: torch.Tensor) -> int:
    if not torch.is_floating_point(t):
        return 0
    return int((~torch.isfinite(t)).sum())


def nonfinite_columns(batch: Any) -> list[str]:
    """``label 'x' (3 values)``-style descriptions of the batch's columns holding NaN/inf."""
    found = []
    for name, t in (getattr(batch, "labels", None) or {}).items():
        n = _count_bad(t)
        if n:
            found.append(f"label '{name}' ({n} value{'s' if n > 1 else ''})")
    for name, t in (getattr(batch, "sample_weights", None) or {}).items():
        n = _count_bad(t)
        if n:
            found.append(f"sample weight '{name}' ({n} value{'s' if n > 1 else ''})")
    seen: set[str] = set()
    for kt in (getattr(batch, "dense_features", None) or {}).values():
        for name, t in kt.to_dict().items():
            n = _count_bad(t)
            if n and name not in seen:
                seen.add(name)
                found.append(f"feature '{name}' ({n} value{'s' if n > 1 else ''})")
    for name, jt in (getattr(batch, "sequence_dense_features", None) or {}).items():
        n = _count_bad(jt.values())
        if n and name not in seen:
            seen.add(name)
            found.append(f"feature '{name}' ({n} value{'s' if n > 1 else ''})")
    return found


def non_finite_message(step: int, losses: dict[str, float], batch: Any) -> str:
    """The one line that stops training at ``step`` on a non-finite loss."""
    bad = ", ".join(f"{k}={v}" for k, v in losses.items() if not math.isfinite(v)) or "total"
    columns = nonfinite_columns(batch)
    if columns:
        cause = f"the batch has non-finite values in {', '.join(columns)}"
    else:
        cause = (
            "no label or feature of the batch is non-finite: the model diverged (lower the "
            "learning rate, or clip gradients with train_config.grad_clipping)"
        )
    return (
        f"training stopped at step {step}: non-finite loss ({bad}); {cause}. Nothing of this "
        f"step was applied; {NON_FINITE_ENV}=skip skips such batches instead"
    )


def label_domains(model: Any) -> dict[str, LabelDomain]:
    """What the model declares its labels may hold (empty when it declares nothing)."""
    declare = getattr(model, "label_domains", None)
    return dict(declare()) if callable(declare) else {}


def check_labels(
    batch: Any, domains: dict[str, LabelDomain], where: str, allow_non_finite: bool = False
) -> None:
    """Raise a one-line :class:`DataError` when a label falls outside its loss's domain.

    ``where`` names the input (its path) in the message. With ``allow_non_finite`` NaN/inf
    labels pass here (training: the non-finite loss guard reports or skips them).
    """
    labels = getattr(batch, "labels", None) or {}
    for name, dom in domains.items():
        t = labels.get(name)
        if t is None or t.numel() == 0:
            continue
        values = t.detach()
        if torch.is_floating_point(values):
            finite = torch.isfinite(values)
            if not bool(finite.all()):
                if allow_non_finite:
                    continue  # the non-finite loss guard reports it with its step
                n = int((~finite).sum())
                raise DataError(f"{where}: label '{name}' holds {n} non-finite value(s) in a batch")
        else:
            finite = torch.ones_like(values, dtype=torch.bool)
        outside = finite & ((values < dom.low) | (values > dom.high))
        if dom.integral and torch.is_floating_point(values):
            outside |= finite & (values != torch.round(values))
        n = int(outside.sum())
        if n:
            example = values[outside].reshape(-1)[0].item()
            kind = "integers " if dom.integral else ""
            raise DataError(
                f"{where}: label '{name}' holds {n} value(s) outside {kind}[{dom.low:g}, "
                f"{dom.high:g}] in a batch (e.g. {example:g}); {dom.loss} needs labels in "
                f"{kind}[{dom.low:g}, {dom.high:g}]"
            )


__all__ = [
    "NON_FINITE_ENV",
    "SKIP",
    "STOP",
    "LabelDomain",
    "NonFiniteLossError",
    "check_labels",
    "label_domains",
    "non_finite_message",
    "non_finite_policy",
    "nonfinite_columns",
]
