"""``python -m tzrec.train_eval``: TorchEasyRec's training entry point, an alias of ``tzrec train``.

Upstream's flags keep their names and meaning (docs/cli.md has the table); ``tzrec train``
adds a few of its own. Unknown flags are refused (upstream ignores them silently).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tzrec.core.cli import run_alias


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tzrec train`` with ``argv`` (default: the process arguments)."""
    return run_alias("train", "python -m tzrec.train_eval", argv)


if __name__ == "__main__":
    sys.exit(main())
