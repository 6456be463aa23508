"""Options backtests: realized vol by its formula, settlement and wheel assignment by the
portfolio's rules, the position cap, and no accounting of the backtest's own: its fills are the
journal of the Portfolio it drove, the same fills a hand-driven loop of the services' calls makes."""
from __future__ import annotations

import math

import numpy as np
import pytest

import backtest.options as options_backtest
from backtest.data import window
from backtest.options import (
    OptionsBacktest,
    OptionsBacktestError,
    iv_from_series,
    realized_vol,
    run_options_backtest,
)
from common.ohlcv import OHLCV
from options.chain import build_chain
from options.contracts import OptionContract
from options.marks import price_contracts
from options.risk import OptionsRiskLimits
from options.strategies import DEFAULT_PARAMS
from options.venues import DERIBIT
from trading.engine import evaluate_options
from trading.option_book import OptionLeg, OptionOrder
from trading.portfolio import Portfolio, StrategyMeta
from trading.risk import RiskLimits

HOUR = 3_600_000
DAY = 86_400_000
JAN_2021 = 1_609_459_200_000
START = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def test_realized_vol_is_the_annualised_stdev_of_log_returns():
    close = np.array([100.0, 101.0, 99.5, 102.0, 101.0, 103.5, 104.0])
    got = realized_vol(close, DAY, lookback_days=3)
    r = [math.log(close[i] / close[i - 1]) for i in range(1, close.size)]
    for i in range(3, close.size):
        window_r = r[i - 3:i]
        mean = sum(window_r) / 3
        sd = math.sqrt(sum((x - mean) ** 2 for x in window_r) / 2)
        assert got[i] == pytest.approx(sd * math.sqrt(365))
    assert np.isnan(got[:3]).all()


def test_iv_series_holds_the_last_value():
    got = iv_from_series(np.array([5, 10, 15, 25]), np.array([10, 20]), np.array([0.5, 0.6]))
    assert np.isnan(got[0]) and list(got[1:]) == [0.5, 0.5, 0.6]


def flat_bars(n: int, price: float, start: int = START) -> OHLCV:
    ts = start + np.arange(n, dtype=np.int64) * HOUR
    p = np.full(n, price)
    return OHLCV(ts, p, p, p, p, np.ones(n))


def test_iv_history_is_the_vol_at_the_same_time_of_day_over_the_rank_window():
    n = 20 * 24
    iv = np.arange(n, dtype=np.float64) / 1000.0  # the vol is the bar index / 1000
    bt = OptionsBacktest("BTC", flat_bars(n, 100.0), "1h", iv, strategies=[("s", "wheel", "deribit", None)],
                         capital=1000.0, iv_rank_days=14)
    ts = START + 16 * DAY + 5 * HOUR  # the close of bar 16 * 24 + 4
    got = bt.iv_history(ts)
    # k days back closes bar (16 - k) * 24 + 4; 16 days back is before the first close.
    assert got.size == 14 and got[0] == pytest.approx(((16 - 14) * 24 + 4) / 1000.0)
    assert got[-1] == pytest.approx((15 * 24 + 4) / 1000.0)
    assert np.isnan(bt.iv_history(START + 10 * DAY)[:5]).all()


def open_order(sid: str, ts: int, *legs: OptionLeg) -> OptionOrder:
    return OptionOrder(f"{sid}:{ts}:test", sid, ts, 42_000.0, legs)


def test_expired_options_settle_at_the_close_of_the_bar_their_expiry_falls_in():
    bt = OptionsBacktest("BTC", flat_bars(72, 42_000.0), "1h", np.full(72, 0.5),
                         strategies=[("s", "protective_puts", "deribit", None)], capital=10_000.0, fee_pct=0.1)
    expiry = START + 8 * HOUR  # 08:00 UTC, a Deribit expiry time: the close of bar 7
    call = OptionContract("deribit", "BTC", expiry, 40_000.0, True, 1.0)
    put = OptionContract("deribit", "BTC", expiry, 41_000.0, False, 1.0)
    answer = bt.portfolio.decide_options(open_order("s", START, OptionLeg(call, 1, 0.5, 1_500.0, {}, 1.0, "t", "open"),
                                                    OptionLeg(put, -1, 0.2, 100.0, {}, 1.0, "t", "open")))
    bt.commit(answer.fills)
    paid, received = 750.0 * 1.001, 20.0 * 0.999  # the portfolio's fee: 0.1% of each leg's premium
    assert bt.strategies["s"].book.cash == pytest.approx(10_000.0 - paid + received)
    for i in range(7):
        bt.mark(i)
    assert len(bt.journal) == 2  # not expired yet
    bt.mark(7)
    settle_call, settle_put = bt.journal[2:]
    assert (settle_call.kind, settle_call.side, settle_call.price, settle_call.ts_event) == (
        "settlement", "sell", 2_000.0, expiry)
    assert settle_call.cash_delta == pytest.approx(0.5 * 2_000.0)
    assert settle_call.realized_pnl == pytest.approx(0.5 * 2_000.0 - paid)
    assert (settle_put.side, settle_put.price, settle_put.cash_delta) == ("buy", 0.0, 0.0)
    assert settle_put.realized_pnl == pytest.approx(received)  # the short put expired worthless
    book = bt.strategies["s"].book
    assert book.option_positions == {} and book.positions == {}
    assert book.cash == pytest.approx(10_000.0 - paid + received + 1_000.0)
    assert bt.strategies["s"].fills == bt.journal


def test_a_wheel_short_put_in_the_money_is_assigned_into_coins():
    bt = OptionsBacktest("BTC", flat_bars(72, 42_000.0), "1h", np.full(72, 0.5),
                         strategies=[("w", "wheel", "deribit", None)], capital=50_000.0, fee_pct=0.0)
    put = OptionContract("deribit", "BTC", START + 8 * HOUR, 44_000.0, False, 1.0)
    bt.commit(bt.portfolio.decide_options(open_order("w", START, OptionLeg(put, -1, 0.2, 2_100.0, {}, 1.0, "t",
                                                                           "open"))).fills)
    for i in range(8):
        bt.mark(i)
    settlement, assignment = bt.journal[1:]
    assert (settlement.kind, settlement.cash_delta, settlement.extra["assigned_coins"]) == ("settlement", 0.0, 0.2)
    assert (assignment.kind, assignment.side, assignment.instrument, assignment.quantity, assignment.price) == (
        "spot", "buy", "BTC/USDT", 0.2, 44_000.0)
    book = bt.strategies["w"].book
    assert book.cash == pytest.approx(50_000.0 + 420.0 - 8_800.0)
    view = bt.portfolio.positions_view("w", "BTC/USDT")
    assert (view["spot_quantity"], view["spot_cost_basis"]) == (0.2, 44_000.0)
    assert view["portfolio_value"] == pytest.approx(50_000.0 + 420.0 - 8_800.0 + 0.2 * 42_000.0)


def real_window(btc_1h: OHLCV, days: int) -> OHLCV:
    return window(btc_1h, JAN_2021 - 40 * DAY, JAN_2021 + days * DAY)


def test_real_run_cash_is_the_sum_of_its_fills_and_the_cap_holds(btc_1h):
    result = run_options_backtest("BTC", real_window(btc_1h, 120), "1h", capital=100_000.0, max_positions=2,
                                  venues=("deribit", "ibkr"), trade_from_ms=JAN_2021)
    assert result.close_ts[0] >= JAN_2021 + HOUR
    assert len(result.books) == 10
    for sid, run in result.books.items():
        assert run.book.cash == pytest.approx(100_000.0 + sum(f.cash_delta for f in run.fills))
        held: dict[str, float] = {}
        for fill in run.fills:  # replay: never more than 2 open positions
            if fill.kind in ("option", "settlement"):
                held[fill.instrument] = held.get(fill.instrument, 0.0) + fill.quantity * (
                    1 if fill.side == "buy" else -1)
                held = {k: q for k, q in held.items() if abs(q) > 1e-9}
            assert len(held) <= 2, sid
        assert result.metrics[sid]["fills"] == len(run.fills)
        assert len(run.equity) == result.close_ts.size
    assert len(result.journal) > 10


def test_its_fills_are_the_journal_of_the_portfolio_it_drove(btc_1h):
    result = run_options_backtest("BTC", real_window(btc_1h, 60), "1h", capital=100_000.0,
                                  venues=("deribit", "ibkr"), trade_from_ms=JAN_2021)
    assert [f.seq for f in result.journal] == list(range(1, len(result.journal) + 1))
    for sid, run in result.books.items():
        assert run.fills == [f for f in result.journal if f.strategy_id == sid]
    # The journal alone rebuilds every book, as the portfolio service's restart replays it.
    replayed = Portfolio([StrategyMeta(sid, "options", run.venue.name, 100_000.0, RiskLimits(max_drawdown_pct=20.0),
                                       run.strategy) for sid, run in result.books.items()],
                         fee_rate=0.001, slippage_rate=0.0)
    replayed.reconcile(0)
    replayed.commit(result.journal)
    for sid, run in result.books.items():
        assert replayed.books[sid].cash == pytest.approx(run.book.cash, abs=1e-9)
        assert replayed.books[sid].positions == run.book.positions
        assert {n: p["quantity"] for n, p in replayed.books[sid].option_positions.items()} == \
            {n: p["quantity"] for n, p in run.book.option_positions.items()}
    for name in ("apply_fill", "apply_option_fill", "decide_option_order", "settle_expired", "new_book", "bs_price"):
        assert not hasattr(options_backtest, name), f"backtest.options keeps accounting of its own: {name}"


def services_loop(data: OHLCV, iv: np.ndarray, sids: list[tuple[str, str]], capital: float,
                  trade_from_ms: int) -> list:
    """The services' calls written out plainly: the portfolio marks each bar's close and commits
    what that returns; once a day the pricer marks the options, and per strategy the engine
    prices the chain, takes the ``positions`` view, evaluates and sends orders, which the
    portfolio decides and commits."""
    portfolio = Portfolio([StrategyMeta(sid, "options", "deribit", capital, RiskLimits(max_drawdown_pct=20.0), name)
                           for sid, name in sids], fee_rate=0.001, slippage_rate=0.0, max_option_positions=4,
                          min_option_score=0.3)
    portfolio.reconcile(0)
    journal = []
    close_ts = data.ts + HOUR
    started, last_day = False, None
    for i in range(len(data)):
        ts, spot = int(close_ts[i]), float(data.close[i])
        due = ts // DAY != last_day and math.isfinite(iv[i]) and data.ts[i] >= trade_from_ms
        last_day = ts // DAY
        started = started or due
        if not started:
            continue
        _events, fills = portfolio.mark({"BTC/USDT": spot}, ts)
        portfolio.commit(fills)
        journal += fills
        if not due:
            continue
        contracts = [OptionContract.from_dict(c) for c in portfolio.open_option_contracts()]
        portfolio.mark_options(price_contracts(contracts, {"BTC": spot}, ts, {"BTC": float(iv[i])}), ts)
        history = []
        for k in range(14, 0, -1):
            earlier = [j for j in range(i + 1) if close_ts[j] <= ts - k * DAY]
            history.append(iv[earlier[-1]] if earlier else float("nan"))
        chain = build_chain(DERIBIT, "BTC", spot, ts, float(iv[i]))
        for sid, name in sids:
            decision = evaluate_options(sid, name, DERIBIT, "BTC", DEFAULT_PARAMS[name],
                                        data.slice(max(0, i - 999), i + 1),
                                        "1h", ts, chain, float(iv[i]), np.array(history),
                                        portfolio.positions_view(sid, "BTC/USDT"), OptionsRiskLimits(), 0.3, 4)
            for order in decision.orders:
                answer = portfolio.decide_options(order)
                if answer.fills:
                    portfolio.commit(answer.fills)
                    journal += answer.fills
                elif answer.status != "duplicate":
                    portfolio.record_no_fill(sid, order.order_id)
    return journal


def test_a_hand_driven_loop_of_the_services_calls_makes_the_same_fills(btc_1h):
    data = real_window(btc_1h, 75)
    iv = realized_vol(data.close, HOUR)
    sids = [(f"deribit-{name}-btc", name) for name in DEFAULT_PARAMS]
    expected = services_loop(data, iv, sids, 100_000.0, JAN_2021)
    result = run_options_backtest("BTC", data, "1h", capital=100_000.0, iv=iv, trade_from_ms=JAN_2021)
    assert len(expected) > 10
    assert [f.to_dict() for f in result.journal] == [f.to_dict() for f in expected]


@pytest.mark.parametrize("kwargs, message", [
    ({"max_positions": 0}, "max_positions"),
    ({"min_score": 1.5}, "min_score"),
    ({"capital": -1.0}, "capital"),
    ({"fee_pct": 150.0}, "fee_pct"),
    ({"every_hours": 0.0}, "every_hours"),
    ({"strategies": []}, "strategies"),
    ({"strategies": [("s", "wheel", "deribit", None), ("s", "wheel", "ibkr", None)]}, "'s' appears twice"),
])
def test_bad_input(btc_1h, kwargs, message):
    with pytest.raises(OptionsBacktestError, match=message):
        run_options_backtest("BTC", btc_1h.slice(0, 2000), "1h", **kwargs)


def test_no_decision_without_enough_history_for_the_vol(btc_1h):
    with pytest.raises(OptionsBacktestError, match="volatility never becomes known"):
        run_options_backtest("BTC", btc_1h.slice(0, 100), "1h")


def test_unknown_venue_underlying():
    bars = flat_bars(10, 100.0)
    with pytest.raises(ValueError, match="SOL"):
        OptionsBacktest("SOL", bars, "1h", np.full(10, 0.5), strategies=[("s", "wheel", "deribit", None)],
                        capital=1000.0)
