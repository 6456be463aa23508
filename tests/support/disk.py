"""Real disk trouble for tests: a small tmpfs mounted over a state directory, filled to ENOSPC
or remounted read-only (EROFS). Needs root (or CAP_SYS_ADMIN); ``can_mount()`` says whether
this machine allows it, so tests skip cleanly elsewhere. No fault-injection hook in the
services: they meet the same errno a full or read-only volume gives.
"""
from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

FILLER = ".disk-filler"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


def can_mount() -> bool:
    """True when a tmpfs can be mounted here (probed once on a scratch directory)."""
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory(prefix="go-trader-mount-probe-") as probe:
        if _run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe).returncode != 0:
            return False
        _run("umount", "-l", probe)
    return True


@contextmanager
def small_tmpfs(path: Path, size_kb: int = 2048) -> Iterator[Path]:
    """A ``size_kb`` tmpfs mounted at ``path`` (created), unmounted (lazily) on exit."""
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path))
    if done.returncode != 0:
        raise OSError(f"mount tmpfs on {path}: {done.stderr.strip()}")
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


def fill(directory: Path) -> int:
    """Write a filler file until the volume is full (ENOSPC); the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    fd = os.open(directory / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            try:
                n = os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]
                continue
            written += n
    finally:
        os.close(fd)


def free(directory: Path) -> None:
    (directory / FILLER).unlink(missing_ok=True)


def remount(path: Path, readonly: bool) -> None:
    done = _run("mount", "-o", f"remount,{'ro' if readonly else 'rw'}", str(path))
    if done.returncode != 0:
        raise OSError(f"remount {path}: {done.stderr.strip()}")
