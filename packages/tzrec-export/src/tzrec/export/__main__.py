"""``python -m tzrec.export``: TorchEasyRec's export entry point, an alias of ``tzrec export``.

Upstream's flags keep their names and meaning (docs/cli.md has the table); unknown flags are
refused (upstream ignores them silently).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tzrec.core.cli import run_alias


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tzrec export`` with ``argv`` (default: the process arguments)."""
    return run_alias("export", "python -m tzrec.export", argv)


if __name__ == "__main__":
    sys.exit(main())
