"""What the signal engine decides, without its sockets: which strategies are due and what
each one says on the newest closed bar.

Pure: bars come in as OHLCV, market time as int ms. The service feeds it from the bus; tests
and ``make once`` feed it directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from common.clock import next_due
from common.model import Signal, SpotOrder, spot_order_id
from common.ohlcv import OHLCV, timeframe_ms
from strategies.registry import latest_signal

BarSource = Callable[[str, str], OHLCV]


@dataclass(frozen=True, slots=True)
class SpotDecision:
    """The outcome of one strategy run: a signal (and an order when it says buy/sell), or why not."""

    strategy_id: str
    signal: Signal | None
    order: SpotOrder | None
    skipped: str | None = None


def stale_reason(data: OHLCV, timeframe: str, now_ts: int, label: str) -> str | None:
    """Why ``data`` must not be traded at ``now_ts``: no bars, or a newer bar should have closed."""
    if len(data) == 0:
        return f"no {label} bars yet"
    step = timeframe_ms(timeframe)
    last_close = int(data.ts[-1]) + step
    if now_ts - last_close >= step:
        return f"stale {label} data: last {timeframe} bar closed at {last_close}, market time is {now_ts}"
    return None


def evaluate_spot(strategy_id: str, strategy: str, symbol: str, timeframe: str, params: dict,
                  bars: BarSource, now_ts: int, pair_symbol: str | None = None) -> SpotDecision:
    """Run one spot strategy on the newest closed bar; never trades on stale or missing data."""
    data = bars(symbol, timeframe)
    reason = stale_reason(data, timeframe, now_ts, symbol)
    pair = None
    if reason is None and pair_symbol is not None:
        pair = bars(pair_symbol, timeframe)
        reason = stale_reason(pair, timeframe, now_ts, pair_symbol)
    if reason is not None:
        return SpotDecision(strategy_id, None, None, reason)
    latest = latest_signal(strategy, data, params, pair)
    if not latest.enough_history:
        return SpotDecision(strategy_id, None, None, f"warming up: {len(data)} bars")
    ts_close = latest.ts_bar + timeframe_ms(timeframe)
    signal = Signal(strategy_id, strategy, symbol, timeframe, latest.signal, latest.price,
                    latest.ts_bar, now_ts, latest.indicators)
    order = None
    if latest.signal != 0:
        order = SpotOrder(spot_order_id(strategy_id, latest.ts_bar), strategy_id, symbol,
                          latest.signal, latest.price, ts_close)
    return SpotDecision(strategy_id, signal, order)


class Schedule:
    """Per-strategy due times on a grid of each strategy's interval, in market time."""

    def __init__(self, intervals_s: dict[str, float]) -> None:
        self.interval_ms = {sid: int(seconds * 1000) for sid, seconds in intervals_s.items()}
        self.due_at = {sid: 0 for sid in intervals_s}

    def due(self, now_ts: int) -> list[str]:
        """Strategies due at ``now_ts``; each is rescheduled to its next grid point."""
        ready = [sid for sid, at in self.due_at.items() if now_ts >= at]
        for sid in ready:
            self.due_at[sid] = next_due(now_ts, self.interval_ms[sid])
        return ready

    def all_due(self, ids: Iterable[str]) -> None:
        for sid in ids:
            self.due_at[sid] = 0
