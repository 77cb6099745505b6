"""Build metrics from ``MetricConfig`` / ``TrainMetricConfig`` and smooth training metrics."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import Metric

from tzrec.protos import metric_pb2


def metric_name(name: str, config: Any) -> str:
    """The display name of a metric: ``recall@5`` for ``recall_at_k``, else ``name``."""
    if name == "recall_at_k":
        return f"recall@{config.top_k}"
    return name


def _lookup(message: Any, what: str) -> tuple[str, Any, Any]:
    from tzrec.core import plugins
    from tzrec.core.config import provided_by, which_oneof
    from tzrec.core.errors import ConfigError

    chosen = which_oneof(message, "metric")
    if chosen is None:
        raise ConfigError(f"{what}: a metric config sets no metric")
    name, sub = chosen
    return name, sub, plugins.get("metrics", name, provided_by(message, name))


def create_metric(config: metric_pb2.MetricConfig, num_class: int = 1) -> tuple[str, str, Metric]:
    """Build the evaluation metric a ``MetricConfig`` names, through the plugin registry.

    Returns:
        The oneof name, the display name (``recall@5``) and the metric.
    """
    name, sub, cls = _lookup(config, "metrics")
    return name, metric_name(name, sub), cls(sub, num_class=num_class)


class TrainMetricWrapper(nn.Module):
    """A training metric smoothed over time.

    Every ``decay_step`` updates the value becomes ``decay_rate * old + (1 - decay_rate) *
    new`` where ``new`` is the metric over the last ``decay_step`` batches (a metric with a
    ``decay(rate)`` method, such as :class:`DecayAUC`, decays its own state instead).

    Args:
        metric: the metric to wrap.
        decay_rate: weight of the previous value.
        decay_step: batches between updates of the value.
    """

    def __init__(self, metric: Metric, decay_rate: float = 0.9, decay_step: int = 100) -> None:
        super().__init__()
        self.metric = metric
        self.decay_rate = decay_rate
        self.decay_step = max(int(decay_step), 1)
        self.register_buffer("value", torch.tensor(0.0))
        self.register_buffer("has_value", torch.tensor(False))
        self.register_buffer("step_count", torch.tensor(0, dtype=torch.long))

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add a batch; refresh the smoothed value every ``decay_step`` batches."""
        self.metric.update(*args, **kwargs)
        self.step_count += 1
        if int(self.step_count) % self.decay_step != 0:
            return
        decay = getattr(self.metric, "decay", None)
        if callable(decay):
            decay(self.decay_rate)
            self.value.fill_(float(self.metric.compute()))
        else:
            new = float(self.metric.compute())
            self.metric.reset()
            if bool(self.has_value):
                new = self.decay_rate * float(self.value) + (1 - self.decay_rate) * new
            self.value.fill_(new)
        self.has_value.fill_(True)

    def compute(self) -> torch.Tensor:
        """The smoothed value (0 until the first ``decay_step`` batches)."""
        return self.value.clone()


def create_train_metric(
    config: metric_pb2.TrainMetricConfig, num_class: int = 1
) -> tuple[str, str, TrainMetricWrapper]:
    """Build a smoothed training metric from a ``TrainMetricConfig``.

    The registered class may name a training variant in ``train_metric_cls`` (``auc`` uses
    :class:`DecayAUC`).

    Returns:
        The oneof name, the display name and the wrapped metric.
    """
    name, sub, cls = _lookup(config, "train_metrics")
    cls = getattr(cls, "train_metric_cls", None) or cls
    wrapper = TrainMetricWrapper(
        cls(sub, num_class=num_class), config.decay_rate, config.decay_step
    )
    return name, metric_name(name, sub), wrapper
