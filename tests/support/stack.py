"""Test helpers around a running stack (bench/stack.py starts it): a state.json reader that
must always parse, and the fills the engines logged as acknowledged."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from bench.stack import (  # noqa: F401
    CORE_PROGRAMS,
    ENGINES,
    PROGRAMS,
    REPO,
    Stack,
    config_in,
    keep_programs,
    stack_config,
    stack_security,
)


class StateReader(threading.Thread):
    """Reads state.json as often as it can while a stack runs; every read must parse."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.reads = 0
        self.failures: list[str] = []
        self.stop_event = threading.Event()
        self.paused = threading.Event()  # set while a test damages state.json on purpose

    def run(self) -> None:
        while not self.stop_event.is_set():
            if self.paused.is_set():
                time.sleep(0.01)
                continue
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                time.sleep(0.01)
                continue
            try:
                json.loads(text)
                self.reads += 1
            except ValueError as exc:
                self.failures.append(f"state.json unparsable: {exc}: {text[:80]!r}")
            time.sleep(0.005)


def acked_fill_ids(stack: Stack) -> list[str]:
    """Order ids the signal engines logged as acknowledged with a fill (all log rotations)."""
    ids = []
    for log in sorted((stack.dir / "run" / "logs").glob("signals-*.log*")):
        for line in log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "order_acked" and rec.get("status") == "filled":
                ids.append(rec["order_id"])
    return ids
