"""The spot backtester makes the paper run's trades: same calls, same fills, same books.

The reference below is the paper run written out plainly: every bar, ``Portfolio.mark`` at
the close, then the engine's order for a nonzero signal answered with ``decide_spot`` and
``commit``/``record_no_fill``. The fast path must match it fill for fill, bar for bar.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from backtest.spot import SpotReplay, run_spot_backtest, strategy_signals
from common.model import SpotOrder, spot_order_id
from common.ohlcv import OHLCV
from common.timeframes import DAY_MS, HOUR_MS
from strategies.params import STRATEGY_PARAMS, get_params
from strategies.registry import compute_signals
from trading.portfolio import Portfolio, StrategyMeta
from trading.risk import RiskLimits

WIDE_OPEN = RiskLimits(max_drawdown_pct=100.0, max_position_pct=100.0, daily_loss_pct=100.0, circuit_breaker_ms=0)
TIGHT = RiskLimits(max_drawdown_pct=25.0, daily_loss_pct=2.0, max_consecutive_losses=2)
TIGHTEST = RiskLimits(max_drawdown_pct=8.0, daily_loss_pct=1.0)
# No mark can trip anything, so the lean path runs to the end; its own rules still bite: half
# the book per entry, and two losing trades in a row pause entries for a day.
PAUSING = RiskLimits(max_drawdown_pct=100.0, max_position_pct=50.0, daily_loss_pct=100.0, max_consecutive_losses=2,
                     circuit_breaker_ms=DAY_MS)


def reference_run(strategy: str, data: OHLCV, params: dict | None, limits: RiskLimits, *, fee_pct: float = 0.1,
                  slippage_pct: float = 0.0, pair: OHLCV | None = None, sid: str = "ref", symbol: str = "BTC/USDT"):
    """Mark every bar, then send the bar's order: the slow, obvious paper run."""
    spec = get_params(strategy)
    resolved = spec.resolve(params)
    signals = compute_signals(strategy, data, resolved, pair).signals
    warmup = spec.warmup(resolved)
    portfolio = Portfolio([StrategyMeta(sid, "spot", "spot", 1000.0, limits)], fee_rate=fee_pct / 100.0,
                          slippage_rate=slippage_pct / 100.0)
    portfolio.reconcile(0)
    fills, equity = [], []
    for i in range(len(data)):
        ts_close = int(data.ts[i]) + HOUR_MS
        _, liquidations = portfolio.mark({symbol: float(data.close[i])}, ts_close)
        if liquidations:
            portfolio.commit(liquidations)
            fills += liquidations
        if i + 1 >= warmup and signals[i] != 0:
            order = SpotOrder(spot_order_id(sid, int(data.ts[i])), sid, symbol, int(signals[i]),
                              float(data.close[i]), ts_close)
            decision = portfolio.decide_spot(order)
            if decision.fill is not None:
                portfolio.commit([decision.fill])
                fills.append(decision.fill)
            elif decision.status != "duplicate":
                portfolio.record_no_fill(sid, order.order_id)
        equity.append(portfolio.value_of(sid))
    return fills, np.array(equity), portfolio


@pytest.mark.parametrize("limits", [RiskLimits(), TIGHT, TIGHTEST, PAUSING], ids=["default", "tight", "tightest",
                                                                               "pausing"])
@pytest.mark.parametrize("strategy", sorted(s for s in STRATEGY_PARAMS if s != "pairs_spread"))
def test_fast_path_makes_the_reference_fills_and_books(btc_1h, strategy, limits):
    data = btc_1h.slice(2000, 8000)  # 2018: a crash that trips every limit
    fills, equity, portfolio = reference_run(strategy, data, None, limits, slippage_pct=0.05)
    result = run_spot_backtest("ref", strategy, "BTC/USDT", "1h", data, None, fee_pct=0.1, slippage_pct=0.05,
                               limits=limits)
    assert result.fills == fills
    assert np.array_equal(result.equity, equity)
    assert result.state == portfolio.to_state()


def _lean_until(monkeypatch, data: OHLCV, limits: RiskLimits, **kwargs) -> tuple[int, object]:
    """(the bar the lean path hands over to the portfolio at, the backtest result)."""
    handed = []
    lean = SpotReplay.run_lean
    monkeypatch.setattr(SpotReplay, "run_lean", lambda self, s, f: handed.append(lean(self, s, f)) or handed[-1])
    result = run_spot_backtest("ref", "sma_crossover", "BTC/USDT", "1h", data, None, limits=limits, **kwargs)
    return handed[0], result


def test_the_lean_path_runs_to_the_end_when_no_mark_can_trip_and_keeps_the_pause(btc_1h, monkeypatch):
    data = btc_1h.slice(2000, 8000)
    until, result = _lean_until(monkeypatch, data, PAUSING)
    assert until == len(data)
    fills, equity, portfolio = reference_run("sma_crossover", data, None, PAUSING)
    assert result.fills == fills and np.array_equal(result.equity, equity)
    assert result.state == portfolio.to_state()
    # the pause refused entries the rule asked for, and half the book stayed in cash
    pauses = [e for e in result.risk_events if e.startswith("circuit_breaker")]
    assert pauses and np.count_nonzero(result.signals == 1) > sum(f.side == "buy" for f in fills)
    assert fills[0].cash_delta == -500.0


def test_the_lean_path_hands_over_before_the_first_bar_a_mark_could_trip(btc_1h, monkeypatch):
    data = btc_1h.slice(2000, 8000)
    until, result = _lean_until(monkeypatch, data, TIGHT, slippage_pct=0.05)
    assert 0 < until < len(data)
    fills, equity, portfolio = reference_run("sma_crossover", data, None, TIGHT, slippage_pct=0.05)
    assert any(f.ts_event <= int(data.ts[until]) for f in fills)  # the lean path made some fills
    assert result.fills == fills and np.array_equal(result.equity, equity)
    assert result.state == portfolio.to_state()


def test_the_lean_path_from_trade_from_equals_the_portfolio_path(btc_1h, monkeypatch):
    data = btc_1h.slice(10000, 13000)
    start = int(data.ts[1000])
    until, lean = _lean_until(monkeypatch, data, PAUSING, trade_from_ms=start)
    assert until == len(data)
    monkeypatch.setattr(SpotReplay, "run_lean", lambda self, signals, first: first)  # the portfolio from the start
    portfolio = run_spot_backtest("ref", "sma_crossover", "BTC/USDT", "1h", data, None, limits=PAUSING,
                                  trade_from_ms=start)
    assert lean.fills == portfolio.fills and min(f.ts_event for f in lean.fills) > start
    assert np.array_equal(lean.equity, portfolio.equity) and lean.equity.size == 2000
    assert lean.state == portfolio.state and lean.risk_events == portfolio.risk_events


def test_pairs_strategy_matches_the_reference(btc_1h, eth_1h):
    data, pair = btc_1h.slice(20000, 26000), eth_1h.slice(20000, 26000)
    assert np.array_equal(data.ts, pair.ts)
    params = {"lookback": 48, "entry_z": 1.5, "exit_z": 0.0}
    fills, equity, portfolio = reference_run("pairs_spread", data, params, TIGHT, pair=pair)
    result = run_spot_backtest("ref", "pairs_spread", "BTC/USDT", "1h", data, params, pair=pair, limits=TIGHT)
    assert len(fills) > 10
    assert result.fills == fills
    assert np.array_equal(result.equity, equity)
    assert result.state == portfolio.to_state()


def test_kill_switch_liquidates_on_the_bar_it_trips(btc_1h):
    result = run_spot_backtest("k", "sma_crossover", "BTC/USDT", "1h", btc_1h.slice(2000, 8000), None,
                               limits=TIGHTEST)
    liquidations = [f for f in result.fills if f.kind == "liquidation"]
    assert len(liquidations) == 1
    assert result.state["strategies"]["k"]["risk"]["kill_switch"] is True
    assert result.fills[-1] == liquidations[0]  # nothing trades after the kill switch
    assert any("kill_switch" in e for e in result.risk_events)


def test_sma_crossover_trades_hand_checked_on_real_bars(btc_1h):
    data = btc_1h.slice(30000, 30300)  # 2021-01-22 22:00 UTC onwards
    assert int(data.ts[0]) == 1611352800000
    closes = [float(c) for c in data.close]

    def sma(i: int, n: int) -> float:
        return sum(closes[i - n + 1:i + 1]) / n

    expected, cash, held = [], 1000.0, 0.0
    for i in range(20, len(closes)):
        up = sma(i, 5) > sma(i, 20) and sma(i - 1, 5) <= sma(i - 1, 20)
        down = sma(i, 5) < sma(i, 20) and sma(i - 1, 5) >= sma(i - 1, 20)
        if up and not held:
            held = cash / (closes[i] * 1.001)  # all in, 0.1% fee on top
            expected.append((i, "buy", closes[i], held, -cash))
            cash = 0.0
        elif down and held:
            proceeds = held * closes[i] * 0.999
            expected.append((i, "sell", closes[i], held, proceeds))
            cash, held = proceeds, 0.0
    # Written out: the crossings of SMA(5) and SMA(20) in these 300 hours.
    assert [(i, side) for i, side, *_ in expected] == [
        (30, "buy"), (41, "sell"), (51, "buy"), (71, "sell"), (93, "buy"), (103, "sell"), (122, "buy"),
        (123, "sell"), (125, "buy"), (166, "sell"), (186, "buy"), (197, "sell"), (221, "buy"), (234, "sell"),
        (239, "buy"), (240, "sell"), (247, "buy")]
    assert expected[0][2] == 32811.05 and expected[1][2] == 31957.05

    result = run_spot_backtest("hand", "sma_crossover", "BTC/USDT", "1h", data, {"fast": 5, "slow": 20},
                               capital=1000.0, fee_pct=0.1, limits=WIDE_OPEN)
    got = [(int(np.searchsorted(data.ts, f.ts_event - HOUR_MS)), f.side, f.price, f.quantity, f.cash_delta)
           for f in result.fills]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    for g, e in zip(got, expected):
        assert g[3] == pytest.approx(e[3], rel=1e-12)
        assert g[4] == pytest.approx(e[4], rel=1e-12)
    assert result.fills[0].order_id == f"hand:{int(data.ts[30])}"
    assert result.fills[0].ts_event == int(data.ts[30]) + HOUR_MS  # decided at the bar's close
    # The book ends long from bar 247: equity there is the coins at the last close.
    assert result.equity[-1] == pytest.approx(expected[-1][3] * closes[-1], rel=1e-12)
    assert result.metrics["trades"] == 8 and result.metrics["fills"] == 17


def test_signals_before_the_warm_up_are_forced_to_zero(btc_1h):
    data = btc_1h.slice(0, 400)
    signals, resolved = strategy_signals("macd", data, None)
    warmup = get_params("macd").warmup(resolved)
    raw = compute_signals("macd", data, resolved).signals
    assert not signals[: warmup - 1].any()
    assert np.array_equal(signals[warmup - 1:], raw[warmup - 1:])


def test_future_bars_do_not_change_past_fills(btc_1h):
    data = btc_1h.slice(10000, 13000)
    full = run_spot_backtest("f", "ema_crossover", "BTC/USDT", "1h", data, None)
    cut = run_spot_backtest("f", "ema_crossover", "BTC/USDT", "1h", data.slice(0, 2000), None)
    cutoff = int(data.ts[1999]) + HOUR_MS
    assert cut.fills == [f for f in full.fills if f.ts_event <= cutoff]
    assert np.array_equal(cut.equity, full.equity[:2000])


def test_trade_from_uses_earlier_bars_only_for_warm_up(btc_1h):
    data = btc_1h.slice(10000, 13000)
    start = int(data.ts[1000])
    result = run_spot_backtest("t", "sma_crossover", "BTC/USDT", "1h", data, None, trade_from_ms=start)
    assert len(result.data) == 2000 and result.equity.size == 2000
    assert result.fills and min(f.ts_event for f in result.fills) > start
    assert result.metrics["start_ts"] == start


def test_one_year_of_hourly_bars_runs_well_under_a_second(btc_1h):
    data = btc_1h.tail(8760)
    run_spot_backtest("w", "sma_crossover", "BTC/USDT", "1h", data, None)  # warm caches
    started = time.perf_counter()
    result = run_spot_backtest("s", "sma_crossover", "BTC/USDT", "1h", data, None)
    assert time.perf_counter() - started < 0.5
    assert result.metrics["fills"] > 50


@pytest.mark.parametrize("kwargs, message", [
    ({"capital": 0.0}, "capital"),
    ({"capital": float("nan")}, "capital"),
    ({"fee_pct": 100.0}, "fee_pct"),
    ({"slippage_pct": -1.0}, "slippage_pct"),
    ({"strategy_id": ""}, "strategy_id"),
    ({"strategy": "no_such"}, "unknown strategy"),
    ({"params": {"fast": 60, "slow": 50}}, "fast must be < slow"),
    ({"trade_from_ms": 10**15}, "trade_from_ms"),
])
def test_bad_input_is_refused_with_a_clear_message(btc_1h, kwargs, message):
    args = {"strategy_id": "x", "strategy": "sma_crossover", "symbol": "BTC/USDT", "timeframe": "1h",
            "data": btc_1h.slice(0, 500), "params": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        run_spot_backtest(**args)


def test_pair_bars_must_line_up(btc_1h, eth_1h):
    with pytest.raises(ValueError, match="align_pair"):
        run_spot_backtest("p", "pairs_spread", "BTC/USDT", "1h", btc_1h.slice(0, 500), None,
                          pair=eth_1h.slice(1, 501))


def test_no_bars_is_an_error():
    with pytest.raises(ValueError, match="no bars"):
        run_spot_backtest("e", "sma_crossover", "BTC/USDT", "1h", OHLCV.empty(), None)
