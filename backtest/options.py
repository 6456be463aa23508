"""Options backtests: the options strategies, scoring and risk over an underlying's bars.

At each decision time (every ``every_hours`` of market time, on a bar close) for each
strategy book: settle what expired since the last step, price the venue's listed chain with
Black-Scholes (``options.chain.build_chain``) at the bar's close and an ATM vol that is either
the realized volatility of the underlying or a given IV series, ask ``options.strategies.decide``
for proposals, keep what ``options.scoring.select_trades`` selects and
``options.risk.check_options_trade`` allows, and fill at the chain's mark (slippage against
the trader, venue-style fee). Cash moves through ``common.ledger.apply_fill`` with fills of
kind ``option`` and ``settlement``, like any other book.

Settlement: an option that expires is cash-settled at its intrinsic value at the close of the
bar in which its expiry falls (Deribit settles in cash; CME micro options are treated the same
way, so a wheel's put is settled, not assigned into coins).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from backtest.metrics import performance
from common.ledger import StrategyBook, apply_fill, new_book
from common.model import Fill
from common.ohlcv import OHLCV, timeframe_ms
from options.black_scholes import DAYS_PER_YEAR, bs_price
from options.chain import OptionChain, build_chain
from options.contracts import OptionPosition
from options.risk import OptionsRiskLimits, check_options_trade
from options.scoring import MAX_POSITIONS, select_trades
from options.strategies import DEFAULT_PARAMS, OptionsContext, ProposedTrade, decide, strategy_params
from options.venues import DAY_MS, VenueSpec, venue_spec

HOUR_MS = 3_600_000
# Deribit's option fee: 0.03% of the underlying per contract, at most 12.5% of the premium.
DEFAULT_FEE_PCT_OF_UNDERLYING = 0.03
FEE_CAP_OF_PREMIUM = 0.125


class OptionsBacktestError(ValueError):
    """Inputs an options backtest cannot run on; the message names the argument."""


def realized_vol(close: np.ndarray, bar_ms: int, lookback_days: float = 30.0) -> np.ndarray:
    """Annualised close-to-close volatility over the trailing ``lookback_days`` at each bar
    (NaN until the window is full): std of log returns x sqrt(bars per year)."""
    window = max(int(round(lookback_days * DAY_MS / bar_ms)), 2)
    returns = np.diff(np.log(close))
    out = np.full(close.shape[0], np.nan)
    if returns.size < window:
        return out
    csum = np.r_[0.0, np.cumsum(returns)]
    csq = np.r_[0.0, np.cumsum(returns * returns)]
    total = csum[window:] - csum[:-window]
    total_sq = csq[window:] - csq[:-window]
    variance = np.maximum((total_sq - total * total / window) / (window - 1), 0.0)
    out[window:] = np.sqrt(variance * (DAYS_PER_YEAR * DAY_MS / bar_ms))
    return out


def iv_from_series(bar_close_ts: np.ndarray, iv_ts: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """The latest given IV (decimal) at or before each bar close; NaN before the first one."""
    at = np.searchsorted(iv_ts, bar_close_ts, side="right") - 1
    return np.where(at >= 0, iv[np.maximum(at, 0)], np.nan)


@dataclass
class OptionsBook:
    """One options strategy's money and open positions during a backtest."""

    strategy_id: str
    strategy: str
    venue: VenueSpec
    params: dict[str, float]
    book: StrategyBook
    limits: OptionsRiskLimits
    positions: list[OptionPosition] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    peak_value: float = 0.0
    equity: list[float] = field(default_factory=list)
    rejected: int = 0


@dataclass
class OptionsBacktestResult:
    underlying: str
    close_ts: np.ndarray  # decision times (bar closes)
    spot: np.ndarray
    atm_iv: np.ndarray
    books: dict[str, OptionsBook]
    metrics: dict[str, dict[str, Any]]


def _option_value(positions: Sequence[OptionPosition], chain: OptionChain, spot: float, ts: int, r: float,
                  atm_iv: float) -> float:
    """Marks from the chain; a contract off today's strike grid is priced with BS at the ATM vol."""
    value = 0.0
    for pos in positions:
        row = chain.lookup(pos.contract)
        if row is not None:
            mark = float(chain.mark[row])
        else:
            years = max(pos.contract.expiry_ts - ts, 0) / DAY_MS / DAYS_PER_YEAR
            mark = float(bs_price(spot, pos.contract.strike, years, r, atm_iv, pos.contract.is_call))
        value += pos.coins * mark
    return value


class OptionsBacktest:
    """Strategy books over one underlying; ``run`` steps them through the bars."""

    def __init__(self, underlying: str, data: OHLCV, timeframe: str, atm_iv: np.ndarray, *,
                 strategies: Sequence[tuple[str, str, str, Mapping[str, Any] | None]], capital: float,
                 max_positions: int = MAX_POSITIONS, risk_free_rate: float = 0.0, fee_pct: float = DEFAULT_FEE_PCT_OF_UNDERLYING,
                 slippage_pct: float = 0.0, limits: OptionsRiskLimits | None = None, every_hours: float = 24.0,
                 trade_from_ms: int | None = None) -> None:
        if len(data) < 2:
            raise OptionsBacktestError(f"data: need at least 2 bars of {underlying}, got {len(data)}")
        if atm_iv.shape[0] != len(data):
            raise OptionsBacktestError(f"atm_iv: {atm_iv.shape[0]} values for {len(data)} bars")
        if isinstance(max_positions, bool) or not isinstance(max_positions, int) or max_positions < 1:
            raise OptionsBacktestError(f"max_positions: must be an integer >= 1, got {max_positions!r}")
        if not (math.isfinite(capital) and capital > 0):
            raise OptionsBacktestError(f"capital: must be a finite number > 0, got {capital!r}")
        for name, value in (("fee_pct", fee_pct), ("slippage_pct", slippage_pct)):
            if not (math.isfinite(value) and 0 <= value < 100):
                raise OptionsBacktestError(f"{name}: must be a number in [0, 100), got {value!r}")
        if not (math.isfinite(every_hours) and every_hours > 0):
            raise OptionsBacktestError(f"every_hours: must be a number > 0, got {every_hours!r}")
        self.underlying = underlying
        self.data = data
        self.close_ts = data.ts + timeframe_ms(timeframe)
        self.year_bars = max(int(365 * DAY_MS // timeframe_ms(timeframe)), 1)
        self.atm_iv = atm_iv
        self.max_positions = max_positions
        self.r = risk_free_rate
        self.fee_rate = fee_pct / 100.0
        self.slippage = slippage_pct / 100.0
        self.every_ms = int(every_hours * HOUR_MS)
        self.trade_from_ms = trade_from_ms
        start = int(data.ts[0])
        self.books: dict[str, OptionsBook] = {}
        for sid, name, venue, params in strategies:
            spec = venue_spec(venue)
            spec.underlying(underlying)
            self.books[sid] = OptionsBook(sid, name, spec, strategy_params(name, params),
                                          new_book(sid, "options", capital, start), limits or OptionsRiskLimits(),
                                          peak_value=capital)
        self.step_bars: list[int] = []
        self.seq = 0

    def decision_bars(self) -> np.ndarray:
        """Bars whose close starts a new ``every_hours`` slot of market time, once the IV is
        known and from ``trade_from_ms`` on (earlier bars are volatility history only)."""
        slot = self.close_ts // self.every_ms
        due = np.r_[True, slot[1:] != slot[:-1]] & np.isfinite(self.atm_iv)
        if self.trade_from_ms is not None:
            due &= self.data.ts >= self.trade_from_ms
        return np.flatnonzero(due)

    def run(self, progress: bool = False) -> OptionsBacktestResult:
        bars = self.decision_bars()
        if bars.size == 0:
            raise OptionsBacktestError("no decision time: the volatility never becomes known in these bars "
                                       "(give more history than the realized-vol lookback)")
        iterator: Any = bars.tolist()
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc=f"options {self.underlying}", unit="step")
        for i in iterator:
            self.step(i)
        return self.result()

    def step(self, i: int) -> None:
        ts, spot, iv = int(self.close_ts[i]), float(self.data.close[i]), float(self.atm_iv[i])
        self.step_bars.append(i)
        chains: dict[str, OptionChain] = {}
        history = self.atm_iv[max(0, i - self.year_bars):i + 1]
        closes = self.data.close[max(0, i - 400):i + 1]
        for ob in self.books.values():
            self._settle(ob, ts)
            chain = chains.get(ob.venue.name)
            if chain is None:
                chain = chains[ob.venue.name] = build_chain(ob.venue, self.underlying, spot, ts, iv, self.r)
            value = ob.book.cash + _option_value(ob.positions, chain, spot, ts, self.r, iv)
            ob.peak_value = max(ob.peak_value, value)
            ctx = OptionsContext(ob.strategy_id, self.underlying, ob.venue, ts, spot, closes, iv, history, chain,
                                 ob.book.initial_capital, ob.book.cash)
            proposals = decide(ob.strategy, ctx, ob.positions, ob.params)
            for trade in select_trades(proposals, ob.positions, spot, max_positions=self.max_positions):
                ok, _ = check_options_trade(ob.limits, ob.positions, trade, value, spot=spot, peak_value=ob.peak_value)
                if ok:
                    self._fill(ob, trade, spot, ts)
                else:
                    ob.rejected += 1
            ob.equity.append(ob.book.cash + _option_value(ob.positions, chain, spot, ts, self.r, iv))

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _fill(self, ob: OptionsBook, trade: ProposedTrade, spot: float, ts: int) -> None:
        contract = trade.contract
        price = trade.premium * (1.0 + self.slippage * trade.side)
        coins = trade.quantity * contract.multiplier
        fee = min(self.fee_rate * spot * coins, FEE_CAP_OF_PREMIUM * price * coins)
        cash_delta = -trade.side * coins * price - fee
        realized = 0.0
        if trade.action == "close":
            held = next(p for p in ob.positions if p.contract == contract)
            realized = held.coins * (price - held.entry_premium) - fee
            ob.positions.remove(held)
            ob.book.option_positions.pop(contract.name, None)
        else:
            position = OptionPosition(contract, trade.side * trade.quantity, price, ts, dict(trade.greeks))
            ob.positions.append(position)
            ob.book.option_positions[contract.name] = position.to_dict()
        fill = Fill(self._next_seq(), f"{ob.strategy_id}:{ts}:{contract.name}", ob.strategy_id, "option",
                    contract.name, "buy" if trade.side > 0 else "sell", trade.quantity, price, fee, cash_delta,
                    realized, ts, {"action": trade.action, "reason": trade.reason, "score": trade.score,
                                   "spot": spot})
        apply_fill(ob.book, fill)
        ob.fills.append(fill)

    def _settle(self, ob: OptionsBook, ts: int) -> None:
        for pos in [p for p in ob.positions if p.contract.expiry_ts <= ts]:
            # The close of the bar in which the expiry instant falls is the settlement price.
            at = min(int(np.searchsorted(self.close_ts, pos.contract.expiry_ts, side="left")), len(self.close_ts) - 1)
            price = float(self.data.close[at])
            strike = pos.contract.strike
            intrinsic = max(price - strike, 0.0) if pos.contract.is_call else max(strike - price, 0.0)
            fill = Fill(self._next_seq(), f"{ob.strategy_id}:settle:{pos.contract.name}", ob.strategy_id,
                        "settlement", pos.contract.name, "sell" if pos.quantity > 0 else "buy", abs(pos.quantity),
                        intrinsic, 0.0, pos.coins * intrinsic, pos.coins * (intrinsic - pos.entry_premium),
                        int(pos.contract.expiry_ts), {"settlement_price": price})
            apply_fill(ob.book, fill)
            ob.fills.append(fill)
            ob.positions.remove(pos)
            ob.book.option_positions.pop(pos.contract.name, None)

    def result(self) -> OptionsBacktestResult:
        bars = np.asarray(self.step_bars, dtype=np.int64)
        close_ts = self.close_ts[bars]
        period = int(np.median(np.diff(close_ts))) if bars.size > 1 else self.every_ms
        metrics = {}
        for sid, ob in self.books.items():
            equity = np.asarray(ob.equity)
            closing = [f.realized_pnl for f in ob.fills if f.kind == "settlement" or f.extra.get("action") == "close"]
            exposed = self._exposure(ob, close_ts)
            metrics[sid] = performance(equity, close_ts, period, ob.book.initial_capital, closing,
                                       sum(f.fee for f in ob.fills), exposed, len(ob.fills))
            metrics[sid]["rejected_by_risk"] = ob.rejected
            metrics[sid]["open_positions"] = len(ob.positions)
        return OptionsBacktestResult(self.underlying, close_ts, self.data.close[bars], self.atm_iv[bars],
                                     self.books, metrics)

    @staticmethod
    def _exposure(ob: OptionsBook, close_ts: np.ndarray) -> np.ndarray:
        """Whether any option was open at each decision time (after its trades)."""
        delta = np.zeros(close_ts.size + 1, dtype=np.int64)
        opened: dict[str, int] = {}
        for fill in ob.fills:
            at = int(np.searchsorted(close_ts, fill.ts_event, side="left"))
            if fill.kind == "option" and fill.extra.get("action") == "open":
                opened[fill.instrument] = at
            elif fill.instrument in opened:
                start = opened.pop(fill.instrument)
                delta[start] += 1
                delta[at] -= 1
        for start in opened.values():
            delta[start] += 1
        return np.cumsum(delta)[:-1] > 0


def default_strategies(underlying: str, venues: Sequence[str]) -> list[tuple[str, str, str, None]]:
    """Every options strategy on every venue given: ``(id, strategy, venue, params)``."""
    return [(f"{venue}-{name}-{underlying.lower()}", name, venue, None) for venue in venues for name in DEFAULT_PARAMS]


def run_options_backtest(underlying: str, data: OHLCV, timeframe: str, *, capital: float = 1000.0,
                         max_positions: int = MAX_POSITIONS, venues: Sequence[str] = ("deribit",),
                         strategies: Sequence[tuple[str, str, str, Mapping[str, Any] | None]] | None = None,
                         iv: np.ndarray | None = None, vol_lookback_days: float = 30.0,
                         risk_free_rate: float = 0.0, fee_pct: float = DEFAULT_FEE_PCT_OF_UNDERLYING,
                         slippage_pct: float = 0.0, limits: OptionsRiskLimits | None = None,
                         every_hours: float = 24.0, trade_from_ms: int | None = None,
                         progress: bool = False) -> OptionsBacktestResult:
    """Backtest options strategies on ``underlying``'s bars; ``iv`` (decimal, per bar) replaces
    the realized-vol estimate of the ATM implied vol when given. Bars before ``trade_from_ms``
    are volatility history only."""
    atm_iv = realized_vol(data.close, timeframe_ms(timeframe), vol_lookback_days) if iv is None else iv
    chosen = list(strategies) if strategies is not None else default_strategies(underlying, venues)
    if not chosen:
        raise OptionsBacktestError("strategies: none to backtest")
    return OptionsBacktest(underlying, data, timeframe, np.asarray(atm_iv, dtype=np.float64), strategies=chosen,
                           capital=capital, max_positions=max_positions, risk_free_rate=risk_free_rate,
                           fee_pct=fee_pct, slippage_pct=slippage_pct, limits=limits,
                           every_hours=every_hours, trade_from_ms=trade_from_ms).run(progress)
