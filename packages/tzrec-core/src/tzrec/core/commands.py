"""The ``Command`` contract for ``tzrec`` subcommands and the flags they share.

Subcommands are registered through the ``register_commands`` hook, so plugins add their own
exactly like tzrec-core and tzrec-export add theirs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tzrec.core.errors import ConfigError


class Command:
    """A ``tzrec`` subcommand: one help line, its flags, and what it does."""

    help: str = ""
    description: str | None = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's flags to its subparser."""

    def run(self, args: argparse.Namespace) -> int:
        """Execute the command; return the process exit code."""
        raise NotImplementedError


def add_pipeline_config_arg(parser: argparse.ArgumentParser, required: bool) -> None:
    """``--pipeline_config_path`` and ``--edit_config_json``, as in TorchEasyRec."""
    parser.add_argument(
        "--pipeline_config_path",
        default=None,
        required=required,
        help="pipeline config in protobuf text format (.config) or JSON (.json)",
    )
    parser.add_argument(
        "--edit_config_json",
        default=None,
        help="JSON object of config overrides, e.g. '{\"train_config.num_epochs\": 2}'",
    )
    parser.add_argument(
        "--allow_unsupported_fields",
        action="store_true",
        help="warn about config fields no installed package implements instead of refusing "
        "the config (env TZREC_ALLOW_UNSUPPORTED_FIELDS=1)",
    )


def positive_int(text: str) -> int:
    """An argparse ``type`` for sizes and counts: an integer > 0, else a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def parse_edit_config_json(raw: str | None) -> dict[str, Any]:
    """Parse ``--edit_config_json`` into a dict, or raise a one-line ConfigError."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"--edit_config_json is not valid JSON ({e.msg} at column {e.colno}); "
            "expected an object such as '{\"train_config.num_epochs\": 2}'"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"--edit_config_json must be a JSON object, got {type(value).__name__}")
    return value
