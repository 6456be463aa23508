"""What /proc says about a process or one of its threads."""
from __future__ import annotations

import os


def nice_of(pid: int, tid: int | None = None) -> int:
    """The nice value of ``pid`` (or of its thread ``tid``): field 19 of its stat file."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        return int(f.read().rpartition(")")[2].split()[16])


def thread_nices(pid: int) -> dict[int, int]:
    """The nice value of every thread of ``pid``."""
    return {int(tid): nice_of(pid, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def thread_policies(pid: int) -> dict[int, int]:
    """The scheduling policy of every thread of ``pid`` (os.SCHED_*): field 41 of its stat file."""
    policies = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            policies[int(tid)] = int(f.read().rpartition(")")[2].split()[38])
    return policies


def thread_cores(pid: int) -> dict[int, frozenset[int]]:
    """The cores every thread of ``pid`` may run on."""
    return {int(tid): frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}
