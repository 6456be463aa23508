"""Strategies bound to their functions: bar checks, warm-up met exactly, no look-ahead, latest signal."""
from __future__ import annotations

import math

import numpy as np
import pytest

from common.ohlcv import OHLCV, BadBarError
from strategies.params import STRATEGY_PARAMS, get_params
from strategies.registry import FUNCTIONS, LatestSignal, bind_functions, compute_signals, latest_signal, signature_drift

ALL = sorted(STRATEGY_PARAMS)
N_BARS = 500


@pytest.fixture(scope="module")
def bars(make_random_bars):
    return make_random_bars(N_BARS, seed=11), make_random_bars(N_BARS + 20, seed=12)


def pair_for(name, pair):
    return pair if STRATEGY_PARAMS[name].needs_pair else None


def with_future_changed(bars: OHLCV, k: int) -> OHLCV:
    """Same bars before ``k``; from ``k`` on each bar scaled by its own factor (still valid bars)."""
    i = np.arange(len(bars))
    scale = np.where(i >= k, 1.0 + 0.2 * np.sin(i), 1.0)
    return OHLCV(bars.ts, bars.open * scale, bars.high * scale, bars.low * scale, bars.close * scale,
                 bars.volume * scale**3)


def test_every_declared_strategy_is_bound_to_its_function():
    assert sorted(FUNCTIONS) == ALL
    assert all(FUNCTIONS[name].__name__ == name for name in ALL)


def test_a_function_whose_defaults_drift_from_the_declared_ones_is_refused():
    def rsi(data, period=14, oversold=25.0, overbought=70.0):
        raise AssertionError("never called")

    def momentum(data, period=14, threshold=5):  # an int where a float is declared
        raise AssertionError("never called")

    assert signature_drift(FUNCTIONS["rsi"], STRATEGY_PARAMS["rsi"]) is None
    with pytest.raises(ValueError, match=r"rsi: the function's defaults .*'oversold': 25.0.* differ from "
                                         r"strategies.params .*'oversold': 30.0"):
        bind_functions({**FUNCTIONS, "rsi": rsi}, STRATEGY_PARAMS)
    with pytest.raises(ValueError, match=r"momentum: the function's defaults"):
        bind_functions({**FUNCTIONS, "momentum": momentum}, STRATEGY_PARAMS)
    with pytest.raises(ValueError, match=r"strategy functions .* do not match strategies.params"):
        bind_functions({k: v for k, v in FUNCTIONS.items() if k != "rsi"}, STRATEGY_PARAMS)


def test_pairs_needs_a_pair_and_the_others_refuse_one(bars):
    data, pair = bars
    with pytest.raises(ValueError, match="pairs_spread: needs a pair"):
        compute_signals("pairs_spread", data)
    with pytest.raises(ValueError, match="rsi: takes no pair"):
        compute_signals("rsi", data, pair=pair)


def test_a_nan_close_is_a_bad_bar_naming_its_index(bars):
    data, pair = bars
    close = data.close.copy()
    close[123] = math.nan
    broken = OHLCV(data.ts, data.open, data.high, data.low, close, data.volume)
    with pytest.raises(BadBarError, match=r"data\[123\] \(ts=\d+\): close is not a finite number"):
        compute_signals("sma_crossover", broken)
    with pytest.raises(BadBarError, match=r"pair\[123\]"):
        compute_signals("pairs_spread", data, pair=broken)


@pytest.mark.parametrize("name", ALL)
def test_outputs_are_int8_events_aligned_with_the_bars(bars, name):
    data, pair = bars
    out = compute_signals(name, data, pair=pair_for(name, pair))
    assert out.signals.dtype == np.int8 and out.signals.shape == (N_BARS,)
    assert set(np.unique(out.signals)) <= {-1, 0, 1}
    assert (out.signals != 0).sum() >= 2, "a random walk of 500 bars should trade at least once"
    assert all(series.shape == (N_BARS,) for series in out.indicators.values())


@pytest.mark.parametrize("name", ALL)
def test_warmup_is_exactly_when_the_first_signal_becomes_possible(bars, name):
    data, pair = bars
    warmup = get_params(name).warmup_bars()
    out = compute_signals(name, data, pair=pair_for(name, pair))
    assert not out.signals[: warmup - 1].any()
    for key, series in out.indicators.items():
        assert np.isfinite(series[warmup - 2 :]).all(), f"{key} is not defined from bar {warmup - 2}"


@pytest.mark.parametrize("name", ALL)
def test_no_look_ahead_prefix_equals_the_prefix_of_the_full_run(bars, name):
    data, pair = bars
    full = compute_signals(name, data, pair=pair_for(name, pair))
    warmup = get_params(name).warmup_bars()
    for k in sorted({1, 2, warmup - 1, warmup, warmup + 1, 64, 65, 200, 333, N_BARS - 1}):
        part = compute_signals(name, data.slice(0, k), pair=pair_for(name, pair))
        np.testing.assert_array_equal(part.signals, full.signals[:k], err_msg=f"k={k}")
        for key, series in part.indicators.items():
            np.testing.assert_array_equal(series, full.indicators[key][:k], err_msg=f"{key} k={k}")


@pytest.mark.parametrize("name", ALL)
def test_changing_future_bars_leaves_past_signals_alone(bars, name):
    data, pair = bars
    full = compute_signals(name, data, pair=pair_for(name, pair))
    for k in (60, 250, 420):
        changed_pair = with_future_changed(pair, k + 7) if STRATEGY_PARAMS[name].needs_pair else None
        changed = compute_signals(name, with_future_changed(data, k), pair=changed_pair)
        np.testing.assert_array_equal(changed.signals[:k], full.signals[:k], err_msg=f"k={k}")
        for key, series in changed.indicators.items():
            np.testing.assert_array_equal(series[:k], full.indicators[key][:k], err_msg=f"{key} k={k}")
        assert any(not np.array_equal(series[k + 8 :], full.indicators[key][k + 8 :])
                   for key, series in changed.indicators.items()), "the change must reach the strategy"


@pytest.mark.parametrize("name", ALL)
def test_latest_signal_equals_the_full_run_bar_by_bar(bars, name):
    data, pair = bars
    full = compute_signals(name, data, pair=pair_for(name, pair))
    warmup = get_params(name).warmup_bars()
    traded = np.flatnonzero(full.signals)
    for k in sorted({0, warmup - 2, warmup - 1, *traded[:4].tolist(), *traded[-2:].tolist(), N_BARS - 1}):
        latest = latest_signal(name, data.slice(0, k + 1), pair=pair_for(name, pair))
        assert latest.signal == full.signals[k], f"bar {k}"
        assert latest.enough_history == (k + 1 >= warmup)
        assert latest.price == data.close[k] and latest.ts_bar == data.ts[k]


def test_latest_signal_reports_last_defined_indicator_values(bars):
    data, _ = bars
    latest = latest_signal("macd", data)
    full = compute_signals("macd", data)
    assert isinstance(latest, LatestSignal)
    assert latest.enough_history
    assert latest.indicators == {key: float(series[-1]) for key, series in full.indicators.items()}
    assert all(type(v) is float for v in latest.indicators.values())


def test_latest_signal_before_warmup_holds_and_drops_undefined_indicators(bars):
    data, _ = bars
    latest = latest_signal("macd", data.slice(0, 30))  # line defined from bar 25, signal from 33
    assert latest == LatestSignal(0, float(data.close[29]), int(data.ts[29]),
                                  {"macd": pytest.approx(latest.indicators["macd"])}, False)
    assert set(latest.indicators) == {"macd"}


def test_latest_signal_on_no_bars_is_an_error(bars):
    data, _ = bars
    with pytest.raises(ValueError, match="rsi: no bars"):
        latest_signal("rsi", data.slice(0, 0))
