"""One training run per ``model_dir``: a lock file held for the whole run.

``<model_dir>/.tzrec.lock`` holds the holder's pid and host. The lock is an exclusive
``flock`` on that file, so the kernel releases it when the holder dies (even by
``kill -9``); a lock file left by a dead process is taken over with a warning. Where the
filesystem has no ``flock`` the pid in the file decides: a live pid on this host holds it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from tzrec.core.errors import TzrecError

logger = logging.getLogger(__name__)

LOCK_FILE = ".tzrec.lock"


class LockedError(TzrecError):
    """Another live process holds the lock of a directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


class DirLock:
    """An exclusive lock on ``directory`` for as long as it is held (a context manager).

    Args:
        directory: the directory to lock (created if missing).
        what: how the refusal names the run (``training``).
    """

    def __init__(self, directory: str | os.PathLike[str], what: str = "training") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        """Take the lock, or raise :class:`LockedError` naming the holder's pid."""
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                self._refuse_unless_stale(fd, e)
                break
            # the holder may have removed the file between our open and flock: lock the
            # file that is there now, not an unlinked one
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_holder(self.path)
        if previous.get("pid") not in (None, os.getpid()):
            logger.warning(
                "%s: taking over the lock of pid %s on %s, which no longer runs",
                self.path,
                previous.get("pid"),
                previous.get("host", "?"),
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _refuse_unless_stale(self, fd: int, e: OSError) -> None:
        """Raise :class:`LockedError` when a live process holds the lock (``fd`` closed)."""
        holder = _read_holder(self.path)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise self._refusal(holder) from None
        # no flock on this filesystem (some network ones): the recorded pid decides
        pid = holder.get("pid")
        if (
            isinstance(pid, int)
            and pid != os.getpid()
            and holder.get("host") == socket.gethostname()
            and _pid_alive(pid)
        ):
            os.close(fd)
            raise self._refusal(holder) from None

    def _refusal(self, holder: dict[str, Any]) -> LockedError:
        pid = holder.get("pid", "unknown")
        host = holder.get("host")
        where = f" on {host}" if host and host != socket.gethostname() else ""
        return LockedError(
            f"{self.directory} is in use by another {self.what} run (pid {pid}{where}, lock "
            f"file {self.path}); wait for it to finish or choose another directory"
        )

    def release(self) -> None:
        """Drop the lock and remove the lock file (idempotent)."""
        if self._fd is None:
            return
        import fcntl

        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["LOCK_FILE", "DirLock", "LockedError"]
