"""tzrec-core's own plugin: registered through the ``tzrec`` entry point like any other."""

from tzrec.core.hookspecs import Register, hookimpl

_COMMANDS = "tzrec.core.builtin_commands"


@hookimpl
def register_commands(register: Register) -> None:
    """Core subcommands (lazy references keep ``tzrec --help`` fast)."""
    register("plugins", f"{_COMMANDS}:PluginsCommand")
    register("train", f"{_COMMANDS}:TrainCommand")
    register("eval", f"{_COMMANDS}:EvalCommand")
    register("run", f"{_COMMANDS}:RunCommand")
