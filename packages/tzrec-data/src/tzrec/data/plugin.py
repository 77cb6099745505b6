"""tzrec-data's plugin: dataset readers and negative samplers by config name."""

from tzrec.core.hookspecs import Register, hookimpl


@hookimpl
def register_datasets(register: Register) -> None:
    """Readers by ``DatasetType`` name."""


@hookimpl
def register_samplers(register: Register) -> None:
    """Negative samplers by ``DataConfig`` sampler oneof name."""
