"""Every strategy, at its defaults, trades a plausible number of times on real hourly BTC bars.

Reads the recorded Binance BTC/USDT (and ETH/USDT for the pair) 1h candles; skipped when the
shared data folder is absent. Bounds are deliberately loose: the point is "trades, but not on
every bar", not a tuned result.
"""
from __future__ import annotations

import numpy as np
import pytest

from common.ohlcv import OHLCV
from strategies.params import STRATEGY_PARAMS
from strategies.registry import compute_signals
from tests.conftest import SHARED_DATA, require_shared

DATA = SHARED_DATA / "ohlcv" / "binance"
YEAR_2021_MS = (1_609_459_200_000, 1_640_995_200_000)


def load_2021(symbol: str) -> OHLCV:
    path = require_shared(DATA / f"{symbol}-1h.csv")
    rows = np.loadtxt(path, delimiter=",", skiprows=1)
    rows = rows[(rows[:, 0] >= YEAR_2021_MS[0]) & (rows[:, 0] < YEAR_2021_MS[1])]
    return OHLCV.from_rows(rows)


@pytest.fixture(scope="module")
def year_2021():
    return load_2021("BTC_USDT"), load_2021("ETH_USDT")


def round_trips(signals: np.ndarray) -> int:
    """Completed long trades when a buy opens only from flat and a sell closes only a long."""
    long, trips = False, 0
    for s in signals[signals != 0]:
        if s == 1 and not long:
            long = True
        elif s == -1 and long:
            long, trips = False, trips + 1
    return trips


@pytest.mark.parametrize("name", sorted(STRATEGY_PARAMS))
def test_each_strategy_trades_a_few_times_to_a_few_hundred_times_in_2021(year_2021, name):
    btc, eth = year_2021
    assert len(btc) > 8_700
    out = compute_signals(name, btc, pair=eth if STRATEGY_PARAMS[name].needs_pair else None)
    trips = round_trips(out.signals)
    assert 5 <= trips <= 400, f"{name}: {trips} round trips in 2021"
    assert (out.signals != 0).mean() < 0.15, f"{name} signals on too many bars"
