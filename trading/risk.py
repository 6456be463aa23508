"""Per-strategy risk limits: drawdown kill switch, loss-streak circuit breaker, daily loss.

Pure: the caller passes the book value and the market time (``ts_event``, int ms UTC) in,
so a backtest and a paper run trip the same limits on the same bars. Entry blocks never stop
exits; the kill switch additionally asks the caller to liquidate (see
``trading.ledger.liquidation_orders``) so a tripped strategy stops bleeding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from common.model import MAX_DAY, read_bool, read_int, read_number, read_object, read_str, read_ts
from common.timeframes import DAY_MS

# Float noise must not keep a drawdown of exactly the limit from tripping it.
_PCT_TOLERANCE = 1e-9


def iso_utc(ts: int) -> str:
    """A market timestamp (ms) as ISO-8601 UTC, for messages people read."""
    return datetime.fromtimestamp(ts / 1000, tz=timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits per strategy; percentages are of the book value (0-100)."""

    max_drawdown_pct: float = 60.0
    max_position_pct: float = 95.0
    max_consecutive_losses: int = 5
    circuit_breaker_ms: int = DAY_MS
    daily_loss_pct: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_drawdown_pct", "max_position_pct", "daily_loss_pct"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
                raise ValueError(f"RiskLimits.{name}: must be a number in (0, 100], got {value!r}")
        if isinstance(self.max_consecutive_losses, bool) or not isinstance(self.max_consecutive_losses, int) \
                or self.max_consecutive_losses < 1:
            raise ValueError(
                f"RiskLimits.max_consecutive_losses: must be an integer >= 1, got {self.max_consecutive_losses!r}"
            )
        if isinstance(self.circuit_breaker_ms, bool) or not isinstance(self.circuit_breaker_ms, int) \
                or self.circuit_breaker_ms < 0:
            raise ValueError(f"RiskLimits.circuit_breaker_ms: must be an integer >= 0, got {self.circuit_breaker_ms!r}")


@dataclass(slots=True)
class RiskState:
    """What risk remembers between marks; persisted in state.json with the book.

    ``day`` counts UTC days since the epoch in market time; ``last_value`` is the value at
    the latest mark, kept so /status can show the drawdown without prices.
    """

    peak_value: float
    kill_switch: bool
    kill_reason: str
    consecutive_losses: int
    circuit_breaker_until: int  # ts ms, 0 = off
    day: int
    day_start_value: float
    daily_loss_tripped: bool
    last_value: float
    resets: int = 0  # times an operator re-armed the strategy (``reset_risk``)
    last_reset_ts: int = 0  # market time (ms) of the last reset, 0 = never

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_value": self.peak_value,
            "kill_switch": self.kill_switch,
            "kill_reason": self.kill_reason,
            "consecutive_losses": self.consecutive_losses,
            "circuit_breaker_until": self.circuit_breaker_until,
            "day": self.day,
            "day_start_value": self.day_start_value,
            "daily_loss_tripped": self.daily_loss_tripped,
            "last_value": self.last_value,
            "resets": self.resets,
            "last_reset_ts": self.last_reset_ts,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "risk") -> "RiskState":
        read_object(d, where)
        return cls(
            peak_value=read_number(d, "peak_value", where),
            kill_switch=read_bool(d, "kill_switch", where),
            kill_reason=read_str(d, "kill_reason", where),
            consecutive_losses=read_int(d, "consecutive_losses", where, minimum=0),
            circuit_breaker_until=read_ts(d, "circuit_breaker_until", where),
            day=read_ts(d, "day", where, last=MAX_DAY),
            day_start_value=read_number(d, "day_start_value", where),
            daily_loss_tripped=read_bool(d, "daily_loss_tripped", where),
            last_value=read_number(d, "last_value", where),
            resets=read_int(d, "resets", where, minimum=0) if "resets" in d else 0,  # absent before resets existed
            last_reset_ts=read_ts(d, "last_reset_ts", where) if "last_reset_ts" in d else 0,
        )


def new_risk_state(value: float, ts_event: int) -> RiskState:
    """Fresh state for a book worth ``value`` at ``ts_event``: peak and day start are that value."""
    return RiskState(
        peak_value=value,
        kill_switch=False,
        kill_reason="",
        consecutive_losses=0,
        circuit_breaker_until=0,
        day=ts_event // DAY_MS,
        day_start_value=value,
        daily_loss_tripped=False,
        last_value=value,
    )


def drawdown_pct(peak_value: float, value: float) -> float:
    """Percent below the peak (0 at or above it, and when there is no positive peak)."""
    if peak_value <= 0 or value >= peak_value:
        return 0.0
    return (peak_value - value) / peak_value * 100.0


def kill_switch_trips(peak_value: float, value: float, max_drawdown_pct: float) -> bool:
    """A drawdown of at least the limit trips the kill switch. A 100% limit means "never, unless
    the book is worth nothing": in percent arithmetic a book at a billionth of its peak would
    otherwise trip it at 99.9999999%, which no one who set 100% meant."""
    if max_drawdown_pct >= 100.0:
        return peak_value > 0 and value <= 0.0
    return drawdown_pct(peak_value, value) >= max_drawdown_pct - _PCT_TOLERANCE


def update_on_mark(state: RiskState, limits: RiskLimits, value: float, ts_event: int) -> list[str]:
    """Fold one mark-to-market into the state; returns what tripped or rolled, for the log.

    The daily window rolls at 00:00 UTC of market time: the first mark of a new day sets
    ``day_start_value`` to that mark and clears the daily loss trip. The kill switch is
    sticky until ``reset_risk``.
    """
    if not math.isfinite(value):
        raise ValueError(f"update_on_mark: value must be a finite number, got {value!r}")
    events: list[str] = []
    day = ts_event // DAY_MS
    if day > state.day:
        state.day = day
        state.day_start_value = value
        if state.daily_loss_tripped:
            events.append(f"daily_loss: cleared for the new day {iso_utc(day * DAY_MS)[:10]}")
        state.daily_loss_tripped = False
    state.last_value = value
    if value > state.peak_value:
        state.peak_value = value
    dd = drawdown_pct(state.peak_value, value)
    if not state.kill_switch and kill_switch_trips(state.peak_value, value, limits.max_drawdown_pct):
        state.kill_switch = True
        state.kill_reason = (
            f"drawdown {dd:.1f}% >= {limits.max_drawdown_pct:g}% "
            f"(peak {state.peak_value:.2f}, value {value:.2f}, at {iso_utc(ts_event)})"
        )
        events.append(f"kill_switch: {state.kill_reason}")
    floor = state.day_start_value * (1.0 - limits.daily_loss_pct / 100.0)
    if not state.daily_loss_tripped and value < floor:
        state.daily_loss_tripped = True
        events.append(
            f"daily_loss: value {value:.2f} < {floor:.2f} "
            f"({limits.daily_loss_pct:g}% below the day start {state.day_start_value:.2f})"
        )
    return events


def update_on_trade_closed(state: RiskState, limits: RiskLimits, realized_pnl: float, ts_event: int) -> list[str]:
    """Count consecutive losing closes; N in a row pause entries for ``circuit_breaker_ms``.

    A win (pnl >= 0) resets the count; tripping the breaker resets it too, so after the pause
    another full streak is needed to trip again.
    """
    if realized_pnl >= 0:
        state.consecutive_losses = 0
        return []
    state.consecutive_losses += 1
    if state.consecutive_losses < limits.max_consecutive_losses:
        return []
    state.consecutive_losses = 0
    state.circuit_breaker_until = ts_event + limits.circuit_breaker_ms
    return [
        f"circuit_breaker: {limits.max_consecutive_losses} consecutive losses, "
        f"entries paused until {iso_utc(state.circuit_breaker_until)}"
    ]


def entry_block_reason(state: RiskState, ts_event: int) -> str | None:
    """Why a new position may not be opened at ``ts_event`` (market time), or None."""
    if state.kill_switch:
        return f"kill switch: {state.kill_reason}"
    if ts_event < state.circuit_breaker_until:
        return f"circuit breaker until {iso_utc(state.circuit_breaker_until)}"
    if state.daily_loss_tripped and ts_event // DAY_MS <= state.day:
        return f"daily loss limit hit on {iso_utc(state.day * DAY_MS)[:10]}; entries resume at 00:00 UTC"
    return None


def reset_risk(state: RiskState, value: float, ts_event: int) -> list[str]:
    """Operator re-arms a strategy at ``ts_event`` (market time), book worth ``value``: clears the
    kill switch, the circuit breaker with its loss streak, and the daily
    loss limit, whose day restarts at ``value``; the peak restarts at ``value`` too, so the kill
    switch does not re-trip at once. Returns what was cleared, for the log; nothing
    tripped means nothing changes (an empty list, and the reset is not counted)."""
    if not math.isfinite(value):
        raise ValueError(f"reset_risk: value must be a finite number, got {value!r}")
    cleared = []
    if state.kill_switch:
        cleared.append(f"kill_switch ({state.kill_reason})")
        state.kill_switch, state.kill_reason = False, ""
        state.peak_value = state.last_value = value
    if ts_event < state.circuit_breaker_until:
        cleared.append(f"circuit_breaker (until {iso_utc(state.circuit_breaker_until)})")
        state.circuit_breaker_until = 0
        state.consecutive_losses = 0
    if state.daily_loss_tripped:
        cleared.append(f"daily_loss (day start {state.day_start_value:.2f})")
        state.daily_loss_tripped = False
        state.day = max(state.day, ts_event // DAY_MS)
        state.day_start_value = value
    if cleared:
        state.resets += 1
        state.last_reset_ts = ts_event
    return cleared


def risk_summary(state: RiskState, ts_event: int) -> dict[str, Any]:
    """The risk part of /status, as of ``ts_event``."""
    return {
        "kill_switch": state.kill_switch,
        "kill_reason": state.kill_reason,
        "circuit_breaker": ts_event < state.circuit_breaker_until,
        "circuit_breaker_until": state.circuit_breaker_until,
        "consecutive_losses": state.consecutive_losses,
        "daily_loss_tripped": state.daily_loss_tripped and ts_event // DAY_MS <= state.day,
        "drawdown_pct": drawdown_pct(state.peak_value, state.last_value),
        "peak_value": state.peak_value,
        "resets": state.resets,
        "last_reset_ts": state.last_reset_ts,
    }
