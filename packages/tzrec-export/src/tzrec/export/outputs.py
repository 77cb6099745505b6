"""Parquet outputs of predict and hitrate: one file or a directory of part files, whole.

As upstream's ParquetWriter: a path is a directory holding ``part-0.parquet`` (one part per
writing process; tzrec writes from one); a path ending in ``.parquet`` is that one file.
The output is checked before any input is read, locked, written under a temporary name and
swapped in (:mod:`tzrec.export.atomic`); an existing output is replaced only on request.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tzrec.core.errors import ConfigError
from tzrec.export.atomic import (
    TMP_TAG,
    OutputError,
    describe_os_error,
    fsync_tree,
    output_lock,
    recover,
    remove,
    swap_in,
    unique_name,
)

PART_FILE = "part-0.parquet"


def output_is_file(path: str | Path) -> bool:
    """A path ending in ``.parquet`` is one file; any other a directory of part files."""
    return str(path).endswith(".parquet")


def check_output(path: str | Path, overwrite: bool = False, flag: str = "--output") -> Path:
    """Refuse an output that cannot be written, before any input is read.

    Raises:
        ConfigError: the path exists (without ``overwrite``), or is a directory where a
            file is written (or the reverse).
        OutputError: no writable directory to create it in.
    """
    out = Path(path)
    as_file = output_is_file(out)
    if os.path.lexists(out):
        if as_file and out.is_dir():
            raise ConfigError(
                f"{flag} {out} is a directory, but a path ending in .parquet is written as "
                "one file (drop the suffix to write part files into a directory)"
            )
        if not as_file and not out.is_dir():
            raise ConfigError(
                f"{flag} {out} is a file, but a path not ending in .parquet is written as a "
                "directory of part-N.parquet files (end it in .parquet for one file)"
            )
        if not overwrite:
            raise ConfigError(f"{flag} {out} already exists; pass --overwrite to replace it")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {out}: {parent} is not writable")
    return out


class TableWriter:
    """Appends arrow tables to one parquet file, opened on the first table."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (its schema fixes the file's on the first call)."""
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self.path), table.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        """Finish the file (an empty table is never written: nothing was)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@contextlib.contextmanager
def parquet_output(path: str | Path, overwrite: bool, flag: str) -> Iterator[TableWriter]:
    """A writer into a temporary copy of ``path``, put in place when the block succeeds.

    On an error in the block nothing at ``path`` changes and the temporary copy is removed.

    Raises:
        ConfigError / OutputError: as :func:`check_output`; OutputError also for a write
            that fails (errno and path).
    """
    out = check_output(path, overwrite, flag)
    try:
        with output_lock(out, flag):
            recover(out)
            check_output(out, overwrite, flag)
            tmp = unique_name(out, TMP_TAG)
            if output_is_file(out):
                writer = TableWriter(tmp)
            else:
                tmp.mkdir()
                writer = TableWriter(tmp / PART_FILE)
            try:
                yield writer
                writer.close()
                if not os.path.lexists(writer.path):
                    raise OutputError(f"{flag} {out}: nothing to write")
                fsync_tree(tmp)
                swap_in(tmp, out)
            finally:
                with contextlib.suppress(Exception):
                    writer.close()
                remove(tmp)
    except OSError as e:
        raise OutputError(f"{flag} {out}: not written ({describe_os_error(e)})") from None


__all__ = ["PART_FILE", "TableWriter", "check_output", "output_is_file", "parquet_output"]
