"""One writer per state directory, and no orphans: a second portfolio on a running stack's state
directory refuses to start naming the lock and its holder; after supervisord itself is SIGKILLed
every service exits within seconds, and a new supervisord runs one copy of each, no crash loop."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.stack import PROGRAMS, REPO, Stack, stack_config

pytestmark = pytest.mark.timeout(240)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def service_pids(config_path: Path) -> dict[str, list[int]]:
    """Every process on the machine running one of our services on this stack's config: exec'd
    ones by their command line, ones forked by services/forking_supervisord.py by their name."""
    found: dict[str, list[int]] = {p: [] for p in PROGRAMS}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if f"GO_TRADER_CONFIG={config_path}".encode() not in environ or not alive(int(entry.name)):
            continue
        for program in PROGRAMS:
            module, _, engine = program.partition("-")  # signals-spot: services.signals --engine spot
            exec_d = f"services.{module}".encode() in cmdline and (not engine or engine.encode() in cmdline)
            if exec_d or comm == program[:15]:  # a forked one keeps supervisord's cmdline, named by comm
                found[program].append(int(entry.name))
    return found


def test_a_second_portfolio_on_the_same_state_dir_refuses_naming_lock_and_pid(tmp_path):
    with Stack(tmp_path) as stack:
        holder = stack.pid("portfolio")
        stack.wait_for(stack.state_path.exists, 60, "the portfolio's first state.json (it holds the lock by then)")
        copied = stack_config()  # a copied config with new ports, same state file
        copied["state_file"] = str(stack.state_path)
        copy_path = tmp_path / "copy.json"
        copy_path.write_text(json.dumps(copied))
        before = stack.state_path.read_bytes()
        done = subprocess.run([sys.executable, "-m", "services.portfolio", "--config", str(copy_path)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        lock = stack.state_path.parent / "portfolio.lock"
        assert f"{lock} is locked by PID {holder}" in done.stderr
        assert stack.pid("portfolio") == holder and stack.states()["portfolio"] == "RUNNING"
        assert json.loads(stack.state_path.read_text())["journal_seq"] >= json.loads(before)["journal_seq"]


def test_sigkilled_supervisord_leaves_no_orphans_and_a_new_one_runs_one_copy_each(tmp_path):
    stack = Stack(tmp_path)
    stack.start()
    old: list[int] = []
    try:
        old = stack.program_pids()
        assert len(old) == len(PROGRAMS)
        stack.proc.kill()  # SIGKILL: supervisord cannot stop its programs itself
        stack.proc.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in old) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in old if alive(pid)] == [], "services outlived their supervisord"
        json.loads(stack.state_path.read_text())  # they saved on the way out
        (tmp_path / "run" / "supervisor.sock").unlink(missing_ok=True)
        stack.proc = None
        stack.start()  # a new supervisord on the same directory
        first = {p: stack.pid(p) for p in PROGRAMS}
        time.sleep(4)  # long enough for a crash loop (address in use, lock held) to show
        assert {p: stack.pid(p) for p in PROGRAMS} == first
        assert service_pids(stack.config_path) == {p: [pid] for p, pid in first.items()}
        log = (tmp_path / "run" / "logs" / "supervisord.log").read_text()
        restarted = log.split("supervisord started with pid")[-1]
        assert "exited:" not in restarted and restarted.count("spawned:") == len(PROGRAMS)
    finally:
        stack.stop()
        for pid in old:  # a failed run must not leave orphans behind either
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
