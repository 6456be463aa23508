"""The wall clock, read in one place.

Services time envelopes, heartbeats, bar releases and live polls by ``wall_ms``; a test that
fakes the wall clock replaces it in the module that reads it. Pure modules never import this.
"""
from __future__ import annotations

import time


def wall_ms() -> float:
    """Wall time in ms since the epoch, to the microsecond: a bar goes out at its close, not at
    the next whole millisecond. ``int(wall_ms())`` where a record wants whole ms."""
    return time.time_ns() / 1e6
