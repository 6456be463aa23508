"""Trend strategies on hand-built closes: each must buy and sell on a known bar, and only there."""
from __future__ import annotations

import pytest

from strategies import trend
from tests.support.builders import events


def test_sma_crossover_buys_on_the_golden_cross_and_sells_on_the_death_cross(make_bars):
    # SMA2: _, 10, 10, 10, 11.5, 13, 13, 10, 7, 7 ; SMA3: _, _, 10, 10, 11, 12, 13, 11, 9, 7
    # bar 6 touches (13 = 13) without crossing; bar 7 crosses below
    out = trend.sma_crossover(make_bars([10, 10, 10, 10, 13, 13, 13, 7, 7, 7]), fast=2, slow=3)
    assert events(out) == ([4], [7])
    assert out.indicators["sma_fast"][4] == 11.5
    assert out.indicators["sma_slow"][4] == 11.0


def test_ema_crossover_on_a_step_up_then_down(make_bars):
    # flat 10: both EMAs 10 (no cross); step to 20: EMA2 = 10 + 2/3 * 10 > EMA4 = 10 + 0.4 * 10
    out = trend.ema_crossover(make_bars([10] * 5 + [20] * 4 + [5] * 2), fast=2, slow=4)
    assert events(out) == ([5], [9])
    assert out.indicators["ema_fast"][5] == pytest.approx(50 / 3)
    assert out.indicators["ema_slow"][5] == pytest.approx(14.0)


def test_triple_ema_buys_when_the_stack_forms_and_sells_when_it_breaks(make_bars):
    # step to 20 at bar 5: EMA2 16.67 > EMA3 15 > EMA4 14 ; drop to 5 at bar 9 breaks it
    out = trend.triple_ema(make_bars([10] * 5 + [20] * 4 + [5] * 2), fast=2, mid=3, slow=4)
    assert events(out) == ([5], [9])
    assert out.indicators["ema_mid"][5] == pytest.approx(15.0)


def test_triple_ema_sells_as_soon_as_the_fast_leg_breaks_the_stack(make_bars):
    # a rise then a shallow pullback: fast dips under mid while mid stays above slow
    out = trend.triple_ema(make_bars([10] * 5 + [20] * 4 + [18]), fast=2, mid=3, slow=4)
    assert events(out) == ([5], [9])
    assert out.indicators["ema_mid"][9] > out.indicators["ema_slow"][9]


def test_macd_crosses_its_signal_up_on_the_step_and_back_down_as_it_fades(make_bars):
    # bar 6: line 16.67 - 15 = 1.667 > signal 1.111 ; bar 7: 1.389 > 1.296 ; bar 8: 0.880 < 1.019
    out = trend.macd(make_bars([10] * 6 + [20] * 4), fast=2, slow=3, signal=2)
    assert events(out) == ([6], [8])
    assert out.indicators["macd"][6] == pytest.approx(5 / 3)
    assert out.indicators["macd_signal"][6] == pytest.approx(10 / 9)
    assert out.indicators["macd_hist"][8] == pytest.approx(0.8796296 - 1.0185185, abs=1e-6)


def test_momentum_needs_the_move_to_exceed_the_threshold(make_bars):
    # ROC2: _, _, 0, 0, +10, +10, 0, -9.09, -9.09, 0
    out = trend.momentum(make_bars([100, 100, 100, 100, 110, 110, 110, 100, 100, 100]), period=2, threshold=5.0)
    assert events(out) == ([4], [7])
    quiet = trend.momentum(make_bars([100, 100, 100, 100, 104, 104, 104, 100]), period=2, threshold=5.0)
    assert not quiet.signals.any()


def test_volume_weighted_buys_a_breakout_on_heavy_volume_and_sells_below_vwap(make_bars):
    # bar 4: close 110 on 40 (4x) volume; typical 106.67; VWAP3 = (1000 + 1000 + 4266.67) / 60
    bars = make_bars([100] * 4 + [110, 110, 90, 90], volume=[10] * 4 + [40, 10, 10, 10])
    out = trend.volume_weighted(bars, period=3, volume_period=3, volume_threshold=1.5)
    assert events(out) == ([4], [6])
    assert out.indicators["vwap"][4] == pytest.approx(104.444444, rel=1e-6)
    assert out.indicators["volume_ratio"][4] == pytest.approx(2.0)


def test_volume_weighted_ignores_a_breakout_on_thin_volume(make_bars):
    bars = make_bars([100] * 4 + [110, 110, 90, 90], volume=[10] * 8)
    out = trend.volume_weighted(bars, period=3, volume_period=3, volume_threshold=1.5)
    assert events(out) == ([], [6])


def test_bad_length_reaches_the_caller_as_value_error(make_bars):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        trend.sma_crossover(make_bars([1, 2, 3]), fast=0, slow=2)
