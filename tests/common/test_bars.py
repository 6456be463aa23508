from __future__ import annotations

import math

import numpy as np
import pytest

from common.bars import (
    VECTOR_MIN_ROWS,
    Bar,
    BarAggregator,
    BarStore,
    bars_from_ohlcv,
    find_bar_problems,
    sanitize_bars,
)
from common.csv_bars import load_ohlcv_csv
from common.model import RecordError
from common.ohlcv import OHLCV, BadBarError

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


def minute_rows(start: int, n: int, seed: int = 0) -> OHLCV:
    """Continuous random minute bars (open = previous close) starting at ``start``."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.001, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.001, n))
    volume = rng.uniform(0.5, 2.0, n)
    return OHLCV(start + np.arange(n, dtype=np.int64) * MIN, open_, high, low, close, volume)


def rows(*r: list[float]) -> OHLCV:
    return OHLCV.from_rows(r)


# --- Bar record -----------------------------------------------------------------------------

GOOD = {"symbol": "BTC/USDT", "timeframe": "1h", "ts_open": T0, "open": 10.0, "high": 12.0,
        "low": 9.0, "close": 11.0, "volume": 5.0}


def test_bar_round_trips_through_dict_and_knows_its_close():
    bar = Bar.from_dict(GOOD)
    assert bar.to_dict() == GOOD
    assert bar.ts_close == T0 + HOUR
    assert Bar.from_dict({**GOOD, "volume": 5}).volume == 5.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"symbol": ""}, "bar.symbol: must not be empty"),
        ({"timeframe": "2h"}, "bar.timeframe: unknown timeframe '2h'"),
        ({"ts_open": T0 + 1}, "bar.ts_open: 1735689600001 is not the start of a 1h bar"),
        ({"ts_open": "x"}, "bar.ts_open: expected an integer"),
        ({"open": 0.0}, "bar.open: must be > 0"),
        ({"close": math.nan}, "bar.close: must be a finite number"),
        ({"volume": -1.0}, "bar.volume: must be >= 0"),
        ({"high": 10.5}, "bar.high/low: do not contain open/close"),
        ({"low": 10.5}, "bar.high/low: do not contain open/close"),
        ({"open": True}, "bar.open: expected a number"),
    ],
)
def test_bar_from_dict_names_the_bad_field(change, message):
    with pytest.raises(RecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Bar.from_dict({**GOOD, **change})


def test_bar_from_dict_names_a_missing_field():
    d = dict(GOOD)
    del d["high"]
    with pytest.raises(RecordError, match=r"bar\.high: missing"):
        Bar.from_dict(d)


def test_bars_from_ohlcv_gives_plain_python_values():
    [bar] = bars_from_ohlcv("ETH/USDT", "1d", rows([T0, 1, 2, 0.5, 1.5, 3]))
    assert bar == Bar("ETH/USDT", "1d", T0, 1.0, 2.0, 0.5, 1.5, 3.0)
    assert type(bar.ts_open) is int and type(bar.close) is float


# --- aggregation ----------------------------------------------------------------------------

def test_hour_bar_is_the_aggregate_of_its_minutes_hand_checked():
    agg = BarAggregator("X", ["1h"], MIN)
    minutes = rows(
        *[[T0 + i * MIN, 100, 101, 99, 100, 1.0] for i in range(60)]
    )
    # make the hour interesting: first open 95, a spike high at minute 17, a dip at 42, last close 104
    minutes.open[0] = 95.0
    minutes.low[0] = 94.0
    minutes.high[17] = 130.0
    minutes.low[42] = 80.0
    minutes.close[59] = 104.0
    minutes.high[59] = 105.0
    minutes.volume[5] = 10.0
    closed = agg.add(minutes)["1h"]
    assert closed.rows() == [[T0, 95.0, 130.0, 80.0, 104.0, 69.0]]


def test_bar_closes_exactly_when_its_last_minute_arrives():
    agg = BarAggregator("X", ["1h"], MIN)
    m = minute_rows(T0, 61)
    assert len(agg.add(m.slice(0, 59))["1h"]) == 0
    assert agg.close_until(T0 + HOUR - 1)["1h"].rows() == []
    out = agg.add(m.slice(59, 60))["1h"]  # minute 59 covers [59 min, 60 min): the hour is complete
    assert out.ts.tolist() == [T0]
    assert out.close[0] == m.close[59] and out.open[0] == m.open[0]
    assert len(agg.add(m.slice(60, 61))["1h"]) == 0


def test_close_until_closes_a_bar_at_its_close_time_not_before():
    agg = BarAggregator("X", ["1h"], MIN)
    agg.add(minute_rows(T0, 30))
    assert len(agg.close_until(T0 + HOUR - 1)["1h"]) == 0
    closed = agg.close_until(T0 + HOUR)["1h"]
    assert closed.ts.tolist() == [T0]
    assert len(agg.close_until(T0 + 2 * HOUR)["1h"]) == 0  # nothing left open


def test_ticks_close_a_bar_when_a_tick_at_or_after_its_close_arrives():
    agg = BarAggregator("X", ["1h"], 0)
    assert len(agg.add_tick(T0 + 5, 10.0, 1.0)["1h"]) == 0
    assert len(agg.add_tick(T0 + 100, 12.0, 2.0)["1h"]) == 0
    assert len(agg.add_tick(T0 + 100, 9.0, 0.5)["1h"]) == 0  # same ms is allowed for ticks
    assert len(agg.add_tick(T0 + HOUR - 1, 11.0, 1.0)["1h"]) == 0
    closed = agg.add_tick(T0 + HOUR, 50.0, 7.0)["1h"]
    assert closed.rows() == [[T0, 10.0, 12.0, 9.0, 11.0, 4.5]]


def test_chunked_feeding_gives_bit_identical_bars():
    m = minute_rows(T0 + 17 * MIN, 3 * 1440 + 123, seed=4)  # starts mid-hour, ends mid-day
    one = BarAggregator("X", ["1m", "5m", "1h", "1d"], MIN)
    whole = one.add(m)
    many = BarAggregator("X", ["1m", "5m", "1h", "1d"], MIN)
    cuts = [0, 1, 7, 60, 61, 500, 1439, 1440, 3000, len(m)]
    parts: dict[str, list[list[float]]] = {tf: [] for tf in many.timeframes}
    for a, b in zip(cuts, cuts[1:]):
        for tf, closed in many.add(m.slice(a, b)).items():
            parts[tf] += closed.rows()
    for tf in many.timeframes:
        assert parts[tf] == whole[tf].rows(), tf


def reduced_bars(base: OHLCV, timeframe_ms: int) -> list[list[float]]:
    """Every bar of ``base`` as one array reduction per group (the aggregator's reference: it
    reduced raw rows this way before it kept open bars as numbers)."""
    bucket = base.ts - base.ts % timeframe_ms
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    last = np.r_[starts[1:], len(base)] - 1
    return OHLCV(bucket[starts], base.open[starts], np.maximum.reduceat(base.high, starts),
                 np.minimum.reduceat(base.low, starts), base.close[last],
                 np.add.reduceat(base.volume, starts)).rows()


def chunk_sizes(n: int, low: int, high: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(min(int(rng.integers(low, high)), n - sum(sizes)))
    return sizes


def fed_in_chunks(agg: BarAggregator, base: OHLCV, sizes: list[int], seed: int) -> dict[str, list[list[float]]]:
    """Closed bars from ``base`` fed in chunks of ``sizes``, each followed (as the feeds do) by a
    close_until at a random time between its last row's end and the next row."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[list[float]]] = {tf: [] for tf in agg.timeframes}
    lo = 0
    for size in sizes:
        chunk = base.slice(lo, lo + size)
        lo += size
        end = int(chunk.ts[-1]) + agg.base_ms
        until = int(rng.integers(end, int(base.ts[lo]) + 1)) if lo < len(base) else end + DAY
        for closed in (agg.add(chunk), agg.close_until(until)):
            for tf, bars in closed.items():
                out[tf] += bars.rows()
    return out


@pytest.mark.parametrize("symbol", ["BTC_USDT", "SOL_USDT"])
@pytest.mark.parametrize("low, high", [(1, VECTOR_MIN_ROWS), (VECTOR_MIN_ROWS, 5 * VECTOR_MIN_ROWS),
                                        (1, 3 * VECTOR_MIN_ROWS)])
def test_real_hours_in_random_chunks_give_exactly_the_array_reduction(shared_data, symbol, low, high):
    """Both sides of VECTOR_MIN_ROWS (row by row, arrays, and a mix) over real hours with gaps."""
    hours = load_ohlcv_csv(shared_data / "ohlcv" / "binanceus" / f"{symbol}-1h.csv")
    assert np.any(np.diff(hours.ts) > HOUR)  # the recording has gaps: bars over them must hold what exists
    agg = BarAggregator(symbol, ["1h", "4h", "1d"], HOUR)
    got = fed_in_chunks(agg, hours, chunk_sizes(len(hours), low, high, seed=len(hours)), seed=1)
    for tf, ms in (("1h", HOUR), ("4h", 4 * HOUR), ("1d", DAY)):
        assert got[tf] == reduced_bars(hours, ms), tf


@pytest.mark.parametrize("low, high", [(1, VECTOR_MIN_ROWS), (VECTOR_MIN_ROWS, 6 * VECTOR_MIN_ROWS),
                                        (1, 3 * VECTOR_MIN_ROWS)])
def test_minutes_in_random_chunks_sum_a_days_volume_as_the_array_reduction(low, high):
    """1440 minutes a day: numpy's pairwise sum (not a left-to-right one) is what a bar holds."""
    m = minute_rows(T0 + 17 * MIN, 3 * 1440 + 123, seed=5)
    m = OHLCV(m.ts, m.open, m.high, m.low, m.close, np.random.default_rng(6).lognormal(0.0, 2.0, len(m)))
    agg = BarAggregator("X", ["5m", "1h", "1d"], MIN)
    got = fed_in_chunks(agg, m, chunk_sizes(len(m), low, high, seed=7), seed=8)
    for tf, ms in (("5m", 5 * MIN), ("1h", HOUR), ("1d", DAY)):
        assert got[tf] == reduced_bars(m, ms), tf


def test_ticks_one_by_one_in_chunks_and_at_once_give_the_same_bars():
    rng = np.random.default_rng(9)
    ts = T0 + np.cumsum(rng.integers(0, 40_000, 3000))  # repeated ms included
    price = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, len(ts))))
    ticks = OHLCV(ts, price, price, price, price, rng.lognormal(0.0, 1.5, len(ts)))
    one_by_one = BarAggregator("X", ["1m", "1h"], 0)
    got: dict[str, list[list[float]]] = {"1m": [], "1h": []}
    for t, p, v in zip(ticks.ts.tolist(), ticks.close.tolist(), ticks.volume.tolist()):
        for tf, closed in one_by_one.add_tick(t, p, v).items():
            got[tf] += closed.rows()
    for tf, closed in one_by_one.close_until(int(ts[-1]) + DAY).items():
        got[tf] += closed.rows()
    chunked = fed_in_chunks(BarAggregator("X", ["1m", "1h"], 0), ticks,
                            chunk_sizes(len(ticks), 1, 3 * VECTOR_MIN_ROWS, seed=10), seed=11)
    for tf, ms in (("1m", MIN), ("1h", HOUR)):
        assert got[tf] == chunked[tf] == reduced_bars(ticks, ms), tf


def test_day_bars_sit_on_midnight_utc_and_sum_volume():
    m = minute_rows(T0 + 13 * HOUR + 7 * MIN, 2 * 1440, seed=2)
    agg = BarAggregator("X", ["1h", "1d"], MIN)
    out = agg.add(m)
    out_late = agg.close_until(T0 + 3 * DAY)
    days = np.r_[out["1d"].ts, out_late["1d"].ts]
    assert days.tolist() == [T0, T0 + DAY, T0 + 2 * DAY]
    assert np.all(out["1h"].ts % HOUR == 0)
    day1 = (m.ts >= T0 + DAY) & (m.ts < T0 + 2 * DAY)
    assert out["1d"].volume[1] == pytest.approx(m.volume[day1].sum(), rel=1e-12)
    hours_of_day1 = (out["1h"].ts >= T0 + DAY) & (out["1h"].ts < T0 + 2 * DAY)
    assert hours_of_day1.sum() == 24
    assert out["1d"].volume[1] == pytest.approx(out["1h"].volume[hours_of_day1].sum(), rel=1e-12)
    assert out["1d"].high[1] == m.high[day1].max() and out["1d"].low[1] == m.low[day1].min()
    assert out["1d"].open[1] == m.open[day1][0] and out["1d"].close[1] == m.close[day1][-1]


def test_gap_in_hour_bars_invents_no_bar_and_the_day_holds_the_hours_present():
    hours = [h for h in range(24) if h not in (5, 6, 7)] + [24]
    base = rows(*[[T0 + h * HOUR, 10 + h, 11 + h, 9 + h, 10.5 + h, 1.0] for h in hours])
    agg = BarAggregator("X", ["1h", "1d"], HOUR)
    out = agg.add(base)
    assert out["1h"].ts.tolist() == [T0 + h * HOUR for h in hours]
    assert out["1d"].rows() == [[T0, 10.0, 34.0, 9.0, 33.5, 21.0]]


def test_day_bar_over_a_gap_at_day_end_closes_when_time_passes():
    base = rows([T0 + 20 * HOUR, 10, 11, 9, 10, 1.0])
    agg = BarAggregator("X", ["1d"], HOUR)
    assert len(agg.add(base)["1d"]) == 0
    assert agg.close_until(T0 + DAY)["1d"].rows() == [[T0, 10.0, 11.0, 9.0, 10.0, 1.0]]


@pytest.mark.parametrize("n", [10, VECTOR_MIN_ROWS + 10])  # row by row and as arrays
def test_aggregator_rejects_rows_out_of_order_or_in_a_closed_bar(n):
    agg = BarAggregator("BTC/USDT", ["1h"], MIN)
    m = minute_rows(T0, n)
    agg.add(m.slice(0, 5))
    with pytest.raises(BadBarError, match=r"BTC/USDT: row ts=1735689780000 is out of order"):
        agg.add(m.slice(3, n))
    swapped = np.r_[6, 0, 7:n]
    with pytest.raises(BadBarError, match=r"row 1 \(ts=1735689600000\) is less than 60000 ms after"):
        agg.add(OHLCV(m.ts[swapped], *(getattr(m, c)[swapped] for c in ("open", "high", "low", "close", "volume"))))
    assert agg.close_until(T0 + HOUR)["1h"].rows() == reduced_bars(m.slice(0, 5), HOUR)  # rejected rows left no trace
    with pytest.raises(BadBarError, match=r"BTC/USDT: row ts=1735691400000 falls in a bar already closed"):
        agg.add(OHLCV(m.ts + 30 * MIN, m.open, m.high, m.low, m.close, m.volume))
    agg.close_until(T0 + HOUR)
    late = BarAggregator("X", ["1h"], 0)
    late.add_tick(T0, 1.0, 1.0)
    late.close_until(T0 + 2 * HOUR)
    with pytest.raises(BadBarError, match="falls in a bar already closed"):
        late.add_tick(T0 + HOUR - 5, 1.0, 1.0)


@pytest.mark.parametrize(
    "timeframes, base, message",
    [
        (["15m"], HOUR, "timeframe 15m is not a whole multiple of the base step"),
        (["3h"], HOUR, "unknown timeframe '3h'"),
        ([], MIN, "at least one timeframe"),
        (["1h"], -1, "base_ms must be an int >= 0"),
    ],
)
def test_aggregator_rejects_bad_setup(timeframes, base, message):
    with pytest.raises(ValueError, match=message):
        BarAggregator("X", timeframes, base)


# --- store ----------------------------------------------------------------------------------

def test_store_keeps_only_the_last_n_bars_one_at_a_time_and_in_batches():
    m = minute_rows(T0, 23)
    one = BarStore(capacity=5)
    for i in range(len(m)):
        one.append("X", "1m", m.slice(i, i + 1))
    batch = BarStore(capacity=5)
    batch.append("X", "1m", m.slice(0, 2))
    batch.append("X", "1m", m.slice(2, 20))
    batch.append("X", "1m", m.slice(20, 23))
    live = BarStore(capacity=5)  # one Bar at a time, as the engine stores each bar it is sent
    for bar in bars_from_ohlcv("X", "1m", m):
        live.append_bar(bar)
    with pytest.raises(BadBarError, match=rf"X 1m: bar ts={int(m.ts[-1])} is not after the last stored bar"):
        live.append_bar(bars_from_ohlcv("X", "1m", m)[-1])
    for store in (one, batch, live):
        assert store.count("X", "1m") == 5
        h = store.history("X", "1m")
        assert h.rows() == m.slice(18, 23).rows()
        assert store.history("X", "1m", limit=2).rows() == m.slice(21, 23).rows()
        assert store.history("X", "1m", limit=100).rows() == m.slice(18, 23).rows()


@pytest.mark.parametrize("capacity", [1, 7, 50])
def test_store_in_random_batches_wrapping_inside_a_batch_keeps_the_last_n(capacity):
    m = minute_rows(T0, 400, seed=3)
    store = BarStore(capacity=capacity)
    lo = 0
    for size in chunk_sizes(len(m), 1, 2 * capacity + 3, seed=capacity):
        store.append("X", "1m", m.slice(lo, lo + size))
        lo += size
        assert store.history("X", "1m").rows() == m.slice(max(lo - capacity, 0), lo).rows()
    assert store.count("X", "1m") == capacity


def test_store_history_of_an_unseen_series_is_empty_and_bad_input_is_named():
    store = BarStore()
    assert store.capacity == 5000
    assert len(store.history("X", "1h")) == 0
    m = minute_rows(T0, 3)
    store.append("X", "1m", m)
    with pytest.raises(BadBarError, match=r"X 1m: bar ts=1735689600000 is not after the last stored bar"):
        store.append("X", "1m", m.slice(0, 1))
    with pytest.raises(ValueError, match="limit must be an int >= 1"):
        store.history("X", "1m", limit=0)
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        BarStore(capacity=0)


def test_history_is_a_copy_the_store_can_keep_writing_after():
    store = BarStore(capacity=3)
    m = minute_rows(T0, 6)
    store.append("X", "1m", m.slice(0, 3))
    before = store.history("X", "1m").rows()
    store.append("X", "1m", m.slice(3, 6))
    assert before == m.slice(0, 3).rows()


# --- sanitize -------------------------------------------------------------------------------

def test_sanitize_drops_each_kind_of_bad_bar_with_a_reason():
    bars = rows(
        [T0 + 0 * HOUR, 10, 11, 9, 10, 1],  # ok
        [T0 + 1 * HOUR, math.nan, 11, 9, 10, 1],  # NaN
        [T0 + 2 * HOUR, 10, 11, 9, -10, 1],  # non-positive
        [T0 + 3 * HOUR, 10, 8, 9, 10, 1],  # high < low
        [T0 + 4 * HOUR, 10, 11, 9, 10, 1],  # ok
        [T0 + 4 * HOUR, 10, 11, 9, 10, 2],  # duplicate
        [T0 + 2 * HOUR, 10, 11, 9, 10, 1],  # out of order
        [T0 + 5 * HOUR, 10, 11, 9, 10, -1],  # negative volume
        [T0 + 6 * HOUR, 10, 10.5, 9, 11, 1],  # high below close
        [T0 + 7 * HOUR, 10, 11, 9, 10, 1],  # ok
    )
    clean, problems = sanitize_bars(bars)
    assert clean.ts.tolist() == [T0, T0 + 4 * HOUR, T0 + 7 * HOUR]
    clean.validate()
    assert problems == [
        "bar 1 (ts=1735693200000): dropped, open is not a finite number (nan)",
        "bar 2 (ts=1735696800000): dropped, close must be > 0, got -10.0",
        "bar 3 (ts=1735700400000): dropped, high 8.0 < low 9.0",
        "bar 5 (ts=1735704000000): dropped, duplicate ts 1735704000000 (an earlier bar has the same time)",
        "bar 6 (ts=1735696800000): dropped, out of order: ts 1735696800000 is before an earlier bar's ts 1735704000000",
        "bar 7 (ts=1735707600000): dropped, volume must be >= 0, got -1.0",
        "bar 8 (ts=1735711200000): dropped, high/low do not contain open/close (o=10.0, h=10.5, l=9.0, c=11.0)",
    ]


def test_sanitize_keeps_sound_bars_untouched_and_handles_empty():
    m = minute_rows(T0, 10)
    clean, problems = sanitize_bars(m)
    assert clean is m and problems == []
    assert find_bar_problems(OHLCV.empty()) == []
