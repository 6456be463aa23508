"""Options backtests that make the paper run's option trades, through the paper run's own functions.

The paper run, per closed bar of the underlying: the portfolio marks every book at the close
(``Portfolio.mark``: options expired by then settle at the close nearest their expiry, a
wheel's in-the-money short put is assigned into coins, risk limits trip, a kill switch
liquidates), and the fills it returns are committed. When an options strategy is due, the
pricer marks the open option positions (``options.marks.price_contracts`` into
``Portfolio.mark_options``), the signal engine prices the venue's chain, asks the portfolio for
the strategy's ``positions`` (``Portfolio.positions_view``) and runs
``trading.engine.evaluate_options`` (decide, select, risk-check, group into orders), and the
portfolio answers each order with ``Portfolio.decide_options`` then ``commit`` (or
``record_no_fill``). This module makes exactly those calls in that order on one ``Portfolio``
holding every strategy's book. It keeps no accounting of its own: its fills are the journal of
that portfolio, and fees, settlement and assignment are the portfolio's rules.

What the services get from the pricer comes from the backtest's inputs instead: the ATM vol
is a given implied-vol series (DVOL, ``--iv-csv``: each bar takes the latest day closed by
its close, at most ``IV_MAX_AGE_DAYS`` old) or, without one or where it has no such day, the
underlying's realized vol; the result names which (``iv_source``). Chains are ``build_chain``
at the bar's close and that vol; the IV history is the ATM vol at the same time of day over
the last ``iv_rank_days`` days (the config's ``options.iv_rank_days``), as the pricer's
``iv`` reply gives it. Option marks are refreshed at each decision step (the portfolio
service refreshes them about once a second).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from backtest.metrics import performance
from common.model import Fill
from common.ohlcv import OHLCV
from common.timeframes import DAY_MS, HOUR_MS, timeframe_ms
from options.black_scholes import DAYS_PER_YEAR
from options.chain import OptionChain, build_chain
from options.contracts import OptionContract
from options.dvol_csv import DvolCsvError, read_dvol_csv
from options.iv_history import DEFAULT_IV_RANK_DAYS
from options.marks import price_contracts
from options.risk import OptionsRiskLimits
from options.scoring import EXECUTE_THRESHOLD, MAX_POSITIONS
from options.strategies import DEFAULT_PARAMS, strategy_params
from options.venues import VenueSpec, venue_spec
from trading.engine import HISTORY_BARS, evaluate_options, options_strategy, reason_kind
from trading.ledger import StrategyBook, closes_a_trade
from trading.option_inputs import IvReading, OptionsMarket
from trading.portfolio import Portfolio, StrategyMeta
from trading.risk import RiskLimits

IV_MAX_AGE_DAYS = 3  # a daily IV older than this at a bar's close is not used (gap in the file)
# The config's default fee: fee_pct % of each option leg's premium, the portfolio's one rule.
DEFAULT_FEE_PCT = 0.1


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


def iv_from_series(bar_close_ts: np.ndarray, iv_ts: np.ndarray, iv: np.ndarray,
                   max_age_ms: int | None = None) -> np.ndarray:
    """The latest given IV (decimal) at or before each bar close; NaN before the first one
    and, with ``max_age_ms``, where the latest one is older than that."""
    at = np.searchsorted(iv_ts, bar_close_ts, side="right") - 1
    known = at >= 0
    if max_age_ms is not None:
        known &= bar_close_ts - np.asarray(iv_ts)[np.maximum(at, 0)] <= max_age_ms
    return np.where(known, iv[np.maximum(at, 0)], np.nan)


@dataclass(frozen=True)
class AtmVolInput:
    """The ATM vol per bar a backtest decides on, and a line naming where it came from."""

    atm_iv: np.ndarray
    source: str


def atm_vol_input(data: OHLCV, timeframe: str, iv_csv: str | Path | None, vol_lookback_days: float) -> AtmVolInput:
    """DVOL from ``iv_csv`` (see options/dvol_csv.py for the columns), realized vol where it has
    no day closed within ``IV_MAX_AGE_DAYS`` of a bar's close; realized vol alone without a file."""
    bar_ms = timeframe_ms(timeframe)
    realized = realized_vol(data.close, bar_ms, vol_lookback_days)
    label = f"realized vol ({vol_lookback_days:g}-day close-to-close)"
    if iv_csv is None:
        return AtmVolInput(realized, label)
    try:
        day_ts, dvol = read_dvol_csv(iv_csv)
    except (DvolCsvError, OSError) as exc:
        raise OptionsBacktestError(f"--iv-csv: {exc}") from None
    implied = iv_from_series(data.ts + bar_ms, day_ts + DAY_MS, dvol, IV_MAX_AGE_DAYS * DAY_MS)
    known = np.isfinite(implied)
    if not known.any():
        raise OptionsBacktestError(f"--iv-csv {iv_csv}: no day of it ({_day(int(day_ts[0]))} .. "
                                   f"{_day(int(day_ts[-1]))}) covers the bars ({_day(int(data.ts[0]))} .. "
                                   f"{_day(int(data.ts[-1]))})")
    source = f"DVOL implied vol from {Path(iv_csv).name} on {int(known.sum())} of {known.size} bars"
    if not known.all():
        source += f", {label} on the other {int((~known).sum())}"
    return AtmVolInput(np.where(known, implied, realized), source)


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=timezone.utc).date().isoformat()


@dataclass
class OptionsStrategyRun:
    """One options strategy in a backtest: its settings, the portfolio's book of it (the
    services' accounting, not a copy), and what it did: its part of the journal, its value
    and whether it held options at each decision step, and the trades refused."""

    strategy_id: str
    strategy: str
    venue: VenueSpec
    params: dict[str, float]
    limits: OptionsRiskLimits
    book: StrategyBook
    fills: list[Fill] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    exposed: list[bool] = field(default_factory=list)
    rejected: int = 0  # refused by the engine's risk check or by the portfolio
    # Why proposals were not taken (or none was made), by kind ("venue minimum", "risk limit",
    # "score below 0.3", "no signal", ...): how often, and the latest full reason of each kind.
    reason_counts: Counter[str] = field(default_factory=Counter)
    last_reasons: dict[str, str] = field(default_factory=dict)
    opened: int = 0  # option legs opened

    def note(self, reason: str) -> None:
        kind = reason_kind(reason)
        self.reason_counts[kind] += 1
        self.last_reasons[kind] = reason

    def why_not(self) -> list[str]:
        """Each kind of reason, most frequent first: 'venue minimum x12: <latest such reason>'."""
        return [f"{kind} x{count}: {self.last_reasons[kind]}" for kind, count in self.reason_counts.most_common()]


@dataclass
class OptionsBacktestResult:
    underlying: str
    close_ts: np.ndarray  # decision times (bar closes)
    spot: np.ndarray
    atm_iv: np.ndarray
    books: dict[str, OptionsStrategyRun]
    metrics: dict[str, dict[str, Any]]
    journal: list[Fill] = field(default_factory=list)  # every fill, in commit order
    risk_events: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)  # Portfolio.to_state() after the last bar
    iv_source: str = "given per bar"  # which implied vol the strategies decided on


class OptionsBacktest:
    """Strategy books over one underlying in one ``Portfolio``; ``run`` steps them through the bars."""

    def __init__(self, underlying: str, data: OHLCV, timeframe: str, atm_iv: np.ndarray, *,
                 strategies: Sequence[tuple[str, str, str, Mapping[str, Any] | None]], capital: float,
                 max_positions: int = MAX_POSITIONS, min_score: float = EXECUTE_THRESHOLD,
                 risk_free_rate: float = 0.0, fee_pct: float = DEFAULT_FEE_PCT, slippage_pct: float = 0.0,
                 limits: OptionsRiskLimits | None = None, risk_limits: RiskLimits | None = None,
                 every_hours: float = 24.0, trade_from_ms: int | None = None,
                 capital_by_id: Mapping[str, float] | None = None,
                 limits_by_id: Mapping[str, OptionsRiskLimits] | None = None,
                 risk_limits_by_id: Mapping[str, RiskLimits] | None = None,
                 iv_rank_days: int = DEFAULT_IV_RANK_DAYS, iv_source: str = "given per bar") -> None:
        if len(data) < 2:
            raise OptionsBacktestError(f"data: need at least 2 bars of {underlying}, got {len(data)}")
        if atm_iv.shape[0] != len(data):
            raise OptionsBacktestError(f"atm_iv: {atm_iv.shape[0]} values for {len(data)} bars")
        if isinstance(max_positions, bool) or not isinstance(max_positions, int) or max_positions < 1:
            raise OptionsBacktestError(f"max_positions: must be an integer >= 1, got {max_positions!r}")
        if not (math.isfinite(min_score) and 0 <= min_score <= 1):
            raise OptionsBacktestError(f"min_score: must be a number in [0, 1], got {min_score!r}")
        capitals = {sid: (capital_by_id or {}).get(sid, capital) for sid, *_ in strategies}
        for sid, value in {"": capital, **capitals}.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise OptionsBacktestError(f"capital{f' of {sid}' if sid else ''}: must be a finite number > 0, "
                                           f"got {value!r}")
        for name, value in (("fee_pct", fee_pct), ("slippage_pct", slippage_pct)):
            if not (math.isfinite(value) and 0 <= value < 100):
                raise OptionsBacktestError(f"{name}: must be a number in [0, 100), got {value!r}")
        if not (math.isfinite(every_hours) and every_hours > 0):
            raise OptionsBacktestError(f"every_hours: must be a number > 0, got {every_hours!r}")
        if isinstance(iv_rank_days, bool) or not isinstance(iv_rank_days, int) or iv_rank_days < 1:
            raise OptionsBacktestError(f"iv_rank_days: must be an integer >= 1, got {iv_rank_days!r}")
        self.iv_rank_days = iv_rank_days
        self.iv_source = iv_source
        self.underlying = underlying
        self.data = data
        self.timeframe = timeframe
        self.close_ts = data.ts + timeframe_ms(timeframe)
        self.atm_iv = atm_iv
        self.max_positions = max_positions
        self.min_score = min_score
        self.r = risk_free_rate
        self.every_ms = int(every_hours * HOUR_MS)
        self.trade_from_ms = trade_from_ms
        limits = limits or OptionsRiskLimits()
        # The services give both the engine's and the portfolio's limits the strategy's max_drawdown_pct.
        risk_limits = risk_limits or RiskLimits(max_drawdown_pct=limits.max_drawdown_pct)
        metas, runs = [], []
        for sid, name, venue, params in strategies:
            spec = venue_spec(venue)
            spec.underlying(underlying)
            if any(m.strategy_id == sid for m in metas):
                raise OptionsBacktestError(f"strategies: id {sid!r} appears twice")
            metas.append(StrategyMeta(sid, "options", spec.name, float(capitals[sid]),
                                      (risk_limits_by_id or {}).get(sid, risk_limits), name,
                                      max_option_positions=max_positions, min_option_score=min_score))
            runs.append((sid, name, spec, strategy_params(name, params)))
        self.portfolio = Portfolio(metas, fee_rate=fee_pct / 100.0, slippage_rate=slippage_pct / 100.0)
        self.portfolio.reconcile(self.portfolio.market_ts)  # as the portfolio service does on a fresh start
        self.symbol = f"{underlying}/{self.portfolio.underlying_quote}"
        self.strategies = {sid: OptionsStrategyRun(sid, name, spec, params, (limits_by_id or {}).get(sid, limits),
                                                   self.portfolio.books[sid])
                           for sid, name, spec, params in runs}
        self.journal: list[Fill] = []
        self.risk_events: list[str] = []
        self.step_bars: list[int] = []

    def decision_bars(self) -> np.ndarray:
        """Bars whose close starts a new ``every_hours`` slot of market time, once the IV is
        known and from ``trade_from_ms`` on (earlier bars are volatility history only)."""
        slot = self.close_ts // self.every_ms
        due = np.r_[True, slot[1:] != slot[:-1]] & np.isfinite(self.atm_iv)
        if self.trade_from_ms is not None:
            due &= self.data.ts >= self.trade_from_ms
        return np.flatnonzero(due)

    def run(self, progress: bool = False) -> OptionsBacktestResult:
        """Mark every bar from the first decision on, and decide at each decision bar."""
        bars = self.decision_bars()
        if bars.size == 0:
            raise OptionsBacktestError("no decision time: the volatility never becomes known in these bars "
                                       "(give more history than the realized-vol lookback)")
        due = np.zeros(len(self.data), dtype=bool)
        due[bars] = True
        iterator: Iterable[int] = range(int(bars[0]), len(self.data))
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc=f"options {self.underlying}", unit="bar")
        for i in iterator:
            self.mark(i)
            if due[i]:
                self.step(i)
        return self.result()

    # --- the calls the services make -------------------------------------------------------
    def commit(self, fills: Sequence[Fill]) -> None:
        """Book journaled fills as the portfolio service does, and keep them as the journal."""
        self.risk_events += self.portfolio.commit(fills)
        self.journal += fills
        for fill in fills:
            self.strategies[fill.strategy_id].fills.append(fill)

    def mark(self, i: int) -> None:
        """``Portfolio.mark`` at bar ``i``'s close: settlements, assignments, risk, liquidations."""
        events, fills = self.portfolio.mark({self.symbol: float(self.data.close[i])}, int(self.close_ts[i]))
        self.risk_events += events
        if fills:
            self.commit(fills)

    def step(self, i: int) -> None:
        """One decision time: mark the options, then each strategy's orders through the portfolio."""
        ts, spot, iv = int(self.close_ts[i]), float(self.data.close[i]), float(self.atm_iv[i])
        self.step_bars.append(i)
        contracts = [OptionContract.from_dict(c) for c in self.portfolio.open_option_contracts()]
        if contracts:
            self.portfolio.mark_options(price_contracts(contracts, {self.underlying: spot}, ts,
                                                        {self.underlying: iv}, self.r), ts)
        closes = self.data.slice(max(0, i + 1 - HISTORY_BARS), i + 1)
        chains: dict[tuple[str, str], OptionChain] = {}
        for run in self.strategies.values():
            key = (self.underlying, run.venue.name)
            if key not in chains:
                chains[key] = build_chain(run.venue, self.underlying, spot, ts, iv, self.r)
        market = OptionsMarket(chains, {self.underlying: IvReading(iv, self.iv_history(ts))})
        for sid, run in self.strategies.items():
            strategy = options_strategy(sid, run.strategy, run.venue.name, self.underlying, self.timeframe,
                                        run.params, min_score=self.min_score, max_positions=self.max_positions,
                                        limits=run.limits)
            decision = evaluate_options(strategy, market, self.portfolio.positions_view(sid, self.symbol), closes, ts)
            run.rejected += len(decision.refused)
            for reason in decision.reasons if decision.skipped is None else [decision.skipped]:
                run.note(reason)
            for order in decision.orders:
                answer = self.portfolio.decide_options(order)
                if answer.fills:
                    self.commit(answer.fills)
                    run.opened += sum(f.kind == "option" and f.extra.get("action") == "open" for f in answer.fills)
                elif answer.status != "duplicate":
                    self.portfolio.record_no_fill(sid, order.order_id)
                    run.rejected += 1
                    run.note(f"portfolio refused: {answer.reason}")
        for sid, run in self.strategies.items():
            run.equity.append(self.portfolio.value_of(sid))
            run.exposed.append(bool(run.book.option_positions))

    def iv_history(self, ts: int) -> np.ndarray:
        """The ATM vol at ``ts`` minus ``iv_rank_days``..1 days (the latest bar close at or before
        each), as the pricer's ``iv`` reply gives it; NaN where no vol is known yet."""
        at = ts - np.arange(self.iv_rank_days, 0, -1, dtype=np.int64) * DAY_MS
        row = np.searchsorted(self.close_ts, at, side="right") - 1
        return np.where(row >= 0, self.atm_iv[np.maximum(row, 0)], np.nan)

    # --- results ---------------------------------------------------------------------------
    def result(self) -> OptionsBacktestResult:
        bars = np.asarray(self.step_bars, dtype=np.int64)
        close_ts = self.close_ts[bars]
        period = int(np.median(np.diff(close_ts))) if bars.size > 1 else self.every_ms
        metrics = {}
        for sid, run in self.strategies.items():
            closing = [f.realized_pnl for f in run.fills if closes_a_trade(f)]
            metrics[sid] = performance(np.asarray(run.equity), close_ts, period, run.book.initial_capital, closing,
                                       sum(f.fee for f in run.fills), np.asarray(run.exposed, dtype=bool),
                                       len(run.fills))
            metrics[sid]["rejected_by_risk"] = run.rejected
            metrics[sid]["open_positions"] = len(run.book.option_positions)
            metrics[sid]["opened"] = run.opened
            metrics[sid]["why_not"] = run.why_not()
        return OptionsBacktestResult(self.underlying, close_ts, self.data.close[bars], self.atm_iv[bars],
                                     self.strategies, metrics, self.journal, self.risk_events,
                                     self.portfolio.to_state(), self.iv_source)


def default_strategies(underlying: str, venues: Sequence[str]) -> list[tuple[str, str, str, None]]:
    """Every options strategy on every venue given: ``(id, strategy, venue, params)``."""
    return [(f"{venue}-{name}-{underlying.lower()}", name, venue, None) for venue in venues for name in DEFAULT_PARAMS]


def run_options_backtest(underlying: str, data: OHLCV, timeframe: str, *, capital: float = 1000.0,
                         max_positions: int = MAX_POSITIONS, min_score: float = EXECUTE_THRESHOLD,
                         venues: Sequence[str] = ("deribit",),
                         strategies: Sequence[tuple[str, str, str, Mapping[str, Any] | None]] | None = None,
                         iv: np.ndarray | None = None, iv_csv: str | Path | None = None,
                         vol_lookback_days: float = 30.0, iv_rank_days: int = DEFAULT_IV_RANK_DAYS,
                         risk_free_rate: float = 0.0, fee_pct: float = DEFAULT_FEE_PCT,
                         slippage_pct: float = 0.0, limits: OptionsRiskLimits | None = None,
                         risk_limits: RiskLimits | None = None, every_hours: float = 24.0,
                         trade_from_ms: int | None = None, progress: bool = False,
                         capital_by_id: Mapping[str, float] | None = None,
                         limits_by_id: Mapping[str, OptionsRiskLimits] | None = None,
                         risk_limits_by_id: Mapping[str, RiskLimits] | None = None) -> OptionsBacktestResult:
    """Backtest options strategies on ``underlying``'s bars; ``iv`` (decimal, per bar) or the
    DVOL file ``iv_csv`` replaces the realized-vol estimate of the ATM implied vol when given
    (``atm_vol_input``). Bars before ``trade_from_ms``
    are volatility history only. ``fee_pct`` is the portfolio's fee, % of each leg's premium;
    ``slippage_pct`` moves the spot fills (liquidations) as the portfolio's slippage does."""
    if iv is not None and iv_csv is not None:
        raise OptionsBacktestError("iv and iv_csv: give one implied-vol input, not both")
    vol = AtmVolInput(np.asarray(iv, dtype=np.float64), "given per bar") if iv is not None \
        else atm_vol_input(data, timeframe, iv_csv, vol_lookback_days)
    chosen = list(strategies) if strategies is not None else default_strategies(underlying, venues)
    if not chosen:
        raise OptionsBacktestError("strategies: none to backtest")
    return OptionsBacktest(underlying, data, timeframe, vol.atm_iv, strategies=chosen,
                           capital=capital, max_positions=max_positions, min_score=min_score,
                           risk_free_rate=risk_free_rate, fee_pct=fee_pct, slippage_pct=slippage_pct, limits=limits,
                           risk_limits=risk_limits, every_hours=every_hours, trade_from_ms=trade_from_ms,
                           capital_by_id=capital_by_id, limits_by_id=limits_by_id,
                           risk_limits_by_id=risk_limits_by_id, iv_rank_days=iv_rank_days,
                           iv_source=vol.source).run(progress)
