"""TensorBoard summaries, a training-curve PNG, a tqdm progress line and eval result files.

Everything here writes only on rank 0 (or when told to), so callers need no rank checks.
Tags follow upstream: ``loss/<name>``, ``loss/total``, ``lr/g<i>`` and training
``metric/<name>`` in ``model_dir``; evaluation ``metric/<name>`` in ``model_dir/eval_val``.
Closing a :class:`Summary` also draws ``training_curve.png`` (loss and eval metrics by step,
from the event files, so resumed runs show their whole history) for readers without
TensorBoard.
Evaluation results are appended as one JSON object per line,
``{"global_step": 1000, "auc": 0.71, ...}``, to ``train_eval_result.txt`` during training
and ``eval_result.txt`` for ``tzrec evaluate``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from tzrec.core.engine.ranks import is_rank_zero

logger = logging.getLogger(__name__)

TRAIN_EVAL_RESULT_FILENAME = "train_eval_result.txt"
EVAL_RESULT_FILENAME = "eval_result.txt"
EVAL_SUMMARY_DIR = "eval_val"
TRAINING_CURVE_FILENAME = "training_curve.png"


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item())
    return float(value)


def _lrs(lrs: Mapping[str, float] | Iterable[float] | None) -> dict[str, float]:
    if lrs is None:
        return {}
    if isinstance(lrs, Mapping):
        return {str(k): float(v) for k, v in lrs.items()}
    return {f"g{i}": float(v) for i, v in enumerate(lrs)}


def learning_rates(*optimizers: Any) -> list[float]:
    """The ``lr`` of every parameter group of the given optimizers, in order."""
    return [float(g["lr"]) for opt in optimizers for g in opt.param_groups]


class Summary:
    """A TensorBoard ``SummaryWriter`` that does nothing off rank 0 or when disabled.

    Args:
        log_dir: event file directory (``model_dir``; ``model_dir/eval_val`` for eval).
        enabled: write summaries; default: only on rank 0.
    """

    def __init__(self, log_dir: str | os.PathLike[str], enabled: bool | None = None) -> None:
        self.enabled = is_rank_zero() if enabled is None else enabled
        self.log_dir = Path(log_dir)
        self._writer = None
        self._eval_writer = None
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(log_dir))

    def add_scalar(self, tag: str, value: Any, step: int) -> None:
        """Write one scalar."""
        if self._writer is not None:
            self._writer.add_scalar(tag, _scalar(value), step)

    def log_train(
        self,
        step: int,
        losses: Mapping[str, Any],
        lrs: Mapping[str, float] | Iterable[float] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Write a training step's losses (and their total), learning rates and metrics."""
        if self._writer is None:
            return
        total = 0.0
        for name, value in losses.items():
            v = _scalar(value)
            total += v
            self.add_scalar(f"loss/{name}", v, step)
        self.add_scalar("loss/total", total, step)
        for name, lr in _lrs(lrs).items():
            self.add_scalar(f"lr/{name}", lr, step)
        for name, value in (metrics or {}).items():
            self.add_scalar(f"metric/{name}", value, step)

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Write evaluation metrics as ``metric/<name>`` into ``<log_dir>/eval_val``."""
        if self._writer is None:
            return
        if self._eval_writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._eval_writer = SummaryWriter(str(self.log_dir / EVAL_SUMMARY_DIR))
        for name, value in metrics.items():
            self._eval_writer.add_scalar(f"metric/{name}", _scalar(value), step)

    def flush(self) -> None:
        """Flush pending events to disk."""
        for writer in (self._writer, self._eval_writer):
            if writer is not None:
                writer.flush()

    def close(self) -> None:
        """Flush and close the event files, then draw ``training_curve.png``."""
        if self._writer is None:
            return
        for writer in (self._writer, self._eval_writer):
            if writer is not None:
                writer.close()
        self._writer = self._eval_writer = None
        try:
            write_training_curve(self.log_dir)
        except Exception as e:  # a picture must never fail a training run
            logger.warning("could not draw %s: %s", self.log_dir / TRAINING_CURVE_FILENAME, e)

    def __enter__(self) -> Summary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProgressReporter:
    """A tqdm line with steps, steps/s and the latest losses, on rank 0 only.

    Args:
        desc: the line's label (``Training``, ``Evaluating model-1000``).
        total: expected number of steps, if known.
        start_step: the step training resumes from.
        enabled: show the line; default: only on rank 0.
        log_interval_s: also log a plain line this often (for non-interactive logs).
    """

    def __init__(
        self,
        desc: str = "Training",
        total: int | None = None,
        start_step: int = 0,
        enabled: bool | None = None,
        log_interval_s: float = 60.0,
    ) -> None:
        self.enabled = is_rank_zero() if enabled is None else enabled
        self.desc = desc
        self.step = start_step
        self._start_step = start_step
        self._start_time = time.monotonic()
        self._last_log = self._start_time
        self._log_interval_s = log_interval_s
        self._bar = None
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=start_step, desc=desc, unit="step", dynamic_ncols=True
            )

    def steps_per_second(self) -> float:
        """Average steps per second since this reporter started."""
        elapsed = time.monotonic() - self._start_time
        return (self.step - self._start_step) / elapsed if elapsed > 0 else 0.0

    def format(
        self,
        losses: Mapping[str, Any] | None = None,
        lrs: Mapping[str, float] | Iterable[float] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> str:
        """``lr_g0:0.00100 loss_a:0.69315 total_loss:0.69315 auc:0.51000``."""
        parts = [f"lr_{k}:{v:.5f}" for k, v in _lrs(lrs).items()]
        if losses:
            values = {k: _scalar(v) for k, v in losses.items()}
            parts += [f"{k}:{v:.5f}" for k, v in values.items()]
            parts.append(f"total_loss:{math.fsum(values.values()):.5f}")
        parts += [f"{k}:{_scalar(v):.5f}" for k, v in (metrics or {}).items()]
        return " ".join(parts)

    def update(
        self,
        step: int,
        losses: Mapping[str, Any] | None = None,
        lrs: Mapping[str, float] | Iterable[float] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Advance to ``step`` and show the given values."""
        delta = step - self.step
        self.step = step
        if not self.enabled:
            return
        text = self.format(losses, lrs, metrics)
        if self._bar is not None:
            if text:
                self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(max(delta, 0))
        now = time.monotonic()
        if now - self._last_log >= self._log_interval_s:
            self._last_log = now
            logger.info(
                "%s step %d (%.2f steps/s) %s", self.desc, step, self.steps_per_second(), text
            )

    def close(self) -> None:
        """Finish the line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_result_writable(path: str | os.PathLike[str]) -> None:
    """Fail before any work when the metrics file ``path`` could not be written.

    Probes by creating (and removing) a file beside it, since permission bits say nothing
    for root or read-only mounts.

    Raises:
        ConfigError: one line naming the path and the OS error.
    """
    import tempfile

    from tzrec.core.errors import ConfigError

    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tzrec-write-probe-", dir=p.parent)
        os.close(fd)
        os.unlink(probe)
        if p.exists() and not os.access(p, os.W_OK):
            raise PermissionError(f"[Errno 13] Permission denied: '{p}'")
    except OSError as e:
        raise ConfigError(f"{p}: cannot write the evaluation result here ({e})") from None


def write_eval_result(
    path: str | os.PathLike[str],
    step: int | None,
    metrics: Mapping[str, Any],
    enabled: bool | None = None,
) -> dict[str, Any] | None:
    """Append ``{"global_step": step, <metrics sorted by name>}`` as one JSON line.

    Returns:
        The record written, or None off rank 0.
    """
    if not (is_rank_zero() if enabled is None else enabled):
        return None
    record: dict[str, Any] = {"global_step": step}
    record.update({k: _scalar(v) for k, v in sorted(metrics.items())})
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return record


def read_eval_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of an eval result file, in file order (empty if it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line]


def best_eval_step(
    path: str | os.PathLike[str], metric: str | None = None, larger_is_better: bool = True
) -> int | None:
    """The ``global_step`` with the best ``metric`` (the only metric when None).

    Raises:
        KeyError: ``metric`` is not in the results, or it is None but several metrics are.
    """
    best: tuple[float, int] | None = None
    for record in read_eval_results(path):
        values = {k: v for k, v in record.items() if k != "global_step"}
        if metric is None:
            if len(values) != 1:
                raise KeyError(f"{path}: several metrics ({', '.join(values)}); name one")
            value = next(iter(values.values()))
        elif metric in values:
            value = values[metric]
        else:
            raise KeyError(f"{path}: no metric {metric!r} at step {record.get('global_step')}")
        key = value if larger_is_better else -value
        if best is None or key > best[0]:
            best = (key, record["global_step"])
    return None if best is None else best[1]


def read_scalars(log_dir: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in ``log_dir`` (not its subdirectories)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    series: dict[str, list[tuple[int, float]]] = {}
    for tag in acc.Tags().get("scalars", []):
        by_step = {e.step: float(e.value) for e in acc.Scalars(tag)}  # a resume rewrites steps
        series[tag] = sorted(by_step.items())
    return series


def write_training_curve(
    model_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> Path | None:
    """Draw ``loss/total`` and the eval metrics of ``model_dir`` by step as a PNG.

    The top panel is the training loss (``model_dir`` events), the bottom one every eval
    ``metric/<name>`` (``model_dir/eval_val`` events), drawn with matplotlib's Agg backend
    (no display needed). Returns the PNG path, or None when there is nothing to draw.
    """
    model_dir = Path(model_dir)
    train = read_scalars(model_dir)
    eval_dir = model_dir / EVAL_SUMMARY_DIR
    evals = read_scalars(eval_dir) if eval_dir.is_dir() else {}
    loss = train.get("loss/total", [])
    metrics = {k.removeprefix("metric/"): v for k, v in sorted(evals.items()) if v}
    if not loss and not metrics:
        return None
    from matplotlib.figure import Figure  # a Figure without pyplot: no global state, no GUI

    fig = Figure(figsize=(9, 6.2), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    _panel(top, {"loss/total": loss}, "training loss")
    _panel(bottom, metrics, "eval metrics")
    bottom.set_xlabel("step")
    path = Path(out) if out is not None else model_dir / TRAINING_CURVE_FILENAME
    fig.savefig(path, format="png")
    return path


def _panel(ax: Any, series: Mapping[str, list[tuple[int, float]]], title: str) -> None:
    """One plot: a line (with dots for short series) per series, labelled with its last value."""
    ax.set_title(title, loc="left")
    ax.grid(True, alpha=0.3)
    drawn = False
    for name, points in series.items():
        pts = [(s, v) for s, v in points if math.isfinite(v)]
        if not pts:
            continue
        steps, values = zip(*pts, strict=True)
        ax.plot(
            steps,
            values,
            marker="o" if len(pts) <= 50 else None,
            markersize=3,
            label=f"{name} (last {points[-1][1]:.4f})",
        )
        drawn = True
    if drawn:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "(nothing logged)", transform=ax.transAxes, ha="center", color="gray")
