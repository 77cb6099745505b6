"""The ``tzrec`` command line: subcommands come from the ``register_commands`` hook.

Errors derived from :class:`tzrec.core.errors.TzrecError` print as one line on stderr and
exit non-zero; ``--debug`` (or ``TZREC_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from tzrec.core import __version__
from tzrec.core.errors import TzrecError
from tzrec.core.fbgemm import fbgemm_fix, is_fbgemm_load_record
from tzrec.core.plugins import get_plugin_manager

logger = logging.getLogger("tzrec")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog="tzrec",
        description="Train, evaluate, export and serve recommendation models.",
    )
    parser.add_argument("--version", action="version", version=f"tzrec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = get_plugin_manager().registry("commands")
    for name in sorted(commands):
        command = commands[name].load()
        if isinstance(command, type):
            command = command()
        sp = sub.add_parser(
            name,
            help=command.help,
            description=command.description or command.help,
        )
        command.add_arguments(sp)
        sp.set_defaults(_command=command)
    return parser


#: Libraries whose warnings about their own internals are noise to a tzrec user.
_QUIET_LOGGERS = ("torchrec", "torch.distributed", "torch.fx", "fbgemm_gpu", "tensorboard")
_QUIET_PATHS = ("/torchrec/", "/torch/distributed/", "/fbgemm_gpu/")
_QUIET_WARNING_MODULES = r"(torchrec|fbgemm_gpu|torch\.distributed|torch\.nn\.parallel)"


def _setup_logging(debug: bool) -> None:
    """One stderr handler with tzrec's format on the root logger.

    Plain stream handlers that libraries installed at import time (torchrec calls
    ``basicConfig``) are replaced; other handlers (files, test capture) are kept.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        handler.addFilter(_drop_library_chatter)
        warnings.filterwarnings("ignore", module=_QUIET_WARNING_MODULES)


def _drop_library_chatter(record: logging.LogRecord) -> bool:
    """Keep library records logged through the root logger only when they are errors.

    fbgemm's "could not load the library" errors are dropped too: the CLI reports that
    failure as one line with its fix (:func:`tzrec.core.fbgemm.fbgemm_fix`).
    """
    if is_fbgemm_load_record(record):
        return False
    if record.levelno >= logging.ERROR:
        return True
    return not any(part in record.pathname for part in _QUIET_PATHS)


def one_line(error: BaseException) -> str:
    """The user-facing line of an error, also when it was raised in a DataLoader worker.

    PyTorch re-raises a worker's exception with the worker's traceback in the message; the
    original message is its last line, after the exception's qualified name.
    """
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    name = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last[len(name) :] if last.startswith(name) else last


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tzrec`` console script; returns the exit code."""
    return _run(argv, build_parser)


def console_main() -> None:
    """The ``tzrec`` console script: :func:`main`, then a prompt exit after an error.

    Once the one-line error is printed nothing is left to do, yet tearing down torch,
    torchrec and DataLoader state can take tens of seconds on a loaded machine; so a failed
    run flushes its streams and logging and leaves at once (``os._exit``). A successful one
    exits normally, so TensorBoard writers and atexit handlers finish.
    """
    rc = main()
    if rc != 0:
        prompt_exit(rc)
    sys.exit(rc)


def prompt_exit(rc: int) -> None:
    """Flush stdout, stderr and logging, then end the process with ``rc`` without teardown."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more to say anyway
            pass
    os._exit(rc)


def run_alias(command: str, prog: str, argv: Sequence[str] | None = None) -> int:
    """Run the ``tzrec <command>`` subcommand as program ``prog`` (upstream's entry points).

    ``python -m tzrec.train_eval ...`` is ``tzrec train ...`` with the same flags, errors and
    exit codes; only the program name in usage and help differs.
    """

    def parser_for_alias() -> argparse.ArgumentParser:
        registration = get_plugin_manager().registry("commands").get(command)
        if registration is None:
            raise TzrecError(f"{prog} runs `tzrec {command}`, which no installed plugin provides")
        cmd = registration.load()
        if isinstance(cmd, type):
            cmd = cmd()
        parser = argparse.ArgumentParser(
            prog=prog,
            description=f"Alias of `tzrec {command}`: {cmd.description or cmd.help}",
        )
        parser.add_argument("--debug", action="store_true", help="show tracebacks")
        cmd.add_arguments(parser)
        parser.set_defaults(_command=cmd)
        return parser

    return _run(argv, parser_for_alias)


def _run(argv: Sequence[str] | None, make_parser: Callable[[], argparse.ArgumentParser]) -> int:
    """Parse, run the chosen command, and turn every error into one line and an exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or os.environ.get("TZREC_DEBUG") == "1"
    try:
        _setup_logging(debug)  # before plugins load: they may import libraries that log
        parser = make_parser()
        # --debug is accepted anywhere on the line (before or after the subcommand)
        args = parser.parse_args([a for a in args_list if a != "--debug"])
        command = getattr(args, "_command", None)
        if command is None:
            parser.print_help()
            return 2
        return int(command.run(args) or 0)
    except TzrecError as e:
        if debug:
            raise
        fix = fbgemm_fix(e)
        print(f"tzrec: error: {fix or one_line(e)}", file=sys.stderr)
        return 1 if fix else e.exit_code
    except KeyboardInterrupt:
        print("tzrec: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # not one of ours: still one line, the traceback on request
        if debug:
            raise
        fix = fbgemm_fix(e)
        if fix:
            print(f"tzrec: error: {fix}", file=sys.stderr)
            return 1
        print(
            f"tzrec: error: {type(e).__name__}: {one_line(e)} (rerun with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    console_main()
