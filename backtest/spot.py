"""Spot backtests that make the paper run's trades: its own functions, or its arithmetic.

The paper run, per closed bar ``i`` of a strategy's series: the portfolio marks the book at
``close[i]`` at the bar's close time (``Portfolio.mark``, which may trip risk limits and
liquidate), then the signal engine turns a nonzero signal into
``SpotOrder(spot_order_id(id, ts[i]), id, symbol, signal, close[i], ts[i] + timeframe)`` and
the portfolio answers it with ``Portfolio.decide_spot`` then ``commit`` (or
``record_no_fill``). The portfolio path makes exactly those calls in that order; signals come
from ``strategies.registry.compute_signals`` run once over the whole series, zeroed before the
warm-up as the engine forces them.

Speed, first: the lean path (``SpotReplay.run_lean``, ``lean_trades``). Until a mark trips a
limit, marks change nothing an order reads but the circuit breaker's pause, which only closed
trades move; every order passes the portfolio's checks (it fills at its own bar's closing tick,
under an order id of its own bar). So the orders are answered one after another with the
ledger's arithmetic (``decide_spot_order``, ``apply_fill``: the same float operations in the
same order, the dust rule and ``update_on_trade_closed``'s pause included), a loop over
orders, not bars; the value each bar's mark sees is the cash and coins after the previous
fills, forward-filled, times the close; numpy finds the first bar where a mark could trip a
limit (``first_trip_candidate``). The fills before that bar are the paper run's; the book and
the portfolio are set as its marks and commits leave them (peak, day and its start value,
last value, loss streak, recent trades and order ids, journal sequence, price), and the
portfolio path below takes over from there (at once when a limit trips in the first bar, to
the end when none can).

Then the portfolio path: a mark between two orders only matters through the risk state it
leaves (peak, day, day-start value, daily-loss and kill-switch flags). Over a run of bars
with no order the holdings are constant, so the book value is ``cash + quantity * close`` and
numpy finds the first bar where a limit could trip. Before that bar, marking at most two bars
(the highest value if it beats the peak, the first bar of the last day if the day rolls)
leaves the risk state that marking every bar leaves; the candidate bar itself is marked for
real. The run's last bar is marked only at the end of the series: elsewhere its mark sets
nothing but the last value, the price and the market time, which the next mark sets again
before any order or mark reads them. A flat book's value is constant, so only its first bar
can trip anything and its day roll can be any bar of the new day. Tests compare every fill,
the equity and the final state of both paths with a per-bar reference loop that calls
``mark`` on each bar.
"""
from __future__ import annotations

import gc
import math
from bisect import bisect_left
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping

import numpy as np

from backtest.metrics import spot_metrics
from common.model import Fill, SpotOrder, spot_order_id
from common.ohlcv import OHLCV
from common.timeframes import DAY_MS, timeframe_ms
from strategies.registry import compute_signals, resolve_strategy
from trading.ledger import DUST_NOTIONAL_USD, RECENT_ORDER_IDS, RECENT_TRADES, Position, StrategyBook
from trading.portfolio import Portfolio, StrategyMeta
from trading.risk import RiskLimits, RiskState, update_on_trade_closed

# Runs of bars this short are marked bar by bar: cheaper than the numpy precheck.
SHORT_RUN_BARS = 2
# The precheck flags a bar as a trip candidate a hair early; a false alarm costs one real mark.
_DD_MARGIN_PCT = 1e-6
_FLOOR_MARGIN = 1e-12


@dataclass
class BacktestResult:
    """One strategy over one series. ``equity`` and ``position`` align with ``data`` (the traded
    bars): the book value and the base units held at each bar's close, after that bar's fills.
    ``fills`` and ``state`` are exactly the paper run's; ``risk_events`` are its log lines, less
    the "daily loss cleared" notes of days whose marks were skipped."""

    strategy_id: str
    strategy: str
    symbol: str
    timeframe: str
    params: dict[str, Any]
    capital: float
    fee_pct: float
    slippage_pct: float
    data: OHLCV
    signals: np.ndarray
    fills: list[Fill]
    equity: np.ndarray
    position: np.ndarray
    risk_events: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # Portfolio.to_state() after the last bar


def _check_pct(name: str, value: float) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not (math.isfinite(value) and 0 <= value < 100)):
        raise ValueError(f"{name}: must be a number in [0, 100), got {value!r}")
    return float(value)


def strategy_signals(strategy: str, data: OHLCV, params: Mapping[str, Any] | None,
                     pair: OHLCV | None = None) -> tuple[np.ndarray, dict[str, float | int]]:
    """Signals over the whole series as the engine would see them bar by bar: the registry's
    signal, forced to 0 where fewer bars than the warm-up exist (``latest_signal``)."""
    resolved, warmup = resolve_strategy(strategy, params)
    signals = compute_signals(strategy, data, resolved, pair).signals.copy()
    signals[: max(warmup - 1, 0)] = 0
    return signals, resolved


class SpotReplay:
    """One strategy's book driven bar by bar through ``Portfolio``; fills and holdings recorded."""

    def __init__(self, strategy_id: str, symbol: str, data: OHLCV, timeframe: str, *, capital: float,
                 fee_pct: float, slippage_pct: float, limits: RiskLimits) -> None:
        self.strategy_id = strategy_id
        self.symbol = symbol
        self.close = data.close
        self.bar_ts = data.ts
        self.close_ts = data.ts + timeframe_ms(timeframe)
        self.limits = limits
        self.portfolio = Portfolio([StrategyMeta(strategy_id, "spot", "spot", capital, limits)],
                                   fee_rate=fee_pct / 100.0, slippage_rate=slippage_pct / 100.0)
        self.portfolio.reconcile(self.portfolio.market_ts)  # as the portfolio service does on a fresh start
        self.book: StrategyBook = self.portfolio.books[strategy_id]
        self.days = self.close_ts // DAY_MS
        self.fills: list[Fill] = []
        self.events: list[str] = []
        self.holding_bars: list[int] = []
        self.holding_cash: list[float] = []
        self.holding_quantity: list[float] = []

    def day_first(self, i: int) -> int:
        """The first bar of bar ``i``'s (UTC, market time) day."""
        return int(np.searchsorted(self.days, self.days[i], side="left"))

    # --- the calls the services make ---------------------------------------------------------
    def mark(self, i: int) -> None:
        """``Portfolio.mark`` at bar ``i``'s close, booking any kill-switch liquidation."""
        events, liquidations = self.portfolio.mark({self.symbol: float(self.close[i])}, int(self.close_ts[i]))
        self.events += events
        if liquidations:
            self._book(liquidations, i)

    def order(self, i: int, signal: int) -> None:
        """The engine's order for bar ``i``, answered as the portfolio service answers it."""
        order = SpotOrder(spot_order_id(self.strategy_id, int(self.bar_ts[i])), self.strategy_id, self.symbol,
                          signal, float(self.close[i]), int(self.close_ts[i]))
        # The bar's closing tick, which the paper portfolio has when the order comes (the fast
        # path may have skipped this bar's mark): the order fills at it.
        self.portfolio.record_tick(self.symbol, float(self.close[i]), int(self.close_ts[i]))
        decision = self.portfolio.decide_spot(order)
        if decision.fill is not None:
            self._book([decision.fill], i)
        elif decision.status != "duplicate":
            self.portfolio.record_no_fill(self.strategy_id, order.order_id)

    def _book(self, fills: list[Fill], i: int) -> None:
        self.events += self.portfolio.commit(fills)
        self.fills += fills
        position = self.book.positions.get(self.symbol)
        self.holding_bars.append(i)
        self.holding_cash.append(self.book.cash)
        self.holding_quantity.append(position.quantity if position else 0.0)

    # --- the fast path -----------------------------------------------------------------------
    def run(self, signals: np.ndarray, first: int = 0) -> None:
        """Mark every bar from ``first`` and send every nonzero signal, as the paper run does:
        the lean path up to the first bar where a limit could trip, the portfolio from there."""
        self.run_portfolio(signals, self.run_lean(signals, first))

    def run_lean(self, signals: np.ndarray, first: int) -> int:
        """Answer the orders from bar ``first`` on with the ledger's arithmetic, one step per
        order instead of per bar, up to the first bar where a mark could trip a limit; leave
        the book and the portfolio as the paper run leaves them before that bar and return it
        (``len(close)`` when no bar can). Exact there: every order passes the portfolio's
        checks (its own closing tick, one order id per bar), and marks that trip nothing only
        move the peak, the day, its start value and the last value, read off the mark values."""
        n = len(self.close)
        if self.book.positions or self.book.risk.kill_switch or self.book.risk.daily_loss_tripped:
            return first
        trades = lean_trades((self.bar_ts, self.close_ts, self.close), signals, first, self.book, self.symbol,
                             self.limits, self.portfolio.fee_rate, self.portfolio.slippage_rate,
                             self.portfolio.journal_seq)
        if trades is None:
            return first
        # the mark of bar i sees the holdings after the fills of the bars before i
        values, _ = stepwise_values(np.r_[first, np.asarray(trades.bars, dtype=np.int64) + 1, n],
                                    [self.book.cash, *trades.cash], [0.0, *trades.holding], self.close[first:])
        k = first + first_trip_candidate(values, self.days[first:], self.book.risk, self.limits)
        if k > first:
            self._adopt(trades, bisect_left(trades.bars, k), values[: k - first], first, k)
        return k

    def _adopt(self, trades: LeanTrades, kept: int, values: np.ndarray, first: int, k: int) -> None:
        """Book the first ``kept`` lean fills and the marks of bars ``[first, k)``, none of which
        trips a limit, as ``order`` and ``mark`` would (``commit`` for the fills' bookkeeping
        and loss streak)."""
        book, risk, portfolio = self.book, self.book.risk, self.portfolio
        first_seq = portfolio.journal_seq
        fills = trades.fills[:kept]
        self.fills += fills
        self.holding_bars += trades.bars[:kept]
        self.holding_cash += trades.cash[:kept]
        self.holding_quantity += trades.holding[:kept]
        if fills:
            last = fills[-1]
            book.cash = trades.cash[kept - 1]
            if last.side == "buy":
                book.positions[self.symbol] = Position(self.symbol, last.quantity, -last.cash_delta / last.quantity,
                                                       last.ts_event)
            book.trade_count += kept
            book.recent_trades = [*book.recent_trades, *(f.to_dict() for f in fills[-RECENT_TRADES:])][-RECENT_TRADES:]
            book.last_ts = max(book.last_ts, last.ts_event)
            portfolio.journal_seq = last.seq
            if kept == len(trades.fills):  # the loop's loss streak and pause are the book's
                self.events += trades.events
                risk.consecutive_losses, risk.circuit_breaker_until = trades.consecutive_losses, trades.paused_until
            else:
                for fill in fills:
                    if fill.side == "sell":
                        self.events += update_on_trade_closed(risk, self.limits, fill.realized_pnl, fill.ts_event)
        ids = book.recent_order_ids
        for bar, fill_number in trades.answered(k, RECENT_ORDER_IDS):
            order_id = spot_order_id(self.strategy_id, int(self.bar_ts[bar]))
            ids.pop(order_id, None)
            ids[order_id] = first_seq + fill_number if fill_number else 0
        while len(ids) > RECENT_ORDER_IDS:
            del ids[next(iter(ids))]
        last_bar = k - 1
        risk.peak_value = max(risk.peak_value, float(values.max()))
        if self.days[last_bar] > risk.day:
            risk.day = int(self.days[last_bar])
            risk.day_start_value = float(values[max(first, self.day_first(last_bar)) - first])
        risk.last_value = float(values[-1])
        price = float(self.close[last_bar])
        portfolio.prices[self.symbol] = price
        portfolio.record_tick(self.symbol, price, int(self.close_ts[last_bar]))

    def run_portfolio(self, signals: np.ndarray, first: int) -> None:
        """From bar ``first``: mark every bar and send every nonzero signal through the portfolio."""
        cursor = first
        for i in (np.flatnonzero(signals[first:]) + first).tolist():
            self.mark_run(cursor, i + 1)
            self.order(i, int(signals[i]))
            cursor = i + 1
        self.mark_run(cursor, len(self.close))

    def mark_run(self, a: int, b: int) -> None:
        """Leave the book as ``mark(i)`` for each ``i`` in ``[a, b)`` would (no orders between),
        for every later decision and for the state after the last bar."""
        book = self.book
        final = b == len(self.close)
        while a < b:
            if b - a <= SHORT_RUN_BARS:
                for i in range(a, b):
                    self.mark(i)
                return
            position = book.positions.get(self.symbol)
            if position is None:  # constant value: only the first mark can trip a limit
                if self._flat_may_trip(a):
                    self.mark(a)
                    a += 1
                self._mark_quiet(a, b, None, final)
                return
            if book.risk.kill_switch:  # long with the switch on: this mark liquidates
                self.mark(a)
                a += 1
                continue
            k, top = self._quiet_until(a, b, book.cash, position.quantity)
            self._mark_quiet(a, k, top, final and k == b)
            if k < b:
                self.mark(k)
            a = k + 1

    def _flat_may_trip(self, a: int) -> bool:
        """Whether marking a flat book at bar ``a`` could trip a limit (``update_on_mark``'s
        rules with the margin); when not, its value (the cash) is at most the peak, as a sell
        at the last mark's price less costs leaves it, and a skipped mark changes nothing the
        later marks do not set again."""
        risk, limits, value = self.book.risk, self.limits, self.book.cash
        if value > risk.peak_value:
            return True
        if bool(may_trip_kill_switch(np.asarray(risk.peak_value), np.asarray(value), limits.max_drawdown_pct)):
            return True
        if self.days[a] > risk.day:
            return False  # the new day starts at this very value: no daily loss
        floor = risk.day_start_value * (1.0 - limits.daily_loss_pct / 100.0)
        return not risk.daily_loss_tripped and value < floor * (1.0 + _FLOOR_MARGIN)

    def _quiet_until(self, a: int, b: int, cash: float, quantity: float) -> tuple[int, int | None]:
        """(first bar in ``[a, b)`` where a limit could trip, or ``b``; the highest-value bar
        before it) for a long book. Bounds first: when even the lowest value against the
        highest possible peak and day start trips nothing, no bar can, and the per-bar check
        is skipped."""
        risk, limits = self.book.risk, self.limits
        closes = self.close[a:b]
        top = int(np.argmax(closes))
        high = cash + quantity * float(closes[top])
        low = cash + quantity * float(closes.min())
        if _none_can_trip(low, high, risk, limits):
            return b, a + top
        values = cash + quantity * closes
        k = a + first_trip_candidate(values, self.days[a:b], risk, limits)
        return k, (a + int(np.argmax(values[: k - a])) if k > a else None)

    def _mark_quiet(self, a: int, b: int, top: int | None, final: bool) -> None:
        """Marks over ``[a, b)`` where no limit trips. Marking, in order, the bar of the
        highest value (if it beats the peak) and the first bar of the last day (if the day
        rolls; for a flat book any bar of that day, so the last) leaves the risk state that
        marking every bar leaves. The last bar itself is marked only at the end of the series
        (``final``): elsewhere its mark would only set the last value, the price and the market
        time, which the next mark sets again before any order or mark reads them."""
        if b <= a:
            return
        risk = self.book.risk
        position = self.book.positions.get(self.symbol)
        picks = {b - 1} if final else set()
        if self.days[b - 1] > risk.day:
            picks.add(b - 1 if position is None else max(a, self.day_first(b - 1)))
        if top is not None and position is not None and \
                self.book.cash + position.quantity * float(self.close[top]) > risk.peak_value:
            picks.add(top)
        for i in sorted(picks):
            self.mark(i)

    # --- results -------------------------------------------------------------------------------
    def holdings(self, first: int, capital: float) -> tuple[np.ndarray, np.ndarray]:
        """(equity, base units held) at each bar's close from ``first``, after that bar's fills."""
        # Holding k (0 = the start) lasts from the bar of fill k to the bar of the next fill; of
        # several fills in one bar only the last one's holding is seen at its close.
        return stepwise_values(np.r_[first, np.asarray(self.holding_bars, dtype=np.int64), len(self.close)],
                               [capital, *self.holding_cash], [0.0, *self.holding_quantity], self.close[first:])


def stepwise_values(edges: np.ndarray, cash: list[float], quantity: list[float],
                    close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(book value, base units held) per bar of ``close``, holding ``k`` (``cash[k]``,
    ``quantity[k]``) kept over bars ``[edges[k], edges[k + 1])`` offset by ``edges[0]``:
    ``cash + quantity * close``, in one array fewer than that expression."""
    lasting = np.diff(edges)
    held = np.repeat(np.asarray(quantity, dtype=np.float64), lasting)
    values = held * close
    values += np.repeat(np.asarray(cash, dtype=np.float64), lasting)
    return values, held


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: the lean loop allocates a fill per order, none of
    them in a reference cycle, and the collector would walk them again and again for nothing
    (a fifth of a million-bar run's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class LeanTrades:
    """What ``lean_trades`` decided: ``orders``, the bars of every order answered (fills and
    refusals alike); per fill, the fill and its bar, and the cash and base units held after it;
    after the last fill, the loss streak, the pause and the circuit breaker's log lines."""

    orders: np.ndarray
    fills: list[Fill]
    bars: list[int]
    cash: list[float]
    holding: list[float]
    consecutive_losses: int
    paused_until: int
    events: list[str]

    def answered(self, k: int, last: int) -> list[tuple[int, int]]:
        """(bar, index of its fill + 1, or 0 for no fill) of the last ``last`` orders before bar ``k``."""
        end = int(np.searchsorted(self.orders, k))
        bars = self.orders[max(end - last, 0):end]
        fill_bars = np.asarray(self.bars, dtype=np.int64)
        at = np.searchsorted(fill_bars, bars)
        filled = fill_bars[np.minimum(at, fill_bars.size - 1)] == bars if fill_bars.size else np.zeros(bars.size, bool)
        return list(zip(bars.tolist(), np.where(filled, at + 1, 0).tolist()))


def lean_trades(data: tuple[np.ndarray, np.ndarray, np.ndarray], signals: np.ndarray, first: int, book: StrategyBook,
                symbol: str, limits: RiskLimits, fee_rate: float, slippage_rate: float, first_seq: int
                ) -> LeanTrades | None:
    """The fills ``trading.ledger.decide_spot_order`` and ``apply_fill`` make for the orders of
    ``signals`` from bar ``first`` (``data``: bar open times, close times, closes), for a flat
    one-symbol book, with the same float operations in the same order, numbered after
    ``first_seq``; on the assumption that no mark trips a limit (the caller checks it), so the
    only entry block is the circuit breaker's pause, kept by ``update_on_trade_closed`` on a
    copy of the book's risk state. None for a signal other than -1, 0, 1 (the portfolio path
    refuses it with the ledger's error)."""
    bar_ts, close_ts, close = data
    orders = np.flatnonzero(signals[first:]) + first
    sides = signals[orders]
    if orders.size and not np.all((sides == 1) | (sides == -1)):
        return None
    sid, cash = book.strategy_id, book.cash
    fills: list[Fill] = []
    bars: list[int] = []
    cash_after: list[float] = []
    holding: list[float] = []
    streak = replace(book.risk)
    share = limits.max_position_pct / 100.0
    buy_factor, sell_factor, fee_factor = 1.0 + slippage_rate, 1.0 - slippage_rate, 1.0 + fee_rate
    held, avg, seq = 0.0, 0.0, first_seq
    events: list[str] = []
    # bound once: a million-bar series answers tens of thousands of orders in this loop
    add_fill, add_bar, add_cash, add_holding = fills.append, bars.append, cash_after.append, holding.append
    with _no_cyclic_gc():
        for i, side, price, opened, ts in zip(orders.tolist(), sides.tolist(), close[orders].tolist(),
                                              bar_ts[orders].tolist(), close_ts[orders].tolist()):
            if side == 1:
                if held or ts < streak.circuit_breaker_until:
                    continue  # already long, or paused
                notional = min(cash, share * cash)
                if notional < DUST_NOTIONAL_USD:
                    continue
                price *= buy_factor
                quantity = notional / (price * fee_factor)
                seq += 1
                add_fill(Fill(seq, f"{sid}:{opened}", sid, "spot", symbol, "buy", quantity, price,
                              max(notional - quantity * price, 0.0), -notional, 0.0, ts))
                held, avg = quantity, notional / quantity
                cash -= notional  # + cash_delta, bit for bit
            else:
                if not held:
                    continue
                price *= sell_factor
                gross = held * price
                fee = gross * fee_rate
                proceeds = gross - fee
                pnl = proceeds - held * avg
                seq += 1
                add_fill(Fill(seq, f"{sid}:{opened}", sid, "spot", symbol, "sell", held, price, fee, proceeds, pnl,
                              ts))
                held = 0.0
                cash += proceeds
                closed = update_on_trade_closed(streak, limits, pnl, ts)
                if closed:
                    events += closed
            add_bar(i)
            add_cash(cash)
            add_holding(held)
    return LeanTrades(orders, fills, bars, cash_after, holding, streak.consecutive_losses,
                      streak.circuit_breaker_until, events)


def may_trip_kill_switch(peak: np.ndarray, values: np.ndarray, max_drawdown_pct: float) -> np.ndarray:
    """Where marking ``values`` against ``peak`` could trip ``trading.risk.kill_switch_trips``,
    flagged a hair early (a false alarm costs one real mark). A 100% limit trips only at a
    worthless book, so only values near zero are candidates: a series that falls by orders of
    magnitude (a GBM path) keeps the fast path."""
    if max_drawdown_pct >= 100.0:
        return values <= _FLOOR_MARGIN * peak
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, (peak - values) / np.where(peak > 0, peak, 1.0) * 100.0, 0.0)
    return drawdown >= max_drawdown_pct - 1e-9 - _DD_MARGIN_PCT


def _none_can_trip(low: float, high: float, risk: RiskState, limits: RiskLimits) -> bool:
    """Whether no mark of values within [low, high] can trip a limit: even the lowest against
    the highest peak and day start they could reach trips nothing."""
    peak = max(risk.peak_value, high)
    if peak <= 0 or bool(may_trip_kill_switch(np.asarray(peak), np.asarray(low), limits.max_drawdown_pct)):
        return False
    daily_floor = max(risk.day_start_value, high) * (1.0 - limits.daily_loss_pct / 100.0)
    return low >= daily_floor * (1.0 + _FLOOR_MARGIN)


def first_trip_candidate(values: np.ndarray, days: np.ndarray, risk: RiskState, limits: RiskLimits) -> int:
    """Offset of the first bar where marking ``values`` in turn could trip the drawdown kill
    switch or the daily loss limit (``trading.risk.update_on_mark``'s rules, with a small
    margin so it never fires later than they would); ``len(values)`` when none can."""
    n = int(values.shape[0])
    if n == 0 or _none_can_trip(float(values.min()), float(values.max()), risk, limits):
        return n
    peak = np.maximum(np.maximum.accumulate(values), risk.peak_value)
    kill = may_trip_kill_switch(peak, values, limits.max_drawdown_pct)
    previous = np.empty_like(days)
    previous[0] = risk.day
    previous[1:] = days[:-1]
    roll_at = np.maximum.accumulate(np.where(days > previous, np.arange(n), -1))
    rolled = roll_at >= 0
    day_start = np.where(rolled, values[np.maximum(roll_at, 0)], risk.day_start_value)
    floor = day_start * (1.0 - limits.daily_loss_pct / 100.0)
    daily = (rolled | (not risk.daily_loss_tripped)) & (values < floor * (1.0 + _FLOOR_MARGIN))
    candidate = kill | daily
    k = int(np.argmax(candidate))
    return k if candidate[k] else n


def run_spot_backtest(strategy_id: str, strategy: str, symbol: str, timeframe: str, data: OHLCV,
                      params: Mapping[str, Any] | None, pair: OHLCV | None = None, capital: float = 1000.0,
                      fee_pct: float = 0.1, slippage_pct: float = 0.0, limits: RiskLimits | None = None,
                      trade_from_ms: int | None = None) -> BacktestResult:
    """Backtest one spot strategy over ``data`` (and ``pair``, bar-aligned, for pairs strategies).

    Bars opening before ``trade_from_ms`` only warm the indicators up: no marks, no orders,
    and the result covers the bars from there on (walk-forward test windows use this).
    """
    if not isinstance(strategy_id, str) or not strategy_id:
        raise ValueError(f"strategy_id: must be a non-empty string, got {strategy_id!r}")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"symbol: must be a non-empty string, got {symbol!r}")
    if (isinstance(capital, bool) or not isinstance(capital, (int, float))
            or not (math.isfinite(capital) and capital > 0)):
        raise ValueError(f"capital: must be a finite number > 0, got {capital!r}")
    fee_pct = _check_pct("fee_pct", fee_pct)
    slippage_pct = _check_pct("slippage_pct", slippage_pct)
    if len(data) == 0:
        raise ValueError(f"{strategy_id}: no bars to backtest")
    if pair is not None and (len(pair) != len(data) or not np.array_equal(pair.ts, data.ts)):
        raise ValueError(f"{strategy_id}: pair bars must have the same times as the primary bars "
                         f"(align them with backtest.data.align_pair)")
    signals, resolved = strategy_signals(strategy, data, params, pair)
    first = 0 if trade_from_ms is None else int(np.searchsorted(data.ts, trade_from_ms, side="left"))
    if first >= len(data):
        raise ValueError(f"{strategy_id}: trade_from_ms={trade_from_ms} is after the last bar {int(data.ts[-1])}")
    limits = limits or RiskLimits()
    replay = SpotReplay(strategy_id, symbol, data, timeframe, capital=float(capital), fee_pct=fee_pct,
                        slippage_pct=slippage_pct, limits=limits)
    replay.run(signals, first)
    equity, position = replay.holdings(first, float(capital))
    traded = data.slice(first, None)
    result = BacktestResult(
        strategy_id=strategy_id, strategy=strategy, symbol=symbol, timeframe=timeframe, params=dict(resolved),
        capital=float(capital), fee_pct=fee_pct, slippage_pct=slippage_pct, data=traded,
        signals=signals[first:], fills=replay.fills, equity=equity, position=position, risk_events=replay.events,
        state=replay.portfolio.to_state(),
    )
    result.metrics = spot_metrics(result)
    return result
