"""Bars for backtests: the simulator's bars are the sim feed's bars; windows and pairs align."""
from __future__ import annotations

import numpy as np
import pytest

from backtest.data import BacktestDataError, align_pair, csv_path_for, sim_bars, window
from services.feeds.market import SimFeed

DAY = 86_400_000
START = 1_672_531_200_000  # 2023-01-01


def test_sim_bars_are_the_sim_feeds_bars():
    bars = sim_bars(["BTC/USDT", "ETH/USDT"], "1h", start_ms=START, days=3, seed=11)
    feed = SimFeed(["BTC/USDT", "ETH/USDT"], ["1h"], seed=11, history_days=3, origin_ts=START)
    feed.start(START + 3 * DAY)
    for symbol in ("BTC/USDT", "ETH/USDT"):
        got, want = bars[symbol], feed.history(symbol, "1h")
        assert len(got) == 72
        for column in ("ts", "open", "high", "low", "close", "volume"):
            assert np.array_equal(getattr(got, column), getattr(want, column)), column


def test_window_and_pairs(btc_1h, eth_1h):
    part = window(btc_1h, int(btc_1h.ts[100]), int(btc_1h.ts[200]))
    assert len(part) == 100 and part.ts[0] == btc_1h.ts[100]
    with pytest.raises(BacktestDataError, match="no bars between"):
        window(btc_1h, 10**14)
    a, b = align_pair(btc_1h.slice(0, 100), eth_1h.slice(50, 150))
    assert len(a) == 50 and np.array_equal(a.ts, b.ts)
    with pytest.raises(BacktestDataError, match="share no bar time"):
        align_pair(btc_1h.slice(0, 10), eth_1h.slice(20, 30))


def test_bad_input(tmp_path):
    with pytest.raises(BacktestDataError, match="days"):
        sim_bars(["BTC/USDT"], "1h", start_ms=START, days=0)
    with pytest.raises(BacktestDataError, match="00:00 UTC"):
        sim_bars(["BTC/USDT"], "1h", start_ms=START + 1, days=1)
    with pytest.raises(BacktestDataError, match="BTC_USDT-1h.csv does not exist"):
        csv_path_for(tmp_path, "BTC/USDT", "1h")
