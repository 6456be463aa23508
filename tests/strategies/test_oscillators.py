"""Mean-reverting strategies on hand-built closes: a buy and a sell on known bars."""
from __future__ import annotations

import numpy as np
import pytest

from strategies import oscillators
from tests.support.builders import events


def test_rsi_buys_crossing_into_oversold_and_sells_crossing_into_overbought(make_bars):
    # RSI3: 100, 66.7, 44.4, 29.6 (bar 6, < 30), 19.8, 46.5, 64.3, 76.2 (bar 10, > 70)
    out = oscillators.rsi(make_bars([10, 11, 12, 13, 12, 11, 10, 9, 10, 11, 12, 13, 14]), period=3)
    assert events(out) == ([6], [10])
    assert out.indicators["rsi"][6] == pytest.approx(100 - 100 / (1 + (8 / 27) / (19 / 27)))


def test_rsi_staying_oversold_buys_only_once(make_bars):
    out = oscillators.rsi(make_bars([10, 11, 12, 13, 12, 11, 10, 9, 8, 7]), period=3)
    assert events(out) == ([6], [])


def test_bollinger_buys_below_the_lower_band_and_sells_at_the_middle(make_bars):
    # bar 4: window (10, 10, 7): mid 9, std sqrt(2), lower 7.59 > close 7
    # bar 6: window (7, 8, 11): mid 8.67 < close 11, previous close 8 <= mid 8.33
    out = oscillators.bollinger(make_bars([10, 10, 10, 10, 7, 8, 11, 11]), period=3, num_std=1.0)
    assert events(out) == ([4], [6])
    assert out.indicators["bb_lower"][4] == pytest.approx(9 - np.sqrt(2))
    assert out.indicators["bb_upper"][4] == pytest.approx(9 + np.sqrt(2))


def test_mean_reversion_enters_on_a_stretched_low_and_exits_at_the_mean(make_bars):
    # z3: 0 (flat), -1.414 (bar 4), -0.267, +1.37 (bar 6 crosses above exit_z = 0)
    out = oscillators.mean_reversion(make_bars([10, 10, 10, 10, 7, 8, 11, 11]), period=3, entry_z=1.0, exit_z=0.0)
    assert events(out) == ([4], [6])
    assert out.indicators["zscore"][4] == pytest.approx(-np.sqrt(2))


def test_mean_reversion_exit_level_is_respected(make_bars):
    out = oscillators.mean_reversion(make_bars([10, 10, 10, 10, 7, 8, 11, 11]), period=3, entry_z=1.0, exit_z=1.5)
    assert events(out) == ([4], [])


def test_rsi_macd_trades_only_when_both_agree(make_bars):
    # bar 6 (step to 20): MACD 1.667 > signal 1.111 and RSI2 = 100 -> bullish starts: buy
    # bar 8: MACD 0.880 < signal 1.019 but RSI still 100 -> they disagree: hold
    # bar 9 (drop to 15): MACD -0.332 < signal 0.118 and RSI 20 -> bearish starts: sell
    out = oscillators.rsi_macd(make_bars([10] * 6 + [20] * 3 + [15]), rsi_period=2, fast=2, slow=3, signal=2)
    assert events(out) == ([6], [9])
    assert out.signals[8] == 0
    assert out.indicators["rsi"][9] == pytest.approx(20.0)


def test_reversion_events_are_long_only_thresholds():
    z = np.array([0.0, -2.5, -1.0, 0.5, 2.5, -0.5])
    buy, sell = oscillators.reversion_events(z, entry_z=2.0, exit_z=0.0)
    assert np.flatnonzero(buy).tolist() == [1]
    assert np.flatnonzero(sell).tolist() == [3]
