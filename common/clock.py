"""Market time: the accelerated clock of the sim and replay feeds.

Pure: the caller passes the wall time in, so tests and the backtester drive it directly.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MarketClock:
    """Maps wall ms to market ms: ``market_origin + (wall - wall_origin) * speed``."""

    market_origin: int
    wall_origin: int
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


def align_down(ts: int, step_ms: int) -> int:
    return ts - ts % step_ms


def next_due(now_ts: int, interval_ms: int) -> int:
    """The next interval boundary strictly after ``now_ts``, so schedules stay on a grid."""
    return align_down(now_ts, interval_ms) + interval_ms
