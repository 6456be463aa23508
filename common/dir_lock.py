"""One writer per set of files: an exclusive, non-blocking ``flock`` on a lock file.

A service takes its lock before it reads or writes anything it owns (the portfolio its state
directory, marketdata its clock file) and holds it for the life of the process. The kernel
drops the lock when the process dies, however it dies, so a lock is never stale; the PID
written into the file only names the holder in the error a second copy gets.

``prepare_state_dir`` is the rule for a state directory that is not there: it is created
only when the config asks for it (``create_state_dir: true``), because a missing directory is
more often an unmounted volume than a first start, and starting from zero there would hide
every book the real volume holds.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


class LockHeld(RuntimeError):
    """Another process holds the lock; the message names the lock file and the holder's PID."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(
            f"{path} is locked by {holder}: another copy is already writing these files "
            f"(a second stack, or a copied config with new ports that shares this state directory). "
            f"Stop that process, or give this one its own state_file directory."
        )


class StateDirMissing(RuntimeError):
    """The state directory does not exist and the config does not allow creating it."""


def prepare_state_dir(directory: str | os.PathLike[str], create: bool) -> Path:
    """``directory``, created when missing only if ``create``; StateDirMissing otherwise."""
    directory = Path(directory)
    if directory.is_dir():
        return directory
    if directory.exists():
        raise StateDirMissing(f"{directory}: the state directory is a file, not a directory")
    if not create:
        raise StateDirMissing(
            f"{directory}: the state directory does not exist (an unmounted volume?). Nothing was "
            f"created, so no book starts from zero by mistake. Mount the volume, or create it "
            f"(mkdir -p {directory}), or set \"create_state_dir\": true in the config to create it on start."
        )
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class DirLock:
    """An exclusive lock held through an open file descriptor until ``release`` (or exit)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self) -> "DirLock":
        """Take the lock now or raise LockHeld; never waits, so a second copy fails at once."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(self.path, holder) from None
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # a full disk must not stop the lock itself: the flock is what counts
            pass
        self._fd = fd
        return self

    def still_held(self) -> bool:
        """True while the lock file is the one we locked (not deleted or replaced under us)."""
        if self._fd < 0:
            return False
        try:
            mine, now = os.fstat(self._fd), os.stat(self.path)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid.isdigit() else "another process (PID unknown)"
