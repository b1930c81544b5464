"""The writer lock: one process at a time writes a log.

The lock is an exclusive ``flock`` on ``<log path>.lock``, held for the writer's lifetime. ``flock`` locks
belong to the open file description, so a second writer in the same process is refused too, and the kernel
releases the lock when the holder dies, however it dies: a crashed runtime never leaves a stale lock. The
lock file itself is left in place (deleting it would race with a process that is about to lock it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket

from ._errors import EventLogError, WriterLockedError


def lock_path(path: str) -> str:
    """The lock file that guards the log at ``path``."""
    return path + ".lock"


class WriterLock:
    """An acquired writer lock; :meth:`release` gives it back."""

    def __init__(self, path: str) -> None:
        self.path = lock_path(path)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise EventLogError(
                    f"{path}: cannot open the log for writing: its folder is read-only for this user (creating the "
                    f"writer lock {self.path}: {e.strerror}); open it with writer=False to read it (the CLI's "
                    "query commands, such as status, events and replay, do)"
                ) from e
            raise EventLogError(f"{path}: cannot create the writer lock file {self.path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WriterLockedError(
                    f"{path}: a wantbuild runtime is already running on this log (it holds the writer lock "
                    f"{self.path}); only one process may write a log. Talk to the running runtime through "
                    "its command inbox (the CLI does this by itself), or stop it first."
                ) from None
            raise EventLogError(f"{path}: cannot lock {self.path}: {e}") from e
        try:  # who holds it, for `status` and error messages (the lock, not this text, is what counts)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        except OSError:
            pass
        self._fd: int | None = fd

    def release(self) -> None:
        """Unlock and close the lock file; safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def writer_active(path: str) -> bool:
    """Whether some process (this one included) holds the writer lock of the log at ``path``."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def lock_owner(path: str) -> str:
    """What the holder of the writer lock wrote in the lock file ("pid N on HOST"), or "unknown"."""
    try:
        with open(lock_path(path), encoding="utf-8", errors="replace") as f:
            return f.read(200).strip() or "unknown"
    except OSError:
        return "unknown"
