"""tzrec-models' plugin: models, sequence encoders, losses and metrics by config name."""

from tzrec.core.hookspecs import Register, hookimpl


@hookimpl
def register_losses(register: Register) -> None:
    """Losses by ``LossConfig`` oneof name."""


@hookimpl
def register_metrics(register: Register) -> None:
    """Metrics by ``MetricConfig`` oneof name."""
