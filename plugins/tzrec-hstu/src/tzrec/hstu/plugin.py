"""tzrec-hstu's plugin: HSTU models, preprocessors and postprocessors by config name."""

from tzrec.core.hookspecs import Register, hookimpl


@hookimpl
def register_models(register: Register) -> None:
    """``hstu_match`` (generative retrieval)."""
    register("hstu_match", "tzrec.hstu.hstu_match:HSTUMatch")
