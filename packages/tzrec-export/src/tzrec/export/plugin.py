"""tzrec-export's plugin: the ``export`` and ``predict`` commands and the exporter."""

from tzrec.core.hookspecs import Register, hookimpl

_COMMANDS = "tzrec.export.commands"


@hookimpl
def register_commands(register: Register) -> None:
    """``tzrec export``, ``tzrec predict`` and ``tzrec eval-retrieval``."""
    register("export", f"{_COMMANDS}:ExportCommand")
    register("predict", f"{_COMMANDS}:PredictCommand")
    register("eval-retrieval", f"{_COMMANDS}:EvalRetrievalCommand")


@hookimpl
def register_exporters(register: Register) -> None:
    """The exporter ``tzrec run`` calls after training."""
    register("default", f"{_COMMANDS}:export_model")
