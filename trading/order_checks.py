"""What the portfolio checks a spot order against: its own market, never the sender's word.

An order's price, symbol and time are claims. The portfolio keeps the feed's recent ticks
(``PriceTape``) and answers an order from them: the fill price is its own tick at the
order's time, the declared price must lie within a band around that tick, the symbol must
be one the strategy trades, and the order must not be dated before the portfolio's market
time by more than one bar of the strategy (the one decision that may be in flight while the
next bar forms). Pure: ticks and times come in as arguments.

Outcomes: ``ok`` (fill at ``price``), ``rejected`` (final: the order is wrong) and
``retry`` (transient: the portfolio has not yet seen the market at the order's time; the
signal engine keeps the order and sends it again).
"""
from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import Collection

from common.model import ORDER_RETRY, SpotOrder

# Default half-width of the band around the portfolio's mark that a declared price must lie
# in (config ``price_band_pct``): far wider than a bar's move in a normal market or the gap
# between the engine's bar close and the portfolio's tick, far narrower than a forged price.
DEFAULT_PRICE_BAND_PCT = 5.0
OK, REJECTED, RETRY = "ok", "rejected", ORDER_RETRY


@dataclass(frozen=True, slots=True)
class PriceCheck:
    """The portfolio's answer to a price claim: ``price`` is its own, set when ``status == 'ok'``."""

    status: str  # "ok" | "rejected" | "retry"
    reason: str
    price: float = math.nan


class PriceTape:
    """Recent ticks of each symbol in market-time order, kept for ``span_ms`` of market time."""

    def __init__(self, span_ms: int) -> None:
        if isinstance(span_ms, bool) or not isinstance(span_ms, int) or span_ms < 0:
            raise ValueError(f"span_ms: expected an integer >= 0, got {span_ms!r}")
        self.span_ms = span_ms
        self._ts: dict[str, array[int]] = {}
        self._price: dict[str, array[float]] = {}

    def record(self, symbol: str, price: float, ts: int) -> bool:
        """Add a tick; False (and nothing kept) for a price that is not a finite number > 0
        or a tick older than the symbol's last one (a late duplicate changes nothing)."""
        if not (isinstance(price, (int, float)) and math.isfinite(price) and price > 0):
            return False
        times = self._ts.get(symbol)
        if times is None:
            times = self._ts[symbol] = array("q")
            self._price[symbol] = array("d")
        prices = self._price[symbol]
        if times and ts <= times[-1]:
            if ts == times[-1]:
                prices[-1] = float(price)
                return True
            return False
        times.append(ts)
        prices.append(float(price))
        cut = bisect_right(times, ts - self.span_ms) - 1  # keep the newest tick at or before the span's start
        if cut > 64:  # prune in batches: deleting the head of an array moves the rest
            del times[:cut]
            del prices[:cut]
        return True

    def symbols(self) -> set[str]:
        return set(self._ts)

    def last(self, symbol: str) -> tuple[int, float] | None:
        times = self._ts.get(symbol)
        return (times[-1], self._price[symbol][-1]) if times else None

    def behind(self, symbol: str, ts: int) -> bool:
        """True when no tick of ``symbol`` at or after market time ``ts`` is here yet."""
        times = self._ts.get(symbol)
        return not times or times[-1] < ts

    def price_at(self, symbol: str, ts: int) -> tuple[int, float] | None:
        """(tick time, price) of the newest tick at or before ``ts``, or None."""
        times = self._ts.get(symbol)
        if not times:
            return None
        i = bisect_right(times, ts) - 1
        return (times[i], self._price[symbol][i]) if i >= 0 else None

    def nearest(self, symbol: str, ts: int) -> tuple[int, float] | None:
        """(tick time, price) of the tick nearest ``ts`` on either side (the earlier on a tie),
        or None: the price of a moment the portfolio may have marked only after it passed."""
        times = self._ts.get(symbol)
        if not times:
            return None
        i = bisect_right(times, ts)  # times[i - 1] <= ts < times[i]
        if i == len(times) or (i > 0 and ts - times[i - 1] <= times[i] - ts):
            i -= 1
        return times[i], self._price[symbol][i]


def backdated_reason(ts_event: int, market_ts: int, lag_ms: int) -> str | None:
    """Why an order dated ``ts_event`` is too old for market time ``market_ts``, or None.

    ``lag_ms`` is the strategy's bar: the order of the bar that just closed may still be on
    its way while the next bar forms; anything older was decided on a market that is gone
    (or on a rewound clock) and is refused, never filled at an old price."""
    if ts_event < market_ts - lag_ms:
        return (f"back-dated: order time {ts_event} is {market_ts - ts_event} ms before the portfolio's market "
                f"time {market_ts} (at most {lag_ms} ms, one bar, may be in flight)")
    return None


def band_reason(declared: float, mark: float, band_pct: float, what: str, floor: float = 0.0,
                slack: float = 0.0) -> str | None:
    """Why ``declared`` is not within ``band_pct`` % of ``mark`` (or of ``floor``, if larger)
    plus ``slack`` (an absolute allowance, same units), or None."""
    if not (math.isfinite(declared) and declared >= 0):
        return f"{what}: declared {declared!r} is not a finite number >= 0"
    width = band_pct / 100.0 * max(mark, floor) + slack
    if abs(declared - mark) > width:
        off = f"{(declared / mark - 1.0) * 100.0:+.2f}% from" if mark > 0 else "away from"
        return (f"{what}: declared {declared:.6g} is {off} the portfolio's mark {mark:.6g} "
                f"(band ±{band_pct:g}%: ±{width:.6g})")
    return None


def check_spot_order(order: SpotOrder, tape: PriceTape, *, symbols: Collection[str], market_ts: int, lag_ms: int,
                     band_pct: float) -> PriceCheck:
    """Check a spot order against the portfolio's own ticks; the price to fill at, or why not.

    ``symbols`` are the symbols the strategy trades (empty: any symbol the feed ticks).
    Refused for good: a symbol the strategy does not trade or the feed never priced, an
    order dated before market time by more than ``lag_ms`` or after the newest tick by more
    than that, an order older than every tick kept, a declared price outside the band.
    Retried: a symbol of the strategy not priced yet, or an order a little newer than the
    newest tick (the tick of its bar is still on its way).
    """
    symbol = order.symbol
    if symbols and symbol not in symbols:
        return PriceCheck(REJECTED, f"symbol {symbol!r} is not traded by {order.strategy_id} "
                                    f"(it trades {', '.join(sorted(symbols))})")
    late = backdated_reason(order.ts_event, market_ts, lag_ms)
    if late is not None:
        return PriceCheck(REJECTED, late)
    last = tape.last(symbol)
    if last is None:
        if symbols:
            return PriceCheck(RETRY, f"no price for {symbol} from the feed yet")
        return PriceCheck(REJECTED, f"unknown symbol {symbol!r}: the feed has no price for it")
    if order.ts_event > last[0]:
        if order.ts_event - last[0] <= lag_ms:
            return PriceCheck(RETRY, f"no {symbol} tick at the order time {order.ts_event} yet (newest {last[0]})")
        return PriceCheck(REJECTED, f"dated in the future: order time {order.ts_event} is after the newest "
                                    f"{symbol} tick {last[0]} by more than one bar ({lag_ms} ms)")
    tick = tape.price_at(symbol, order.ts_event)
    if tick is None:
        return PriceCheck(REJECTED, f"no {symbol} price at or before the order time {order.ts_event}")
    off = band_reason(order.price, tick[1], band_pct, f"{symbol} price")
    if off is not None:
        return PriceCheck(REJECTED, off)
    return PriceCheck(OK, f"priced at the {symbol} tick of {tick[0]}", tick[1])
