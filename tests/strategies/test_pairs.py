"""Pairs spread: legs matched on timestamps, buy the cheap primary, sell when the spread reverts."""
from __future__ import annotations

import numpy as np
import pytest

from common.ohlcv import OHLCV
from strategies.pairs import pairs_spread

PRIMARY = [10, 10, 10, 10, 7, 8, 11, 11]


def drop(bars: OHLCV, index: int) -> OHLCV:
    keep = np.arange(len(bars)) != index
    return OHLCV(*(col[keep] for col in (bars.ts, bars.open, bars.high, bars.low, bars.close, bars.volume)))


def test_buys_when_the_primary_is_cheap_against_the_pair_and_sells_at_the_mean(make_bars):
    # pair flat at 10, so the spread is log(close / 10): z3 = -sqrt(2) on bar 4, > 0 on bar 6
    out = pairs_spread(make_bars(PRIMARY), make_bars([10] * 8), lookback=3, entry_z=1.0, exit_z=0.0)
    assert np.flatnonzero(out.signals == 1).tolist() == [4]
    assert np.flatnonzero(out.signals == -1).tolist() == [6]
    assert out.indicators["zscore"][4] == pytest.approx(-np.sqrt(2))
    assert out.indicators["spread"][4] == pytest.approx(np.log(0.7))


def test_a_pair_that_moves_with_the_primary_gives_no_trade(make_bars):
    out = pairs_spread(make_bars(PRIMARY), make_bars([2 * c for c in PRIMARY]), lookback=3, entry_z=1.0)
    assert not out.signals.any()
    assert np.nanmax(np.abs(out.indicators["zscore"])) == 0.0


def test_legs_are_matched_on_timestamps(make_bars):
    primary = make_bars([10, 10, 10, 10, 10, 7, 8, 11, 11])
    full_pair = make_bars([10] * 12)  # also runs 3 bars past the primary: ignored
    pair = drop(full_pair, 1)
    out = pairs_spread(primary, pair, lookback=3, entry_z=1.0, exit_z=0.0)
    assert out.signals.shape == (9,)
    assert np.isnan(out.indicators["zscore"][1]) and out.signals[1] == 0
    matched = pairs_spread(drop(primary, 1), pair, lookback=3, entry_z=1.0, exit_z=0.0)
    np.testing.assert_array_equal(np.delete(out.signals, 1), matched.signals)
    assert np.flatnonzero(out.signals == 1).tolist() == [5]
    assert np.flatnonzero(out.signals == -1).tolist() == [7]


def test_no_common_bars_means_no_signal(make_bars):
    out = pairs_spread(make_bars(PRIMARY), make_bars([10] * 8, t0=0), lookback=3)
    assert not out.signals.any()
    assert np.isnan(out.indicators["zscore"]).all()
