"""``python -m tzrec.eval``: TorchEasyRec's evaluation entry point, an alias of ``tzrec eval``.

Upstream's flags keep their names and meaning (docs/cli.md has the table). Unknown flags are
refused (upstream ignores them silently).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tzrec.core.cli import run_alias


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tzrec eval`` with ``argv`` (default: the process arguments)."""
    return run_alias("eval", "python -m tzrec.eval", argv)


if __name__ == "__main__":
    sys.exit(main())
