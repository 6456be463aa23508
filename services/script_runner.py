"""User scripts in the seed's style, run off the signal engine's loop.

Each due run is ``python SCRIPT ARGS...`` in a small thread pool, killed after its timeout, so
the loop never waits on a script: it submits, and collects finished answers on later turns.
A strategy whose previous run is still going is not started again.
"""
from __future__ import annotations

import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Sequence

from strategies.script import ScriptError, ScriptSignal, parse_script_output

MAX_WORKERS = 2


def run_script(script: Path, args: Sequence[str], symbol: str, timeout_s: float) -> ScriptSignal:
    """Run one script to its answer, or raise ScriptError naming it and what went wrong."""
    try:
        done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL, cwd=script.parent)
    except subprocess.TimeoutExpired:
        raise ScriptError(f"{script}: timed out after {timeout_s:g}s (killed)") from None
    except OSError as exc:
        raise ScriptError(f"{script}: cannot start: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        raise ScriptError(f"{script}: exited with status {done.returncode}: {tail[:200]}")
    return parse_script_output(done.stdout, str(script), symbol)


class ScriptRunner:
    """Scripts started now, answers taken later: ``submit`` never blocks, ``finished`` neither."""

    def __init__(self, timeout_s: float, workers: int = MAX_WORKERS) -> None:
        self.timeout_s = timeout_s
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="script")
        self.running: dict[str, tuple[Future[ScriptSignal], Any]] = {}

    def submit(self, sid: str, script: Path, args: Sequence[str], symbol: str, context: Any) -> bool:
        """Start ``sid``'s script unless its last run is still going; ``context`` comes back with the answer."""
        if sid in self.running:
            return False
        self.running[sid] = (self.pool.submit(run_script, script, args, symbol, self.timeout_s), context)
        return True

    def finished(self) -> list[tuple[str, Any, ScriptSignal | ScriptError]]:
        """(strategy id, its context, the answer or the error) for every run that has ended."""
        out = []
        for sid, (future, context) in list(self.running.items()):
            if future.done():
                del self.running[sid]
                exc = future.exception()
                if exc is not None and not isinstance(exc, ScriptError):
                    exc = ScriptError(f"{sid}: {type(exc).__name__}: {exc}")
                out.append((sid, context, exc if exc is not None else future.result()))
        return out

    def wait_all(self) -> None:
        """Block until every running script has ended (each is bounded by its timeout): ``--once`` only."""
        wait([future for future, _ in self.running.values()])

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
