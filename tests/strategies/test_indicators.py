"""Indicators against hand-computed values and against slow, obvious loops written here."""
from __future__ import annotations

import math

import numpy as np
import pytest

from strategies import indicators as ind

NAN = np.nan


# ---- slow references: one plain loop each, straight from the textbook definitions ----------

def ref_sma(x, n):
    return np.array([NAN if i < n - 1 else sum(x[i - n + 1 : i + 1]) / n for i in range(len(x))])


def ref_ema(x, n):
    out = [NAN] * len(x)
    alpha = 2 / (n + 1)
    y = None
    for i in range(len(x)):
        if i == n - 1:
            y = sum(x[:n]) / n
        elif i >= n:
            y = alpha * x[i] + (1 - alpha) * y
        if y is not None:
            out[i] = y
    return np.array(out)


def ref_wilder(values, n):
    """Wilder's average of ``values`` (first element is the first real input)."""
    out = [NAN] * len(values)
    avg = sum(values[:n]) / n
    out[n - 1] = avg
    for i in range(n, len(values)):
        avg = (avg * (n - 1) + values[i]) / n
        out[i] = avg
    return out


def ref_rsi(close, n):
    gains = [max(close[i] - close[i - 1], 0.0) for i in range(1, len(close))]
    losses = [max(close[i - 1] - close[i], 0.0) for i in range(1, len(close))]
    avg_gain, avg_loss = ref_wilder(gains, n), ref_wilder(losses, n)
    out = [NAN]
    for g, lo in zip(avg_gain, avg_loss):
        if math.isnan(g):
            out.append(NAN)
        elif lo == 0:
            out.append(100.0)
        else:
            out.append(100 - 100 / (1 + g / lo))
    return np.array(out)


def ref_std(window):
    mean = sum(window) / len(window)
    return math.sqrt(sum((v - mean) ** 2 for v in window) / len(window))


def ref_atr(high, low, close, n):
    true_range = [high[0] - low[0]] + [
        max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1])) for i in range(1, len(close))
    ]
    return np.array(ref_wilder(true_range, n))


def ref_vwap(high, low, close, volume, n):
    out = []
    for i in range(len(close)):
        if i < n - 1:
            out.append(NAN)
            continue
        rng = range(i - n + 1, i + 1)
        traded = sum((high[j] + low[j] + close[j]) / 3 * volume[j] for j in rng)
        out.append(traded / sum(volume[j] for j in rng))
    return np.array(out)


@pytest.fixture(scope="module")
def walk():
    rng = np.random.default_rng(7)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 600)))
    high = close * (1 + rng.uniform(0, 0.01, 600))
    low = close * (1 - rng.uniform(0, 0.01, 600))
    volume = rng.lognormal(2.0, 0.5, 600)
    return high, low, close, volume


def close_enough(actual, expected, rtol=1e-10):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-9, equal_nan=True)


# ---- hand-computed values ----------------------------------------------------------------

def test_sma_of_one_to_five_over_three():
    close_enough(ind.sma(np.array([1.0, 2, 3, 4, 5]), 3), [NAN, NAN, 2, 3, 4])


def test_smas_from_one_prefix_sum_equal_each_sma_bit_for_bit():
    x = np.r_[NAN, NAN, np.linspace(100.0, 140.0, 40) + np.sin(np.arange(40.0))]
    three, five, longer = ind.smas(x, 3, 5, 50)
    close_enough(ind.smas(np.array([1.0, 2, 3, 4, 5]), 2, 3)[1], [NAN, NAN, 2, 3, 4])
    assert np.array_equal(three, ind.sma(x, 3), equal_nan=True)
    assert np.array_equal(five, ind.sma(x, 5), equal_nan=True)
    assert np.isnan(longer).all()  # 40 defined values: too few for 50
    with pytest.raises(ValueError, match="must be an integer >= 1, got 0"):
        ind.smas(x, 3, 0)


def test_ema_is_seeded_with_the_sma_then_halves_the_gap_for_n3():
    # alpha = 2 / (3 + 1) = 0.5; seed = mean(1, 2, 3) = 2 at index 2
    close_enough(ind.ema(np.array([1.0, 2, 3, 4, 5, 1]), 3), [NAN, NAN, 2, 3, 4, 2.5])


def test_rsi_on_a_known_up_down_up_sequence():
    # n = 3: seed gains (1, 1, 1) / 3 = 1, losses 0 -> 100; then Wilder (avg * 2 + x) / 3
    close = np.array([10.0, 11, 12, 13, 12, 11, 10])
    gain4, loss4 = 2 / 3, 1 / 3
    gain5, loss5 = gain4 * 2 / 3, (loss4 * 2 + 1) / 3
    expected = [NAN, NAN, NAN, 100.0, 100 - 100 / (1 + gain4 / loss4), 100 - 100 / (1 + gain5 / loss5)]
    close_enough(ind.rsi(close, 3)[:6], expected)
    assert ind.rsi(close, 3)[4] == pytest.approx(200 / 3)


def test_rsi_is_100_when_there_are_no_losses_and_0_with_no_gains():
    assert ind.rsi(np.arange(1.0, 20.0), 5)[-1] == 100.0
    assert ind.rsi(np.arange(20.0, 1.0, -1), 5)[-1] == 0.0
    assert ind.rsi(np.full(10, 3.0), 5)[-1] == 100.0  # flat: average loss 0 -> 100 by definition


def test_macd_on_a_step():
    # fast EMA(2) alpha 2/3, slow EMA(3) alpha 1/2, both 10 on the flat part; step to 20
    close = np.array([10.0] * 4 + [20.0])
    line, signal, hist = ind.macd(close, fast=2, slow=3, signal=2)
    assert line[4] == pytest.approx((10 + 20 / 3) - 15)
    assert signal[4] == pytest.approx(2 / 3 * line[4])
    assert hist[4] == pytest.approx(line[4] - signal[4])
    close_enough(line[:4], [NAN, NAN, 0, 0])
    close_enough(signal[:4], [NAN, NAN, NAN, 0])


def test_bollinger_uses_population_std():
    mid, upper, lower = ind.bollinger(np.array([1.0, 2, 3]), 3, 2.0)
    std = math.sqrt(2 / 3)  # ddof=0; the sample std would be 1
    close_enough([mid[2], upper[2], lower[2]], [2, 2 + 2 * std, 2 - 2 * std])


def test_roc_is_in_percent():
    close_enough(ind.roc(np.array([100.0, 110, 99, 121]), 2), [NAN, NAN, -1.0, 10.0])


def test_atr_uses_the_true_range_across_gaps():
    high = np.array([10.0, 12, 20])
    low = np.array([8.0, 11, 18])
    close = np.array([9.0, 11.5, 19])
    # TR: 2 ; max(1, 3, 2) = 3 ; max(2, 8.5, 6.5) = 8.5 ; seed (2 + 3) / 2 = 2.5 ; (2.5 + 8.5) / 2
    close_enough(ind.atr(high, low, close, 2), [NAN, 2.5, 5.5])


def test_vwap_weights_the_typical_price_by_volume():
    high, low, close = np.array([3.0, 6, 9]), np.array([1.0, 4, 7]), np.array([2.0, 5, 8])
    volume = np.array([1.0, 3, 0])
    # typical prices 2, 5, 8; window 2: (2*1 + 5*3) / 4, (5*3 + 8*0) / 3
    close_enough(ind.vwap(high, low, close, volume, 2), [NAN, 17 / 4, 5])


def test_vwap_is_nan_when_the_window_traded_nothing():
    flat = np.full(4, 5.0)
    assert np.isnan(ind.vwap(flat, flat, flat, np.zeros(4), 2)).all()


def test_volume_ratio_against_its_average():
    close_enough(ind.volume_ratio(np.array([1.0, 3, 2, 6]), 2), [NAN, 1.5, 0.8, 1.5])
    assert np.isnan(ind.volume_ratio(np.zeros(3), 2)).all()


def test_zscore_by_hand_and_zero_for_a_flat_window():
    # windows (1, 2, 3): mean 2, std sqrt(2/3); (2, 3, 3): mean 8/3, std sqrt(2/9)
    close_enough(ind.zscore(np.array([1.0, 2, 3, 3]), 3), [NAN, NAN, 1 / math.sqrt(2 / 3), (1 / 3) / math.sqrt(2 / 9)])
    close_enough(ind.zscore(np.full(5, 0.1), 3), [NAN, NAN, 0, 0, 0])


# ---- slow references on a random walk ---------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 5, 14, 50])
def test_fast_paths_match_the_slow_references(walk, n):
    high, low, close, volume = walk
    c = list(close)
    close_enough(ind.sma(close, n), ref_sma(c, n))
    close_enough(ind.ema(close, n), ref_ema(c, n))
    close_enough(ind.rsi(close, n), ref_rsi(c, n))
    close_enough(ind.atr(high, low, close, n), ref_atr(high, low, close, n))
    close_enough(ind.vwap(high, low, close, volume, n), ref_vwap(high, low, close, volume, n))
    close_enough(ind.roc(close, n), [NAN] * n + [100 * (c[i] / c[i - n] - 1) for i in range(n, len(c))])
    close_enough(ind.volume_ratio(volume, n), volume / ref_sma(list(volume), n))
    mid, upper, lower = ind.bollinger(close, n, 2.5)
    stds = np.array([NAN] * (n - 1) + [ref_std(c[i - n + 1 : i + 1]) for i in range(n - 1, len(c))])
    close_enough(mid, ref_sma(c, n))
    close_enough(upper, ref_sma(c, n) + 2.5 * stds)
    close_enough(lower, ref_sma(c, n) - 2.5 * stds)
    if n > 1:
        close_enough(ind.zscore(close, n), (close - ref_sma(c, n)) / stds, rtol=1e-8)


def test_macd_matches_the_reference_emas(walk):
    close = walk[2]
    line, signal, hist = ind.macd(close, 12, 26, 9)
    expected_line = ref_ema(list(close), 12) - ref_ema(list(close), 26)
    expected_signal = np.full(close.shape[0], NAN)
    expected_signal[25:] = ref_ema(list(expected_line[25:]), 9)
    close_enough(line, expected_line)
    close_enough(signal, expected_signal)
    close_enough(hist, expected_line - expected_signal)


@pytest.mark.parametrize("n", [1, 3, 26, 200])
def test_ema_scan_matches_the_loop_over_several_scan_levels(n):
    # 10_000 values > 64 ** 2: the blocked scan recurses twice before the plain loop
    x = 50_000.0 + np.cumsum(np.random.default_rng(n).normal(0, 50, 10_000))
    close_enough(ind.ema(x, n), ref_ema(list(x), n), rtol=1e-11)


# ---- warm-up and look-ahead -------------------------------------------------------------

def test_nan_warmup_lengths(walk):
    high, low, close, volume = walk

    def leading_nans(a):
        return int(np.argmax(np.isfinite(a)))

    assert leading_nans(ind.sma(close, 10)) == 9
    assert leading_nans(ind.ema(close, 10)) == 9
    assert leading_nans(ind.rsi(close, 14)) == 14
    assert leading_nans(ind.roc(close, 14)) == 14
    assert leading_nans(ind.atr(high, low, close, 14)) == 13
    assert leading_nans(ind.vwap(high, low, close, volume, 24)) == 23
    assert leading_nans(ind.volume_ratio(volume, 24)) == 23
    assert leading_nans(ind.zscore(close, 20)) == 19
    assert [leading_nans(a) for a in ind.bollinger(close, 20)] == [19, 19, 19]
    assert [leading_nans(a) for a in ind.macd(close, 12, 26, 9)] == [25, 33, 33]
    for series in (ind.sma(close, 10), ind.rsi(close, 14), ind.macd(close)[1]):
        assert np.isfinite(series[leading_nans(series):]).all()


def test_shorter_than_the_window_is_all_nan_and_empty_is_empty():
    assert np.isnan(ind.ema(np.array([1.0, 2.0]), 3)).all()
    assert np.isnan(ind.rsi(np.array([1.0, 2.0, 3.0]), 3)).all()
    assert ind.sma(np.array([]), 3).shape == (0,)
    assert ind.zscore(np.array([]), 3).shape == (0,)


def test_a_leading_warmup_run_is_skipped_not_propagated():
    x = np.array([1.0, 2, 3, 4, 5, 6, 7])
    smoothed = ind.sma(x, 3)  # two leading NaN
    close_enough(ind.ema(smoothed, 2), np.concatenate([[NAN, NAN], ind.ema(smoothed[2:], 2)]))


@pytest.mark.parametrize("k", [1, 2, 63, 64, 65, 129, 4095, 4096, 4161, 9999])
def test_prefix_gives_bit_identical_values(k):
    x = 50_000.0 + np.cumsum(np.random.default_rng(3).normal(0, 50, 10_000))
    for fn in (lambda a: ind.ema(a, 9), lambda a: ind.rsi(a, 14), lambda a: ind.sma(a, 20),
               lambda a: ind.zscore(a, 20), lambda a: ind.macd(a)[1]):
        np.testing.assert_array_equal(fn(x[:k]), fn(x)[:k])


# ---- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -3, 2.5, 3.0, True, "3", None])
def test_bad_window_length_is_rejected(bad):
    x = np.arange(1.0, 10.0)
    for call in (lambda: ind.sma(x, bad), lambda: ind.ema(x, bad), lambda: ind.rsi(x, bad),
                 lambda: ind.zscore(x, bad), lambda: ind.volume_ratio(x, bad), lambda: ind.roc(x, bad)):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            call()


def test_macd_rejects_fast_not_below_slow():
    with pytest.raises(ValueError, match=r"fast \(26\) must be < slow \(12\)"):
        ind.macd(np.arange(1.0, 60.0), fast=26, slow=12)
    with pytest.raises(ValueError, match="signal must be an integer"):
        ind.macd(np.arange(1.0, 60.0), signal=0)


def test_bollinger_rejects_a_non_positive_k():
    with pytest.raises(ValueError, match="k must be a finite number > 0"):
        ind.bollinger(np.arange(1.0, 30.0), 20, 0.0)


def test_a_nan_after_the_warmup_names_its_index():
    x = np.array([1.0, 2.0, NAN, 4.0])
    with pytest.raises(ValueError, match=r"x\[2\] is nan"):
        ind.sma(x, 2)
    with pytest.raises(ValueError, match=r"close\[2\] is nan"):
        ind.rsi(x, 2)


def test_raw_bar_columns_must_be_finite_everywhere():
    ok = np.array([2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match=r"high\[0\] is nan: every value must be finite"):
        ind.atr(np.array([NAN, 2.0, 2.0]), ok, ok, 2)
    with pytest.raises(ValueError, match=r"volume\[1\] is inf"):
        ind.vwap(ok, ok, ok, np.array([1.0, np.inf, 1.0]), 2)


def test_shape_errors_are_explicit():
    with pytest.raises(ValueError, match="1-D"):
        ind.sma(np.ones((3, 3)), 2)
    with pytest.raises(ValueError, match="same length"):
        ind.atr(np.ones(3), np.ones(3), np.ones(4), 2)
