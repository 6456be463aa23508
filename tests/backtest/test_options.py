"""Options backtests: realized vol by its formula, settlement at intrinsic value, the position
cap, and a real-data run whose cash is exactly its fills."""
from __future__ import annotations

import math

import numpy as np
import pytest

from backtest.data import window
from backtest.options import (
    OptionsBacktest, OptionsBacktestError, iv_from_series, realized_vol, run_options_backtest,
)
from common.ohlcv import OHLCV
from options.contracts import OptionContract, OptionPosition
from options.venues import DERIBIT

HOUR = 3_600_000
DAY = 86_400_000


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


def flat_bars(n: int, price: float, start: int) -> OHLCV:
    ts = start + np.arange(n, dtype=np.int64) * HOUR
    p = np.full(n, price)
    return OHLCV(ts, p, p, p, p, np.ones(n))


def test_expired_options_settle_at_intrinsic_value():
    start = 1_704_067_200_000  # 2024-01-01 00:00 UTC
    bars = flat_bars(72, 42_000.0, start)
    bt = OptionsBacktest("BTC", bars, "1h", np.full(72, 0.5), strategies=[("s", "protective_puts", "deribit", None)],
                         capital=10_000.0)
    book = bt.books["s"]
    expiry = start + 8 * HOUR  # 08:00 UTC, a Deribit expiry time
    call = OptionContract("deribit", "BTC", expiry, 40_000.0, True, 1.0)
    put = OptionContract("deribit", "BTC", expiry, 41_000.0, False, 1.0)
    book.positions = [OptionPosition(call, 0.5, 1_500.0, start), OptionPosition(put, -0.2, 100.0, start)]
    bt._settle(book, start + 24 * HOUR)
    settle_call, settle_put = book.fills
    assert (settle_call.kind, settle_call.side, settle_call.price) == ("settlement", "sell", 2_000.0)
    assert settle_call.cash_delta == pytest.approx(0.5 * 2_000.0)
    assert settle_call.realized_pnl == pytest.approx(0.5 * (2_000.0 - 1_500.0))
    assert (settle_put.side, settle_put.price, settle_put.cash_delta) == ("buy", 0.0, 0.0)
    assert settle_put.realized_pnl == pytest.approx(0.2 * 100.0)  # the short put expired worthless
    assert book.positions == [] and book.book.cash == pytest.approx(11_000.0)


def test_real_run_cash_is_the_sum_of_its_fills_and_the_cap_holds(btc_1h):
    data = window(btc_1h, 1_609_459_200_000 - 40 * DAY, 1_609_459_200_000 + 120 * DAY)  # Dec 2020 - Apr 2021
    result = run_options_backtest("BTC", data, "1h", capital=100_000.0, max_positions=2, venues=("deribit", "ibkr"),
                                  trade_from_ms=1_609_459_200_000)
    assert result.close_ts[0] >= 1_609_459_200_000 + HOUR
    assert len(result.books) == 10
    traded = 0
    for sid, ob in result.books.items():
        assert ob.book.cash == pytest.approx(100_000.0 + sum(f.cash_delta for f in ob.fills))
        opened: dict[str, int] = {}
        for fill in ob.fills:  # replay: never more than 2 open positions
            if fill.kind == "option" and fill.extra["action"] == "open":
                opened[fill.instrument] = 1
            else:
                opened.pop(fill.instrument, None)
            assert len(opened) <= 2, sid
        traded += len(ob.fills)
        assert result.metrics[sid]["fills"] == len(ob.fills)
        assert len(ob.equity) == result.close_ts.size
    assert traded > 10


@pytest.mark.parametrize("kwargs, message", [
    ({"max_positions": 0}, "max_positions"),
    ({"capital": -1.0}, "capital"),
    ({"fee_pct": 150.0}, "fee_pct"),
    ({"every_hours": 0.0}, "every_hours"),
    ({"strategies": []}, "strategies"),
])
def test_bad_input(btc_1h, kwargs, message):
    with pytest.raises(OptionsBacktestError, match=message):
        run_options_backtest("BTC", btc_1h.slice(0, 2000), "1h", **kwargs)


def test_no_decision_without_enough_history_for_the_vol(btc_1h):
    with pytest.raises(OptionsBacktestError, match="volatility never becomes known"):
        run_options_backtest("BTC", btc_1h.slice(0, 100), "1h")


def test_unknown_venue_underlying():
    bars = flat_bars(10, 100.0, 1_704_067_200_000)
    with pytest.raises(ValueError, match="SOL"):
        OptionsBacktest("SOL", bars, "1h", np.full(10, 0.5), strategies=[("s", "wheel", "deribit", None)],
                        capital=1000.0)
    assert DERIBIT.name == "deribit"
