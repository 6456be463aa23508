"""The spot fast path on a geometric Brownian motion that falls by orders of magnitude: a 100%
drawdown limit never trips while the book is worth something, the fills equal the per-bar
reference, and the fast path keeps marking only where a limit could trip."""
from __future__ import annotations

import numpy as np
import pytest

from backtest.spot import SpotReplay, run_spot_backtest
from common.ohlcv import OHLCV
from common.timeframes import HOUR_MS
from tests.backtest.test_spot import WIDE_OPEN, reference_run
from trading.ledger import DUST_NOTIONAL_USD
from trading.risk import RiskLimits, kill_switch_trips, new_risk_state, update_on_mark


def gbm_bars(n: int, seed: int = 3, drift: float = -3e-5, vol: float = 0.01) -> OHLCV:
    """Hourly closes exp(cumsum(N(drift, vol))): over 1M bars the price ends ~e^-30 of its start."""
    rng = np.random.default_rng(seed)
    close = 50_000.0 * np.exp(np.cumsum(rng.normal(drift, vol, n)))
    ts = 1_600_000_000_000 - 1_600_000_000_000 % HOUR_MS + np.arange(n, dtype=np.int64) * HOUR_MS
    open_ = np.r_[close[0], close[:-1]]
    return OHLCV(ts, open_, np.maximum(open_, close), np.minimum(open_, close), close, np.ones(n))


def test_a_100_percent_limit_trips_only_at_a_worthless_book():
    assert not kill_switch_trips(1000.0, 1e-9, 100.0)  # 99.9999999999% down: still worth something
    assert kill_switch_trips(1000.0, 0.0, 100.0)
    assert kill_switch_trips(1000.0, 400.0, 60.0) and not kill_switch_trips(1000.0, 401.0, 60.0)
    state = new_risk_state(1000.0, HOUR_MS)
    assert update_on_mark(state, WIDE_OPEN, 1e-9, HOUR_MS) == [] and not state.kill_switch


def test_fast_path_equals_the_per_bar_reference_on_a_collapsing_gbm():
    data = gbm_bars(60_000, drift=-5e-4)  # ends near e^-30 of its start
    assert data.close[-1] / data.close.max() < 1e-9
    for limits in (WIDE_OPEN, RiskLimits(max_drawdown_pct=99.0, daily_loss_pct=100.0)):
        fills, equity, portfolio = reference_run("sma_crossover", data, None, limits)
        result = run_spot_backtest("ref", "sma_crossover", "BTC/USDT", "1h", data, None, limits=limits)
        assert result.fills == fills
        assert np.array_equal(result.equity, equity)
        assert result.state == portfolio.to_state()
    assert not any(f.kind == "liquidation" for f in run_spot_backtest(
        "w", "sma_crossover", "BTC/USDT", "1h", data, None, limits=WIDE_OPEN).fills)


def test_a_million_bar_gbm_does_not_degenerate_into_marking_every_bar(monkeypatch):
    data = gbm_bars(1_000_000)
    marks = []
    original = SpotReplay.mark
    monkeypatch.setattr(SpotReplay, "mark", lambda self, i: (marks.append(i), original(self, i))[1])
    result = run_spot_backtest("g", "sma_crossover", "BTC/USDT", "1h", data, None, limits=WIDE_OPEN)
    days = len(np.unique(data.ts // 86_400_000))
    # at most: a couple of marks per order (the peak and the day roll before it) plus the days
    # that roll on a flat book; nowhere near one per bar
    assert len(marks) <= 3 * len(result.fills) + days
    assert len(marks) < len(data) // 10
    assert not any(f.kind == "liquidation" for f in result.fills)
    assert len(result.fills) > 1_000


def test_a_book_worth_less_than_the_dust_notional_buys_no_more():
    data = gbm_bars(60_000, drift=-5e-4)
    result = run_spot_backtest("w", "sma_crossover", "BTC/USDT", "1h", data, None, limits=WIDE_OPEN)
    last = result.fills[-1]
    assert last.side == "sell" and result.state["strategies"]["w"]["cash"] == pytest.approx(0.991042879, rel=1e-6)
    assert result.state["strategies"]["w"]["cash"] < DUST_NOTIONAL_USD
    after = int(np.searchsorted(data.ts + HOUR_MS, last.ts_event)) + 1
    assert np.count_nonzero(result.signals[after:] == 1) > 100  # the rule kept asking; every buy was refused
