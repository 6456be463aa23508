"""Market time: the accelerated clock of the sim and replay feeds.

Pure: the caller passes the wall time in, so tests and the backtester drive it directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True, slots=True)
class MarketClock:
    """Maps wall ms to market ms: ``market_origin + (wall - wall_origin) * speed``."""

    market_origin: int
    wall_origin: float
    speed: float

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"clock speed must be > 0 market seconds per wall second, got {self.speed!r}")

    def market_ms(self, wall_ms: float) -> int:
        return self.market_origin + int((wall_ms - self.wall_origin) * self.speed)

    def wall_ms_at(self, market_ts: int) -> float:
        """The wall ms at which the market reaches ``market_ts`` (the inverse of ``market_ms``,
        unrounded): when a bar closing at ``market_ts`` is due, and what its lateness counts from."""
        return self.wall_origin + (market_ts - self.market_origin) / self.speed

    def to_dict(self) -> dict[str, float]:
        """The mapping on the wire (in the clock message), so a subscriber converts market time
        to wall time exactly as the feed does."""
        return {"market_origin": self.market_origin, "wall_origin": self.wall_origin, "speed": self.speed}


def clock_from_message(body: Any) -> MarketClock:
    """The mapping a ``clock`` message carries (``MarketClock.to_dict``); ValueError naming
    what is wrong when it is not one."""
    if not isinstance(body, dict):
        raise ValueError(f"clock: expected an object, got {type(body).__name__}")
    fields = {}
    for name in ("market_origin", "wall_origin", "speed"):
        value = body.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"clock.{name}: expected a finite number, got {value!r}")
        fields[name] = value
    return MarketClock(int(fields["market_origin"]), fields["wall_origin"], fields["speed"])


def align_down(ts: int, step_ms: int) -> int:
    return ts - ts % step_ms


def next_due(now_ts: int, interval_ms: int) -> int:
    """The next interval boundary strictly after ``now_ts``, so schedules stay on a grid."""
    return align_down(now_ts, interval_ms) + interval_ms


def next_close(now_ts: int, periods_ms: Iterable[int]) -> int:
    """The first bar close strictly after ``now_ts`` among bars of ``periods_ms`` (market ms)."""
    return min(next_due(now_ts, p) for p in periods_ms)


# A bar close's burst in wall ms, for CloseWindow: from just before the close (housekeeping
# started then would still run when the bar comes) until its orders have come in (decided,
# journaled and acknowledged within tens of ms; more on a loaded machine).
CLOSE_BEFORE_MS = 30.0
CLOSE_AFTER_MS = 150.0


@dataclass(frozen=True, slots=True)
class CloseWindow:
    """The wall time around each bar close that belongs to the close's burst (bar published,
    strategies decided, orders journaled and acknowledged): from ``before_ms`` before a close
    to ``after_ms`` after it. Housekeeping (a state save, a snapshot, an fsync of the clock)
    waits outside it, so it never delays a fill. Each margin is capped at a share of the
    shortest bar period in wall time, so a fast clock still leaves room for housekeeping."""

    clock: MarketClock
    periods_ms: tuple[int, ...]  # the bar periods that close (market ms)
    before_ms: float
    after_ms: float

    def __post_init__(self) -> None:
        if not self.periods_ms or min(self.periods_ms) <= 0:
            raise ValueError(f"close window: bar periods must be positive market ms, got {self.periods_ms!r}")
        if self.before_ms < 0 or self.after_ms < 0:
            raise ValueError(f"close window: margins must be >= 0 ms, got {self.before_ms!r}, {self.after_ms!r}")

    def holds(self, wall_ms: float) -> bool:
        """True when ``wall_ms`` is within a close's burst (market time from the clock)."""
        market = self.clock.market_ms(wall_ms)
        shortest_wall = min(self.periods_ms) / self.clock.speed
        before = min(self.before_ms, 0.2 * shortest_wall)
        after = min(self.after_ms, 0.4 * shortest_wall)
        close = next_close(market, self.periods_ms)
        last_close = max(align_down(market, p) for p in self.periods_ms)
        closing_soon = self.clock.wall_ms_at(close) - wall_ms < before
        return closing_soon or wall_ms - self.clock.wall_ms_at(last_close) < after
