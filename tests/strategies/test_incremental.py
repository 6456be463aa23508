"""Incremental indicators and strategies equal the vectorized ones, bar by bar, on real data.

The vectorized forms (``strategies.indicators`` functions, ``compute_signals``) are the
reference: every incremental value must be within 1e-9 of them (relative, absolute below 1)
at every bar, and every signal must be identical, including after a refetch rebuilds the state.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from common.bars import BarStore
from common.csv_bars import load_ohlcv_csv
from common.ohlcv import OHLCV
from common.timeframes import timeframe_ms
from strategies import indicators
from strategies.incremental import BecomesTrue, Cross, IncrementalSignal, SignalCache
from strategies.params import STRATEGY_PARAMS
from strategies.registry import compute_signals
from trading.engine import evaluate_spot

BINANCE = Path(__file__).resolve().parents[3] / "shared" / "data" / "ohlcv" / "binance"
TOL = 1e-9
PARITY_BARS = 3000
HOUR = timeframe_ms("1h")
NON_DEFAULT = {
    "sma_crossover": {"fast": 10, "slow": 30},
    "ema_crossover": {"fast": 5, "slow": 40},
    "rsi": {"period": 7, "oversold": 25.0, "overbought": 75.0},
    "bollinger": {"period": 30, "num_std": 1.5},
    "macd": {"fast": 8, "slow": 21, "signal": 5},
    "mean_reversion": {"period": 24, "entry_z": 1.5, "exit_z": 0.5},
    "momentum": {"period": 24, "threshold": 3.0},
    "volume_weighted": {"period": 12, "volume_period": 48, "volume_threshold": 1.2},
    "triple_ema": {"fast": 5, "mid": 13, "slow": 34},
    "rsi_macd": {"rsi_period": 10, "rsi_mid": 45.0, "fast": 8, "slow": 17, "signal": 9},
    "pairs_spread": {"lookback": 48, "entry_z": 1.5, "exit_z": 0.25},
}
CASES = [(name, {}) for name in sorted(STRATEGY_PARAMS)] + sorted(NON_DEFAULT.items())


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: defined on different bars"
    defined = ~np.isnan(want)
    err = np.abs(got[defined] - want[defined]) / np.maximum(np.abs(want[defined]), 1.0)
    assert err.size == 0 or err.max() <= TOL, f"{what}: off by {err.max():.3g} at bar {int(np.argmax(err))}"


def run(indicator, *columns: np.ndarray) -> list:
    return [indicator.update(*values) for values in zip(*(c.tolist() for c in columns))]


@pytest.fixture(scope="module")
def real():
    """The last PARITY_BARS hourly BTC bars, and ETH over a slightly longer span (the pair)."""
    folder = BINANCE
    if not folder.is_dir():
        pytest.skip(f"{folder} is not present (../shared/data)")
    btc, eth = load_ohlcv_csv(folder / "BTC_USDT-1h.csv"), load_ohlcv_csv(folder / "ETH_USDT-1h.csv")
    return btc.tail(PARITY_BARS), eth.tail(PARITY_BARS + 50)


# --- indicators ---------------------------------------------------------------------------------
def test_sma_and_ema_by_hand():
    assert run(indicators.Sma(2), np.array([1.0, 2.0, 3.0, 4.0]))[1:] == [1.5, 2.5, 3.5]
    assert math.isnan(indicators.Sma(2).update(1.0))
    ema = run(indicators.Ema(3), np.array([1.0, 2.0, 3.0, 5.0]))  # seed mean(1, 2, 3) = 2, alpha 0.5
    assert math.isnan(ema[1]) and ema[2] == 2.0 and ema[3] == 3.5


def test_ema_skips_a_leading_nan_run_and_refuses_a_later_nan():
    ema = indicators.Ema(2)
    assert math.isnan(ema.update(float("nan")))
    assert ema.update(1.0) != ema.update(3.0) == 2.0
    with pytest.raises(ValueError, match="ema: got nan"):
        ema.update(float("nan"))


def test_rsi_of_a_rising_series_is_100_and_of_a_falling_one_0():
    assert run(indicators.Rsi(3), np.arange(1.0, 8.0))[3:] == [100.0] * 4
    assert run(indicators.Rsi(3), np.arange(8.0, 1.0, -1.0))[3:] == [0.0] * 4


def test_zscore_of_a_flat_window_is_zero():
    assert run(indicators.ZScore(3), np.full(6, 7.1))[2:] == [0.0] * 4


@pytest.mark.parametrize("n", [1, 2, 14, 64, 65, 200])
def test_each_indicator_equals_its_vectorized_form(make_random_bars, n):
    bars = make_random_bars(1500, seed=n)
    c, h, lo, v = bars.close, bars.high, bars.low, bars.volume
    assert_close(run(indicators.Sma(n), c), indicators.sma(c, n), "sma")
    assert_close(run(indicators.Ema(n), c), indicators.ema(c, n), "ema")
    assert_close(run(indicators.Roc(n), c), indicators.roc(c, n), "roc")
    assert_close(run(indicators.Rsi(n), c), indicators.rsi(c, n), "rsi")
    assert_close(run(indicators.Atr(n), h, lo, c), indicators.atr(h, lo, c, n), "atr")
    assert_close(run(indicators.Vwap(n), h, lo, c, v), indicators.vwap(h, lo, c, v, n), "vwap")
    assert_close(run(indicators.VolumeRatio(n), v), indicators.volume_ratio(v, n), "volume_ratio")
    if n > 2:  # a 2-bar z is +-1 up to cancellation in x - mean, which neither form resolves to 1e-9
        assert_close(run(indicators.ZScore(n), c), indicators.zscore(c, n), "zscore")
    for got, want, part in zip(zip(*run(indicators.Bollinger(n, 1.5), c)), indicators.bollinger(c, n, 1.5),
                               ("mid", "upper", "lower")):
        assert_close(got, want, f"bollinger {part}")
    if n < 200:
        for got, want, part in zip(zip(*run(indicators.Macd(n, 200, 9), c)), indicators.macd(c, n, 200, 9),
                                   ("line", "signal", "hist")):
            assert_close(got, want, f"macd {part}")


def test_rolling_sums_do_not_drift_over_a_long_run(make_random_bars):
    close = make_random_bars(50_000, seed=5).close * 1e3
    assert_close(run(indicators.Sma(24), close)[-100:], indicators.sma(close, 24)[-100:], "sma")
    assert_close(run(indicators.ZScore(24), close)[-100:], indicators.zscore(close, 24)[-100:], "zscore")


@pytest.mark.parametrize("make", [lambda: indicators.Sma(3), lambda: indicators.Ema(3), lambda: indicators.Rsi(3),
                                  lambda: indicators.ZScore(3), lambda: indicators.Roc(3)])
def test_indicators_refuse_non_finite_values_by_name(make):
    indicator = make()
    indicator.update(1.0)
    with pytest.raises(ValueError, match="got inf, every value fed must be finite"):
        indicator.update(float("inf"))


@pytest.mark.parametrize("make, message", [
    (lambda: indicators.Sma(0), "n must be an integer >= 1"),
    (lambda: indicators.Ema(2.0), "n must be an integer >= 1, got float"),
    (lambda: indicators.ZScore(True), "got bool"),
    (lambda: indicators.Macd(26, 12), r"fast \(26\) must be < slow \(12\)"),
    (lambda: indicators.Bollinger(20, 0.0), "k must be a finite number > 0"),
])
def test_bad_indicator_parameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_edge_detectors_fire_once_per_crossing_and_never_after_nan():
    cross = Cross()
    steps = [cross.update(a, 1.0) for a in (0.5, 2.0, 3.0, float("nan"), 0.0, 2.0, 1.0, 0.0)]
    assert steps == [(False, False), (True, False), (False, False), (False, False), (False, False),
                     (True, False), (False, False), (False, True)]  # touching 1.0 is not a cross; leaving it is
    edge = BecomesTrue()
    assert [edge.update(c, d) for c, d in ((True, False), (True, True), (False, True), (True, True))] == \
        [False, False, False, True]


# --- strategies on real data ------------------------------------------------------------------------
def feed_bar_by_bar(name: str, params: dict, data: OHLCV, pair: OHLCV | None) -> tuple[list[int], dict[str, list]]:
    state = IncrementalSignal(name, params)
    signals: list[int] = []
    values: dict[str, list] = {}
    for i in range(len(data)):
        bar = data.slice(i, i + 1)
        at = int(pair.ts.searchsorted(bar.ts[0])) if pair is not None else 0
        signals += state.feed(bar, None if pair is None else pair.slice(at, at + 1))  # its bar, or a later one
        for key, value in state.state.indicators.items():
            values.setdefault(key, []).append(value)
    return signals, values


@pytest.mark.parametrize("name, params", CASES, ids=[f"{n}-{'default' if not p else 'custom'}" for n, p in CASES])
def test_bar_by_bar_equals_the_full_recomputation_on_real_data(real, name, params):
    btc, eth = real
    pair = eth if STRATEGY_PARAMS[name].needs_pair else None
    want = compute_signals(name, btc, params, pair)
    signals, values = feed_bar_by_bar(name, params, btc, pair)
    assert np.count_nonzero(want.signals) > 10  # the comparison covers real trades
    assert np.array_equal(np.array(signals, dtype=np.int8), want.signals)
    assert sorted(values) == sorted(want.indicators)
    for key, series in want.indicators.items():
        assert_close(values[key], series, f"{name}.{key}")


def test_a_pair_bar_missing_holds_and_is_skipped_by_the_zscore(real):
    btc, eth = real
    keep = np.ones(len(eth), dtype=bool)
    keep[[300, 301, 1000]] = False
    holed = OHLCV(*(getattr(eth, c)[keep] for c in ("ts", "open", "high", "low", "close", "volume")))
    want = compute_signals("pairs_spread", btc, {"lookback": 24}, holed)
    state = IncrementalSignal("pairs_spread", {"lookback": 24})
    assert np.array_equal(np.array(state.feed(btc, holed), dtype=np.int8), want.signals)


# --- the cache the engine reads ----------------------------------------------------------------------
class Store:
    """A BarStore per symbol, read as the engine reads it: (symbol, timeframe, newest n)."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.stores: dict[str, BarStore] = {}

    def refill(self, symbol: str, history: OHLCV) -> None:
        self.stores[symbol] = BarStore(self.capacity)
        self.stores[symbol].append(symbol, "1h", history)

    def append(self, symbol: str, bars: OHLCV) -> None:
        self.stores[symbol].append(symbol, "1h", bars)

    def __call__(self, symbol: str, timeframe: str, limit: int | None = None) -> OHLCV:
        return self.stores[symbol].history(symbol, timeframe, limit)


def concat(*parts: OHLCV) -> OHLCV:
    columns = ("ts", "open", "high", "low", "close", "volume")
    return OHLCV(*(np.concatenate([getattr(p, c) for p in parts]) for c in columns))


def push(cache: SignalCache, symbol: str, bars: OHLCV) -> None:
    """Hand a bar to the cache as the engine does when it arrives (``SignalCache.push``)."""
    cache.push(symbol, "1h", int(bars.ts[0]), float(bars.high[0]), float(bars.low[0]), float(bars.close[0]),
               float(bars.volume[0]))


@pytest.mark.parametrize("pushed", [False, True], ids=["pulled", "pushed"])
@pytest.mark.parametrize("name, params", CASES, ids=[f"{n}-{'default' if not p else 'custom'}" for n, p in CASES])
def test_the_cache_follows_the_store_and_rebuilds_after_a_gap_refetch(real, name, params, pushed):
    """Warm from 1,000 bars, then bar by bar; a refetch after a gap rebuilds from the new history.
    Pushed: each bar is also handed to the cache as it arrives, which must change nothing."""
    btc, eth = real
    pair_symbol = "ETH/USDT" if STRATEGY_PARAMS[name].needs_pair else None
    eth = eth.slice(int(eth.ts.searchsorted(btc.ts[0])), None)
    store, cache = Store(), SignalCache()
    warm, gap_at, refetch_from, end = 1000, 1800, 1010, 2400
    store.refill("BTC/USDT", btc.slice(0, warm))
    store.refill("ETH/USDT", eth.slice(0, warm))
    segments = [(0, warm, gap_at), (refetch_from, gap_at + 5, end)]  # history start, first bar fed, last
    for start, fed_from, stop in segments:
        if start:  # the gap: bars gap_at..gap_at+4 never arrived; the refetch brings the last 1000 bars
            store.refill("BTC/USDT", btc.slice(start, fed_from))
            store.refill("ETH/USDT", eth.slice(start, fed_from))
            cache.invalidate("BTC/USDT", "1h")
        pair = eth.slice(start, stop) if pair_symbol else None
        want = compute_signals(name, btc.slice(start, stop), params, pair)
        for i in range(fed_from, stop):
            store.append("BTC/USDT", btc.slice(i, i + 1))
            store.append("ETH/USDT", eth.slice(i, i + 1))
            if pushed:
                push(cache, "BTC/USDT", btc.slice(i, i + 1))
                push(cache, "ETH/USDT", eth.slice(i, i + 1))
            got = cache.latest(name, "BTC/USDT", "1h", params, store, pair_symbol)
            k = i - start
            assert (got.ts_bar, got.price, got.signal) == (int(btc.ts[i]), float(btc.close[i]), int(want.signals[k]))
            assert got.enough_history
            defined = {key: float(s[k]) for key, s in want.indicators.items() if math.isfinite(s[k])}
            assert sorted(got.indicators) == sorted(defined)
            for key, value in defined.items():
                assert abs(got.indicators[key] - value) <= TOL * max(abs(value), 1.0), (i, key)
    assert len(cache.states) == 1


def test_a_pushed_bar_feeds_only_the_states_standing_just_before_it(real):
    btc, eth = real
    store, cache = Store(), SignalCache()
    store.refill("BTC/USDT", btc.slice(0, 300))
    store.refill("ETH/USDT", eth.slice(0, 300))
    cache.latest("rsi", "BTC/USDT", "1h", {}, store)
    cache.latest("pairs_spread", "BTC/USDT", "1h", {}, store, "ETH/USDT")
    rsi, pairs = cache.states.values()
    store.append("BTC/USDT", btc.slice(300, 301))
    push(cache, "BTC/USDT", btc.slice(300, 301))
    push(cache, "ETH/USDT", btc.slice(300, 301))  # another series: nothing to feed
    assert (rsi.bars_seen, rsi.last_ts) == (301, int(btc.ts[300]))
    assert pairs.bars_seen == 300  # a pair needs both legs: it catches up from the store when asked
    push(cache, "BTC/USDT", btc.slice(302, 303))  # bar 301 never came: not this state's next bar
    assert rsi.bars_seen == 301
    got = cache.latest("rsi", "BTC/USDT", "1h", {}, store)  # the store says 300 is the newest: as pulled
    assert (got.ts_bar, got.signal) == (int(btc.ts[300]), int(compute_signals("rsi", btc.slice(0, 301)).signals[-1]))


def test_a_pushed_bar_a_state_refuses_drops_that_state_until_it_is_rebuilt(real):
    btc, _ = real
    store, cache = Store(), SignalCache()
    store.refill("BTC/USDT", btc.slice(0, 300))
    cache.latest("ema_crossover", "BTC/USDT", "1h", {}, store)
    cache.push("BTC/USDT", "1h", int(btc.ts[300]), 1.0, 1.0, math.inf, 1.0)  # never the store's: no exception
    assert cache.states == {}
    store.append("BTC/USDT", btc.slice(300, 301))
    got = cache.latest("ema_crossover", "BTC/USDT", "1h", {}, store)  # rebuilt from the store's bars
    want = compute_signals("ema_crossover", btc.slice(0, 301))
    assert got.indicators["ema_slow"] == pytest.approx(float(want.indicators["ema_slow"][-1]), rel=TOL)


def test_a_refetch_is_noticed_even_without_invalidate(real):
    btc, _ = real
    store, cache = Store(), SignalCache()
    store.refill("BTC/USDT", btc.slice(0, 500))
    cache.latest("macd", "BTC/USDT", "1h", {}, store)
    store.refill("BTC/USDT", btc.slice(200, 520))  # a store that no longer continues what was fed
    got = cache.latest("macd", "BTC/USDT", "1h", {}, store)
    want = compute_signals("macd", btc.slice(200, 520))
    assert got.indicators["macd"] == pytest.approx(float(want.indicators["macd"][-1]), rel=TOL)


def test_strategies_with_the_same_inputs_share_one_computation(real):
    btc, _ = real
    store, cache = Store(), SignalCache()
    store.refill("BTC/USDT", btc.slice(0, 300))
    a = cache.latest("rsi", "BTC/USDT", "1h", {}, store)
    b = cache.latest("rsi", "BTC/USDT", "1h", {"period": 14, "oversold": 30}, store)  # the defaults, spelt out
    assert a == b and len(cache.states) == 1
    cache.latest("rsi", "BTC/USDT", "1h", {"period": 10}, store)
    cache.latest("rsi", "BTC/USDT", "4h", {}, lambda s, tf, n=None: btc.slice(0, 300))
    assert len(cache.states) == 3
    state = next(iter(cache.states.values()))
    store.append("BTC/USDT", btc.slice(300, 302))
    cache.latest("rsi", "BTC/USDT", "1h", {}, store)
    cache.latest("rsi", "BTC/USDT", "1h", {"period": 14}, store)
    assert state.bars_seen == 302  # fed the two new bars once


def test_warming_up_and_a_strategy_added_mid_run(real):
    btc, _ = real
    store, cache = Store(), SignalCache()
    store.refill("BTC/USDT", btc.slice(0, 30))
    early = cache.latest("macd", "BTC/USDT", "1h", {}, store)
    assert not early.enough_history and early.signal == 0 and sorted(early.indicators) == ["macd"]
    for i in range(30, 700):
        store.append("BTC/USDT", btc.slice(i, i + 1))
    late = cache.latest("ema_crossover", "BTC/USDT", "1h", {}, store)  # first asked now: built from the store
    want = compute_signals("ema_crossover", btc.slice(0, 700))
    assert late.enough_history and late.signal == want.signals[-1]
    assert late.indicators["ema_slow"] == pytest.approx(float(want.indicators["ema_slow"][-1]), rel=TOL)


def test_bad_input_is_refused_and_leaves_no_half_fed_state(real):
    btc, _ = real
    store, cache = Store(), SignalCache()
    store.refill("BTC/USDT", btc.slice(0, 100))
    with pytest.raises(ValueError, match="unknown parameter"):
        cache.latest("rsi", "BTC/USDT", "1h", {"length": 3}, store)
    with pytest.raises(ValueError, match="expected an integer"):
        cache.latest("rsi", "BTC/USDT", "1h", {"period": [3]}, store)
    with pytest.raises(ValueError, match="unknown strategy"):
        cache.latest("nope", "BTC/USDT", "1h", {}, store)
    with pytest.raises(ValueError, match="needs a pair"):
        IncrementalSignal("pairs_spread").feed(btc)
    with pytest.raises(ValueError, match="takes no pair"):
        IncrementalSignal("rsi").feed(btc, btc)
    with pytest.raises(ValueError, match="no bars"):
        IncrementalSignal("rsi").latest()
    state = IncrementalSignal("rsi")
    state.feed(btc.slice(0, 10))
    with pytest.raises(ValueError, match="is not after the last bar fed"):
        state.feed(btc.slice(5, 12))
    bad = btc.slice(100, 101)
    bad = OHLCV(bad.ts, bad.open, bad.high, bad.low, np.array([np.nan]), bad.volume)
    cache.latest("rsi", "BTC/USDT", "1h", {}, lambda s, tf, n=None: btc.slice(0, 100))
    with pytest.raises(ValueError, match="rsi: got nan, every value fed must be finite"):
        cache.latest("rsi", "BTC/USDT", "1h", {}, lambda s, tf, n=None: concat(btc.slice(0, 100), bad).tail(n or 101))
    with pytest.raises(ValueError, match=r"data\[0\] \(ts=\d+\): close is not a finite number"):
        IncrementalSignal("rsi").feed(bad)
    assert cache.states == {}


# --- the engine's decision -------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STRATEGY_PARAMS))
def test_evaluate_spot_with_the_cache_decides_as_the_full_recompute(real, name):
    """Today's path recomputes the store's last 1,000 bars; the cache carries its state on.
    At the default parameters the two publish the same signal and values (to 1e-9)."""
    btc, eth = real
    pair_symbol = "ETH/USDT" if STRATEGY_PARAMS[name].needs_pair else None
    eth = eth.slice(int(eth.ts.searchsorted(btc.ts[0])), None)
    store, cache = Store(), SignalCache()
    store.refill("BTC/USDT", btc.slice(0, 1000))
    store.refill("ETH/USDT", eth.slice(0, 1000))
    for i in range(1000, 1150):
        store.append("BTC/USDT", btc.slice(i, i + 1))
        store.append("ETH/USDT", eth.slice(i, i + 1))
        now = int(btc.ts[i]) + HOUR
        old = evaluate_spot("s1", name, "BTC/USDT", "1h", {}, store, now, pair_symbol)
        new = evaluate_spot("s1", name, "BTC/USDT", "1h", {}, store, now, pair_symbol, cache)
        assert (new.order, new.skipped) == (old.order, old.skipped)
        assert (new.signal.signal, new.signal.price, new.signal.ts_bar) == (old.signal.signal, old.signal.price,
                                                                             old.signal.ts_bar)
        assert sorted(new.signal.indicators) == sorted(old.signal.indicators)
        for key, value in old.signal.indicators.items():
            assert new.signal.indicators[key] == pytest.approx(value, rel=TOL, abs=TOL)


def test_evaluate_spot_with_the_cache_skips_stale_missing_and_warming_data(real):
    btc, _ = real
    store, cache = Store(), SignalCache()
    store.refill("BTC/USDT", btc.slice(0, 20))
    now = int(btc.ts[19]) + HOUR
    warming = evaluate_spot("s1", "macd", "BTC/USDT", "1h", {}, store, now, signals=cache)
    assert warming.skipped == "warming up: 20 bars" and warming.signal is None
    stale = evaluate_spot("s1", "macd", "BTC/USDT", "1h", {}, store, now + HOUR, signals=cache)
    assert stale.skipped.startswith("stale BTC/USDT data") and stale.order is None
    store.refill("ETH/USDT", OHLCV.empty())
    missing = evaluate_spot("s2", "pairs_spread", "BTC/USDT", "1h", {}, store, now, "ETH/USDT", cache)
    assert missing.skipped == "no ETH/USDT bars yet"
