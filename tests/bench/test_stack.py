"""bench.stack.Stack: its stop (a program supervisord had to SIGKILL for not stopping is an error)
and its freeze."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bench.stack import Stack

SUPERVISORD_LOG = """\
2026-12-03 03:53:01,723 INFO waiting for marketdata to stop
2026-12-03 03:53:05,010 WARN exited: portfolio (terminated by SIGKILL; not expected)
2026-12-03 03:53:12,659 INFO waiting for marketdata, portfolio, pricer, signals-options, signals-spot to die
2026-12-03 03:53:27,707 WARN killing 'signals-spot' (18783) with SIGKILL
2026-12-03 03:53:27,729 WARN stopped: signals-spot (terminated by SIGKILL)
"""


def stopped(stack: Stack) -> Stack:
    """``stack`` as it is once its supervisord has exited."""
    stack.proc = subprocess.Popen([sys.executable, "-c", ""])
    stack.proc.wait()
    return stack


def test_a_program_killed_for_outliving_stopwaitsecs_fails_the_stop_and_a_kill_9_does_not(tmp_path):
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    stopped(Stack(tmp_path)).stop()  # no log: nothing to report
    (logs / "supervisord.log").write_text(SUPERVISORD_LOG.replace("killing 'signals-spot' (18783) with SIGKILL", ""))
    stopped(Stack(tmp_path)).stop()  # the portfolio's kill -9 (a chaos test's) is not a hang
    (logs / "supervisord.log").write_text(SUPERVISORD_LOG)
    assert Stack(tmp_path).killed_for_not_stopping() == ["signals-spot"]
    with pytest.raises(RuntimeError, match=r"signals-spot did not stop on SIGTERM within stopwaitsecs"):
        stopped(Stack(tmp_path)).stop()


def test_freezing_a_program_that_is_not_running_signals_nothing(tmp_path, monkeypatch):
    stack = Stack(tmp_path)
    monkeypatch.setattr(stack, "pid", lambda _program: 0)  # supervisord's pid of a program not running
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr("bench.stack.os.kill", lambda pid, sig: sent.append((pid, sig)))
    with pytest.raises(RuntimeError, match="cannot freeze marketdata: it is not running"):
        stack.freeze("marketdata", 0.01)
    assert sent == []  # os.kill(0, SIGSTOP) would have stopped this test's own process group
