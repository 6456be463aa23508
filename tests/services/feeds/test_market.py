from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.bars import Bar
from common.csv_bars import load_ohlcv_csv, write_ohlcv_csv
from common.market_sim import MarketSim
from common.ohlcv import OHLCV
from services.feeds.exchange_client import LiveFeed
from services.feeds.feed import FeedUpdate, MarketFeed
from services.feeds.market import ReplayFeed, SimFeed, build_feed
from tests.conftest import require_shared

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
ORIGIN = 1_735_689_600_000  # 2025-01-01 00:00 UTC
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
START = ORIGIN + 10 * DAY  # day-aligned


def sim_feed(timeframes=("1h", "1d"), history_days=10, origin_ts=ORIGIN, seed=5) -> SimFeed:
    return SimFeed(SYMBOLS, timeframes, seed=seed, history_days=history_days, origin_ts=origin_ts)


def run(feed: MarketFeed, stops) -> list[FeedUpdate]:
    return [feed.advance_to(ts) for ts in stops]


def all_bars(updates) -> list[Bar]:
    return [b for u in updates for b in u.bars]


# --- sim ------------------------------------------------------------------------------------

def test_sim_start_builds_warm_up_history_on_utc_boundaries():
    feed = sim_feed(timeframes=("15m", "1h", "4h", "1d"))
    assert feed.start(START + 5 * HOUR + 17 * MIN + 123) == START + 5 * HOUR + 17 * MIN + 123
    assert len(feed.history("BTC/USDT", "1d")) == 10
    assert len(feed.history("BTC/USDT", "1h")) == 10 * 24 + 5
    assert len(feed.history("ETH/USDT", "4h")) == 10 * 6 + 1
    assert len(feed.history("SOL/USDT", "15m")) == 10 * 96 + 21
    d = feed.history("BTC/USDT", "1d")
    assert d.ts.tolist() == [ORIGIN + i * DAY for i in range(10)]
    assert np.all(feed.history("BTC/USDT", "1h").ts % HOUR == 0)
    assert feed.history("BTC/USDT", "1h", limit=3).ts.tolist() == [START + h * HOUR for h in (2, 3, 4)]
    price, ts = feed.prices()["BTC/USDT"]
    assert ts == START + 5 * HOUR + 17 * MIN
    last_minute = MarketSim(SYMBOLS, seed=5, origin_ts=ORIGIN).steps(ts - MIN, ts)["BTC/USDT"]
    assert price == last_minute.close[0]
    assert feed.now_ts == START + 5 * HOUR + 17 * MIN + 123 and feed.finished is False


def test_120_history_days_give_2880_hour_bars_and_120_day_bars():
    feed = SimFeed(SYMBOLS, ("1h", "1d"), seed=1, history_days=120)
    feed.start(START)
    assert feed.origin_ts == START - 120 * DAY
    assert len(feed.history("BTC/USDT", "1h")) == 2880
    assert len(feed.history("SOL/USDT", "1d")) == 120
    assert feed.history("BTC/USDT", "1d").ts[-1] == START - DAY


def test_sim_hour_bar_is_the_aggregate_of_its_minute_steps():
    feed = sim_feed()
    feed.start(START)
    update = feed.advance_to(START + HOUR)
    [btc] = [b for b in update.bars if b.symbol == "BTC/USDT"]
    minutes = MarketSim(SYMBOLS, seed=5, origin_ts=ORIGIN).steps(START, START + HOUR)["BTC/USDT"]
    assert len(minutes) == 60
    assert btc == Bar(
        "BTC/USDT", "1h", START,
        open=float(minutes.open[0]), high=float(minutes.high.max()), low=float(minutes.low.min()),
        close=float(minutes.close[-1]), volume=pytest.approx(float(minutes.volume.sum()), rel=1e-12),
    )
    assert btc.low <= min(btc.open, btc.close) and btc.high >= max(btc.open, btc.close)
    assert update.ticks["BTC/USDT"] == (btc.close, START + HOUR)


def test_sim_day_bar_sums_its_hours_and_bars_come_in_time_order():
    feed = sim_feed()
    feed.start(START)
    bars = all_bars(run(feed, [START + k * 7 * MIN for k in range(1, 260)]))  # ~30 hours
    closes = [b.ts_close for b in bars]
    assert closes == sorted(closes)
    days = [b for b in bars if b.symbol == "ETH/USDT" and b.timeframe == "1d"]
    assert [d.ts_open for d in days] == [START]
    hours = [b for b in bars if b.symbol == "ETH/USDT" and b.timeframe == "1h" and b.ts_open < START + DAY]
    assert len(hours) == 24
    day = days[0]
    assert day.volume == pytest.approx(sum(h.volume for h in hours), rel=1e-12)
    assert (day.open, day.close) == (hours[0].open, hours[-1].close)
    assert day.high == max(h.high for h in hours) and day.low == min(h.low for h in hours)
    # within one timestamp, the hour bar comes before the day bar
    at_midnight = [(b.timeframe, b.symbol) for b in bars if b.ts_close == START + DAY]
    assert at_midnight[:3] == [("1h", s) for s in SYMBOLS] and at_midnight[3:] == [("1d", s) for s in SYMBOLS]


def test_sim_chunked_advance_equals_one_shot_advance():
    one = sim_feed(timeframes=("5m", "1h", "1d"))
    one.start(START + 90_000)
    whole = one.advance_to(START + 2 * DAY + 5 * MIN)
    many = sim_feed(timeframes=("5m", "1h", "1d"))
    many.start(START + 90_000)
    rng = np.random.default_rng(0)
    stops = np.cumsum(rng.integers(1, 40 * MIN, 400)) + START + 90_000
    updates = run(many, [int(t) for t in stops[stops < START + 2 * DAY + 5 * MIN]] + [START + 2 * DAY + 5 * MIN])
    assert all_bars(updates) == whole.bars
    assert many.prices() == one.prices() == whole.ticks
    for tf in ("5m", "1h", "1d"):
        assert many.history("SOL/USDT", tf).rows() == one.history("SOL/USDT", tf).rows()


def test_sim_restart_resumes_the_same_history_and_path():
    first = sim_feed()
    first.start(START)
    stops = [START + k * 13 * MIN for k in range(1, 400)]
    half = stops[200]
    before = all_bars(run(first, [t for t in stops if t <= half]))
    after = all_bars(run(first, [t for t in stops if t > half]))
    assert before and after

    restarted = sim_feed()  # a new process: same seed and origin
    restarted.start(half)
    for s in SYMBOLS:
        for tf in ("1h", "1d"):
            expected = [b for b in before if b.symbol == s and b.timeframe == tf]
            got = restarted.history(s, tf, limit=len(expected))
            assert got.rows() == [[b.ts_open, b.open, b.high, b.low, b.close, b.volume] for b in expected]
    assert all_bars(run(restarted, [t for t in stops if t > half])) == after
    assert restarted.prices() == first.prices()


def test_sim_never_goes_backwards():
    feed = sim_feed()
    feed.start(START)
    assert feed.advance_to(START + 2 * HOUR).bars
    assert feed.advance_to(START + 2 * HOUR) == FeedUpdate()
    assert feed.advance_to(START + HOUR) == FeedUpdate()
    assert feed.now_ts == START + 2 * HOUR
    tiny = feed.advance_to(START + 2 * HOUR + 1000)  # inside a minute: nothing new closed
    assert tiny.ticks == {} and tiny.bars == []


def test_sim_feed_errors_are_named():
    feed = sim_feed()
    with pytest.raises(RuntimeError, match="call start"):
        feed.advance_to(START)
    feed.start(START)
    with pytest.raises(ValueError, match="unknown symbol 'DOGE/USDT'; this feed has BTC/USDT, ETH/USDT, SOL/USDT"):
        feed.history("DOGE/USDT", "1h")
    with pytest.raises(ValueError, match="unknown timeframe '4h'; this feed has 1h, 1d"):
        feed.history("BTC/USDT", "4h")
    with pytest.raises(ValueError, match="limit must be an int >= 1"):
        feed.history("BTC/USDT", "1h", limit=-5)
    with pytest.raises(RuntimeError, match="already started"):
        feed.start(START)
    with pytest.raises(ValueError, match="before origin_ts"):
        sim_feed().start(ORIGIN + DAY)
    with pytest.raises(ValueError, match="needs a start market time"):
        SimFeed(SYMBOLS, ["1h"], seed=1).start()
    with pytest.raises(ValueError, match="market_ts must be an int ms timestamp"):
        SimFeed(SYMBOLS, ["1h"], seed=1).start(1.5e12)
    with pytest.raises(ValueError, match="timeframes must be a non-empty list without repeats"):
        SimFeed(SYMBOLS, ["1h", "1h"], seed=1)


def test_sim_start_without_a_time_starts_after_the_history_from_origin():
    feed = sim_feed()
    assert feed.start() == ORIGIN + 10 * DAY


# --- replay ---------------------------------------------------------------------------------

def hours_csv(tmp_path: Path, name: str, start: int, hours: list[int], base: float) -> Path:
    rows = [[start + h * HOUR, base + h, base + h + 2, base + h - 1, base + h + 1, 10.0 + h] for h in hours]
    path = tmp_path / f"{name}.csv"
    write_ohlcv_csv(path, OHLCV.from_rows(rows))
    return path


def test_replay_starts_after_warm_up_and_publishes_bar_closes(tmp_path):
    btc = hours_csv(tmp_path, "btc", ORIGIN, list(range(72)), 100.0)
    eth = hours_csv(tmp_path, "eth", ORIGIN + 2 * HOUR, list(range(60)), 10.0)
    feed = ReplayFeed({"BTC/USDT": btc, "ETH/USDT": eth}, timeframes=("1h", "1d"), warmup_bars=5)
    assert feed.start() == ORIGIN + 7 * HOUR  # ETH's 5th bar closes last
    assert len(feed.history("BTC/USDT", "1h")) == 7 and len(feed.history("ETH/USDT", "1h")) == 5
    assert feed.prices() == {"BTC/USDT": (107.0, ORIGIN + 7 * HOUR), "ETH/USDT": (15.0, ORIGIN + 7 * HOUR)}
    update = feed.advance_to(ORIGIN + 8 * HOUR + 30 * MIN)
    assert update.bars == [
        Bar("BTC/USDT", "1h", ORIGIN + 7 * HOUR, 107.0, 109.0, 106.0, 108.0, 17.0),
        Bar("ETH/USDT", "1h", ORIGIN + 7 * HOUR, 15.0, 17.0, 14.0, 16.0, 15.0),
    ]
    assert update.ticks == {"BTC/USDT": (108.0, ORIGIN + 8 * HOUR), "ETH/USDT": (16.0, ORIGIN + 8 * HOUR)}
    update = feed.advance_to(ORIGIN + DAY)
    day = [b for b in update.bars if b.timeframe == "1d"]
    assert day == [Bar("BTC/USDT", "1d", ORIGIN, 100.0, 125.0, 99.0, 124.0, sum(10.0 + h for h in range(24))),
                   Bar("ETH/USDT", "1d", ORIGIN, 10.0, 33.0, 9.0, 32.0, sum(10.0 + h for h in range(22)))]
    assert not feed.finished
    feed.advance_to(ORIGIN + 72 * HOUR)
    assert feed.finished and feed.advance_to(ORIGIN + 73 * HOUR).bars == []
    assert feed.now_ts == ORIGIN + 73 * HOUR


def test_replay_gap_invents_no_bars_and_the_day_holds_the_hours_present(tmp_path):
    path = hours_csv(tmp_path, "btc", ORIGIN, [h for h in range(30) if not 10 <= h < 14], 100.0)
    feed = ReplayFeed({"BTC/USDT": path}, warmup_bars=2)
    feed.start()
    bars = all_bars(run(feed, [ORIGIN + k * 30 * MIN for k in range(5, 61)]))
    hours = [b.ts_open for b in bars if b.timeframe == "1h"]
    assert hours == [ORIGIN + h * HOUR for h in range(2, 30) if not 10 <= h < 14]
    [day] = [b for b in bars if b.timeframe == "1d"]
    assert day.volume == sum(10.0 + h for h in range(24) if not 10 <= h < 14)
    assert (day.open, day.close) == (100.0, 124.0)


def test_replay_start_ts_and_errors(tmp_path):
    path = hours_csv(tmp_path, "btc", ORIGIN, list(range(30)), 100.0)
    feed = ReplayFeed({"BTC/USDT": path}, warmup_bars=5)
    assert feed.start(ORIGIN + 20 * HOUR) == ORIGIN + 20 * HOUR
    assert len(feed.history("BTC/USDT", "1h")) == 20
    with pytest.raises(ValueError, match=r"btc\.csv: 30 bars, fewer than warmup_bars=500 for BTC/USDT"):
        ReplayFeed({"BTC/USDT": path})
    odd = tmp_path / "odd.csv"
    write_ohlcv_csv(odd, OHLCV.from_rows([[ORIGIN + 30 * MIN, 1, 1, 1, 1, 1]]))
    with pytest.raises(ValueError, match=r"odd\.csv: bar ts=1735691400000 is not on a 1h boundary"):
        ReplayFeed({"X": odd}, warmup_bars=1)
    with pytest.raises(ValueError, match="timeframe 15m is not a whole multiple"):
        ReplayFeed({"BTC/USDT": path}, timeframes=("15m",), warmup_bars=1)


@pytest.fixture
def real_btc(shared_data) -> tuple[Path, Path]:
    return (require_shared(shared_data / "ohlcv/binance/BTC_USDT-1h.csv"),
            require_shared(shared_data / "ohlcv/binance/BTC_USDT-1d.csv"))


def test_replay_of_real_binance_data_matches_the_files_and_finishes(real_btc):
    hourly_path, daily_path = real_btc
    hourly, daily = load_ohlcv_csv(hourly_path), load_ohlcv_csv(daily_path)
    feed = build_feed("replay", symbols=["BTC/USDT"], timeframes=["1h", "1d"],
                      replay_files={"BTC/USDT": hourly_path}, replay_warmup_bars=500)
    start = feed.start()
    assert start == int(hourly.ts[499]) + HOUR
    assert feed.history("BTC/USDT", "1h").rows() == hourly.slice(0, 500).rows()

    first = feed.advance_to(start + 3 * HOUR)
    assert [[b.ts_open, b.open, b.high, b.low, b.close, b.volume] for b in first.bars if b.timeframe == "1h"] \
        == hourly.slice(500, 503).rows()

    published: list[Bar] = []
    while not feed.finished:
        published += feed.advance_to(feed.now_ts + 5 * DAY).bars
    assert feed.now_ts >= int(hourly.ts[-1]) + HOUR
    hours = [b for b in published if b.timeframe == "1h"]
    assert len(hours) == len(hourly) - 503  # every row once, none invented across the 27 gaps
    assert np.sum(np.diff(hourly.ts) != HOUR) == 27

    # every published day equals Binance's own 1d row: OHLC exactly, volume to 1e-6
    days = [b for b in published if b.timeframe == "1d"]
    real_day = {int(t): i for i, t in enumerate(daily.ts)}
    assert len(days) > 1800
    # the 1h file runs 11 hours into its last day, which the 1d file does not have yet; the
    # replay clock passed that day's end, so its bar closed with the hours present
    assert [b.ts_open for b in days if b.ts_open not in real_day] == [int(hourly.ts[-1]) - 10 * HOUR]
    for b in days[:-1]:
        i = real_day[b.ts_open]
        assert (b.open, b.high, b.low, b.close) == (daily.open[i], daily.high[i], daily.low[i], daily.close[i])
        assert b.volume == pytest.approx(daily.volume[i], rel=1e-6)
    # a day with a gap: 2018-02-08 has one hour in the 1h file; its bar is that hour, as Binance's is
    gap_day = 1_518_048_000_000
    [b] = [d for d in days if d.ts_open == gap_day]
    [h] = [x for x in hours if gap_day <= x.ts_open < gap_day + DAY]
    assert (b.open, b.high, b.low, b.close, b.volume) == (h.open, h.high, h.low, h.close, h.volume)


def test_a_day_of_real_hours_aggregates_to_the_real_day_row(real_btc):
    hourly_path, daily_path = real_btc
    hourly, daily = load_ohlcv_csv(hourly_path), load_ohlcv_csv(daily_path)
    day = 1_600_000_000_000 - 1_600_000_000_000 % DAY  # 2020-09-13, a full day of 24 hours
    i0 = int(np.searchsorted(hourly.ts, day))
    assert hourly.ts[i0 + 23] == day + 23 * HOUR
    feed = ReplayFeed({"BTC/USDT": hourly_path}, warmup_bars=1)
    feed.start(day)
    [b] = [x for x in feed.advance_to(day + DAY).bars if x.timeframe == "1d"]
    j = int(np.searchsorted(daily.ts, day))
    assert (b.ts_open, b.open, b.high, b.low, b.close) == (
        day, daily.open[j], daily.high[j], daily.low[j], daily.close[j])
    assert b.volume == pytest.approx(daily.volume[j], rel=1e-6)


# --- build_feed -----------------------------------------------------------------------------

def test_build_feed_makes_each_mode_and_names_bad_ones(tmp_path):
    sim = build_feed("sim", symbols=SYMBOLS, timeframes=["1h"], seed=3, history_days=2, sim_origin_ts=ORIGIN)
    assert isinstance(sim, SimFeed) and sim.start() == ORIGIN + 2 * DAY
    path = hours_csv(tmp_path, "btc", ORIGIN, list(range(10)), 100.0)
    replay = build_feed("replay", symbols=["BTC/USDT"], timeframes=["1h"], replay_files={"BTC/USDT": path},
                        replay_warmup_bars=3)
    assert isinstance(replay, ReplayFeed) and replay.symbols == ("BTC/USDT",)
    with pytest.raises(ValueError, match=r"replay_files has no CSV for symbol\(s\) \['ETH/USDT'\]"):
        build_feed("replay", symbols=["BTC/USDT", "ETH/USDT"], timeframes=["1h"], replay_files={"BTC/USDT": path})
    live = build_feed("live", symbols=SYMBOLS, timeframes=["1h"])  # building it makes no network call
    assert isinstance(live, LiveFeed) and live.symbols == tuple(SYMBOLS)
    with pytest.raises(ValueError, match="unknown feed mode 'paper'"):
        build_feed("paper", symbols=SYMBOLS, timeframes=["1h"])
