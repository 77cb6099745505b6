"""tzrec-export's plugin: the ``export`` and ``predict`` commands and the exporter."""

from tzrec.core.hookspecs import Register, hookimpl

_COMMANDS = "tzrec.export.commands"


@hookimpl
def register_commands(register: Register) -> None:
    """``tzrec export`` and ``tzrec predict``."""
    register("export", f"{_COMMANDS}:ExportCommand")
    register("predict", f"{_COMMANDS}:PredictCommand")


@hookimpl
def register_exporters(register: Register) -> None:
    """The exporter ``tzrec run`` calls after training."""
    register("default", f"{_COMMANDS}:export_model")
