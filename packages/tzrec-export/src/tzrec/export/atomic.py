"""Outputs that appear whole or not at all: locks, durable writes, rename-based swaps.

Every export directory and predict output is written under a unique hidden temporary name
beside its target (``.<name>.tmp-<pid>-<random>``), fsync'ed, then put in place by rename:

1. ``<target>`` → ``.<name>.old-<pid>-<random>`` (only when replacing),
2. temporary → ``<target>``, then the parent directory is fsync'ed,
3. the old copy is deleted.

A kill between 1 and 2 leaves no ``<target>``, the old copy and a complete new one; the next
run into the same target (holding its lock) restores the old copy and deletes the rest
(:func:`recover`). An output being written is locked (``.<name>.lock`` beside it, holding
the writer's pid; ``flock`` makes a dead holder's lock free again).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from tzrec.core.errors import TzrecError

logger = logging.getLogger(__name__)

TMP_TAG = ".tmp-"
OLD_TAG = ".old-"


class OutputError(TzrecError):
    """An output could not be written (disk full, permissions, I/O); one line, errno + path."""


def describe_os_error(error: OSError) -> str:
    """``[Errno 28] No space left on device: '/path'`` (what ``str`` prints when complete)."""
    if error.errno is None:
        return str(error)
    name = errno.errorcode.get(error.errno, str(error.errno))
    where = f": {error.filename}" if error.filename else ""
    return f"[Errno {error.errno} {name}] {error.strerror or os.strerror(error.errno)}{where}"


def unique_name(target: Path, tag: str) -> Path:
    """A sibling of ``target`` no other run picks: ``.<name><tag><pid>-<random>``."""
    return target.with_name(f".{target.name}{tag}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename or a new file) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (raises ``OSError``, e.g. ENOSPC)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_tree(root: Path) -> None:
    """Flush ``root`` (a file), or every file and directory under it, before a rename."""
    if not root.is_dir():
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def remove(path: Path) -> None:
    """Delete a file or a directory tree; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def leftovers(target: Path, tag: str) -> list[Path]:
    """Temporary (``TMP_TAG``) or replaced (``OLD_TAG``) copies of ``target`` left beside it."""
    if not target.parent.is_dir():
        return []
    prefix = f".{target.name}{tag}"
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(prefix))


def recover(target: Path) -> None:
    """Finish or undo an interrupted swap of ``target``; call with its lock held.

    A missing ``target`` with an old copy beside it (killed between the two renames) gets
    the old copy back; every other temporary or old copy of ``target`` is deleted.
    """
    olds = leftovers(target, OLD_TAG)
    if olds and not os.path.lexists(target):
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.rename(newest, target)
        fsync_dir(target.parent)
        olds.remove(newest)
        logger.warning("%s: restored the previous copy left by an interrupted replace", target)
    for stale in olds + leftovers(target, TMP_TAG):
        logger.warning("%s: removing %s left by an interrupted run", target, stale.name)
        remove(stale)


def swap_in(new: Path, target: Path) -> None:
    """Put the complete, fsync'ed ``new`` at ``target``, replacing what is there (module doc).

    Raises:
        OSError: a rename failed; ``target`` then still holds the old copy (or gets it back
            on the next :func:`recover`).
    """
    old = None
    if os.path.lexists(target):
        old = unique_name(target, OLD_TAG)
        os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        if old is not None and not os.path.lexists(target):
            os.rename(old, target)
        raise
    fsync_dir(target.parent)
    if old is not None:
        remove(old)


@contextlib.contextmanager
def output_lock(target: Path, what: str) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target`` for the duration of a write.

    Raises:
        OutputError: another live process holds it (its pid named).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(f".{target.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise OutputError(
                f"{what} {target} is being written by another tzrec process (pid {holder}, "
                f"lock {lock}); wait for it to finish or choose another path"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed it between our open and flock: take a fresh one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "unknown"


__all__ = [
    "OutputError",
    "describe_os_error",
    "output_lock",
    "recover",
    "swap_in",
    "unique_name",
    "write_file",
]
