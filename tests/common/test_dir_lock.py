"""One writer: a second holder is refused at once with the lock file and the holder's PID named;
the lock dies with its process; a missing state directory is created only when asked."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from common.dir_lock import DirLock, LockHeld, StateDirMissing, prepare_state_dir

HOLD = ("import sys, time; from common.dir_lock import DirLock; DirLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(60)")


def test_lock_writes_our_pid_and_a_second_lock_in_this_process_is_refused(tmp_path):
    path = tmp_path / "portfolio.lock"
    with DirLock(path) as lock:
        assert lock.held and lock.still_held()
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockHeld) as err:
            DirLock(path).acquire()  # a second open file description: flock refuses it too
        assert str(path) in str(err.value) and f"PID {os.getpid()}" in str(err.value)
    assert not lock.held
    DirLock(path).acquire().release()  # free again once released


def test_lock_held_by_another_process_names_its_pid_and_is_free_once_it_is_killed(tmp_path):
    path = tmp_path / "portfolio.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"locked by PID {holder.pid}"):
            DirLock(path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with DirLock(path) as lock:  # SIGKILL released it: a lock is never stale
        assert path.read_text() == f"{os.getpid()}\n" and lock.held


def test_a_lock_file_replaced_under_us_is_reported_as_lost(tmp_path):
    path = tmp_path / "portfolio.lock"
    with DirLock(path) as lock:
        path.unlink()
        assert not lock.still_held()
        path.write_text("999\n")
        assert not lock.still_held()


def test_a_garbled_pid_is_reported_as_unknown(tmp_path):
    path = tmp_path / "x.lock"
    with DirLock(path):
        path.write_bytes(b"junk")
        with pytest.raises(LockHeld, match=r"another process \(PID unknown\)"):
            DirLock(path).acquire()


def test_lock_in_a_missing_directory_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        DirLock(tmp_path / "gone" / "x.lock").acquire()


def test_missing_state_dir_is_refused_unless_creation_is_asked_for(tmp_path):
    missing = tmp_path / "volume" / "state"
    with pytest.raises(StateDirMissing, match="does not exist.*unmounted volume.*create_state_dir"):
        prepare_state_dir(missing, create=False)
    assert not (tmp_path / "volume").exists()  # nothing created on a refusal
    assert prepare_state_dir(missing, create=True) == missing and missing.is_dir()
    assert prepare_state_dir(missing, create=False) == missing  # exists now: fine either way


def test_a_file_in_place_of_the_state_dir_is_refused(tmp_path):
    (tmp_path / "state").write_text("x")
    with pytest.raises(StateDirMissing, match="is a file, not a directory"):
        prepare_state_dir(tmp_path / "state", create=True)
