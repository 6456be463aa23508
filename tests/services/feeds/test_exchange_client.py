"""The live spot feed against a Binance.US replay server on 127.0.0.1 (no internet).

Multi-bar tests serve klines built from the real Binance.US 1h CSV
(../shared/data/ohlcv/binanceus/BTC_USDT-1h.csv) in the exact Binance kline JSON shape (prices as
strings); the recorded CCXT static response (one still-open candle) is served verbatim where
named. exchangeInfo is the recorded 2 MB cassette, so ccxt's real load_markets runs.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from common.csv_bars import load_ohlcv_csv
from common.ohlcv import OHLCV
from services.feeds.exchange_client import (
    OPERATIONAL,
    TEMPORARY,
    CcxtSpotClient,
    ExchangeRejected,
    ExchangeUnavailable,
    LiveFeed,
    OutageTracker,
    backoff_seconds,
    classify_error,
    closed_rows,
)
from tests.support.builders import binance_replay
from tests.support.replay_server import BinanceReplay, Fault, ReplayServer

H = 3_600_000
DAY = 86_400_000
NOW = 1_654_041_600_000 + 30 * 60_000  # 2022-06-01 00:30 UTC, inside the recorded CSV


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict]] = []

    def warning(self, event: str, **fields) -> None:
        self.records.append(("warning", event, fields))

    def info(self, event: str, **fields) -> None:
        self.records.append(("info", event, fields))

    def events(self, name: str) -> list[dict]:
        return [f for _, e, f in self.records if e == name]


@pytest.fixture
def binance(shared_data):
    with binance_replay(shared_data, NOW) as served:
        yield served


@pytest.fixture
def btc_hours(shared_data) -> OHLCV:
    return load_ohlcv_csv(shared_data / "ohlcv" / "binanceus" / "BTC_USDT-1h.csv")


def make_feed(server, log=None, symbols=("BTC/USDT", "ETH/USDT"), timeframes=("1h", "1d")) -> LiveFeed:
    client = CcxtSpotClient("binanceus", server.url, timeout_ms=400)
    return LiveFeed(symbols, timeframes, client, history_days=5, background=False, log=log,
                    backoff_cap_seconds=30)


def row_at(hours: OHLCV, ts: int) -> list[float]:
    i = int(np.searchsorted(hours.ts, ts))
    assert hours.ts[i] == ts
    return [hours.open[i], hours.high[i], hours.low[i], hours.close[i], hours.volume[i]]


# --- pure pieces ---------------------------------------------------------------------------------

def test_backoff_doubles_to_the_cap_and_honours_retry_after():
    assert [backoff_seconds(a, base=1, cap=10) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_seconds(1, base=1, cap=10, retry_after=30) == 30  # the venue asked for longer
    assert backoff_seconds(3, base=1, cap=10, retry_after=2) == 4
    assert backoff_seconds(10_000, base=0.5, cap=60) == 60
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="attempt must be an int >= 1"):
            backoff_seconds(bad)
    with pytest.raises(ValueError, match="0 < base <= cap"):
        backoff_seconds(1, base=5, cap=1)


def test_errors_split_into_temporary_and_operational():
    import ccxt

    for exc in (ccxt.RequestTimeout("t"), ccxt.RateLimitExceeded("429"), ccxt.OnMaintenance("m"),
                ccxt.ExchangeNotAvailable("503"), ccxt.BadResponse("junk"), TimeoutError(), ConnectionError(),
                ValueError("NaN close"), ExchangeUnavailable("x")):
        assert classify_error(exc) == TEMPORARY, exc
    for exc in (ccxt.BadSymbol("no such"), ccxt.AuthenticationError("key"), ccxt.NotSupported("n"),
                ExchangeRejected("x"), RuntimeError("bug")):
        assert classify_error(exc) == OPERATIONAL, exc


def test_outage_tracker_reports_an_episode_once_and_schedules_retries():
    tracker = OutageTracker(base_seconds=1, cap_seconds=8)
    assert tracker.failure("BTC/USDT 1h", ExchangeUnavailable("down"), 1_000) is True
    assert not tracker.due("BTC/USDT 1h", 1_999) and tracker.due("BTC/USDT 1h", 2_000)
    assert tracker.failure("BTC/USDT 1h", ExchangeUnavailable("down"), 2_000) is False  # same episode
    assert tracker.episode("BTC/USDT 1h").retry_at_ms == 4_000  # 2 s on the second failure
    assert tracker.failure("BTC/USDT 1h", ExchangeUnavailable("slow", retry_after=20), 4_000) is False
    assert tracker.episode("BTC/USDT 1h").retry_at_ms == 24_000
    assert tracker.failure("x", ExchangeRejected("bad symbol"), 0) and tracker.episode("x").retry_at_ms == 8_000
    assert "BTC/USDT 1h: temporary failure x3 since 1000" in tracker.reasons()[0]
    ended = tracker.success("BTC/USDT 1h")
    assert ended.attempts == 3 and tracker.success("BTC/USDT 1h") is None


def test_closed_rows_leave_out_the_bar_still_forming():
    rows = OHLCV.from_rows([[0, 1, 1, 1, 1, 1], [H, 1, 1, 1, 1, 1], [2 * H, 1, 1, 1, 1, 1]])
    assert closed_rows(rows, H, 2 * H + 59_000, H).ts.tolist() == [H]
    assert closed_rows(rows, 0, 3 * H, H).ts.tolist() == [0, H, 2 * H]


# --- against the replay server -------------------------------------------------------------------

def test_recorded_open_candle_is_not_published_until_it_closes(shared_data):
    """The recorded CCXT response: one 1h candle opened 2024-03-13 11:00, fetched at ~11:10."""
    opened = 1_710_327_600_000
    replay = BinanceReplay(shared_data, opened + 10 * 60_000, symbols=("BTC/USDT",), recorded=True)
    with ReplayServer(replay.routes()) as server:
        feed = make_feed(server, symbols=("BTC/USDT",), timeframes=("1h",))
        feed.start(opened + 10 * 60_000)
        assert len(feed.history("BTC/USDT", "1h")) == 0
        assert feed.prices() == {"BTC/USDT": (73346.14, 1_710_328_244_727)}  # the recorded 24hr ticker
        feed.poll(opened + H + 5_000)
        update = feed.advance_to(opened + H + 5_000)
        [bar] = update.bars
        assert (bar.ts_open, bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            opened, 73249.24, 73394.30, 73234.62, 73347.62, 0.23592)
        feed.poll(opened + H + 15_000)
        assert feed.advance_to(opened + H + 15_000).bars == []  # published once


def test_warm_up_then_each_bar_once_when_it_closes(binance, btc_hours):
    replay, server = binance
    feed = make_feed(server)
    assert feed.start(NOW) == NOW
    hist = feed.history("BTC/USDT", "1h")
    assert len(hist) == 5 * 24 and int(hist.ts[-1]) == NOW - 30 * 60_000 - H  # 23:00 bar: the last closed
    assert hist.rows()[-1][1:] == row_at(btc_hours, NOW - 30 * 60_000 - H)
    days = feed.history("BTC/USDT", "1d")
    assert int(days.ts[-1]) == NOW - 30 * 60_000 - DAY  # yesterday; today's day is still open
    day_rows = btc_hours.slice(int(np.searchsorted(btc_hours.ts, days.ts[-1])),
                               int(np.searchsorted(btc_hours.ts, days.ts[-1] + DAY)))
    assert days.close[-1] == day_rows.close[-1] and days.high[-1] == day_rows.high.max()
    assert days.volume[-1] == pytest.approx(day_rows.volume.sum(), rel=1e-9)
    assert not feed.stale

    replay.now_ms = NOW + H
    feed.poll(NOW + H)
    update = feed.advance_to(NOW + H)
    assert [(b.symbol, b.timeframe, b.ts_open) for b in update.bars] == [
        ("BTC/USDT", "1h", NOW - 30 * 60_000), ("ETH/USDT", "1h", NOW - 30 * 60_000)]
    assert [update.bars[0].open, update.bars[0].high, update.bars[0].low, update.bars[0].close,
            update.bars[0].volume] == row_at(btc_hours, NOW - 30 * 60_000)
    assert set(update.ticks) == {"BTC/USDT", "ETH/USDT"}
    klines_before = server.hits("/api/v3/klines")
    feed.poll(NOW + H + 10_000)
    assert feed.advance_to(NOW + H + 10_000).bars == []
    assert server.hits("/api/v3/klines") == klines_before  # no bar can have closed: no request


@pytest.mark.parametrize("fault, kind", [
    (Fault("delay", seconds=1.0), "timeout"),
    (Fault("status", status=429, retry_after=3), "429"),
    (Fault("status", status=500), "500"),
    (Fault("status", status=503, body={"code": 1, "msg": "System is under maintenance."}), "maintenance"),
    (Fault("truncate"), "truncated JSON"),
])
def test_transport_faults_are_retried_logged_once_and_shown_as_stale(binance, fault, kind):
    replay, server = binance
    log = Recorder()
    feed = make_feed(server, log, symbols=("BTC/USDT",), timeframes=("1h",))
    feed.start(NOW)
    replay.now_ms = NOW + H
    server.inject("/api/v3/klines", fault, times=2)
    feed.poll(NOW + H)
    assert feed.advance_to(NOW + H).bars == [] and feed.stale, kind
    assert any("BTC/USDT 1h: temporary failure x1" in r for r in feed.stale_reasons())
    feed.poll(NOW + H + 60_000)  # second failure, same episode: no second log line
    assert len(log.events("live_data_problem")) == 1
    feed.poll(NOW + H + 120_000)
    [bar] = feed.advance_to(NOW + H + 120_000).bars
    assert bar.ts_open == NOW - 30 * 60_000 and not feed.stale
    assert log.events("live_data_recovered")[0]["failed_attempts"] == 2


def test_retry_after_is_honoured(binance):
    replay, server = binance
    feed = make_feed(server, symbols=("BTC/USDT",), timeframes=("1h",))
    feed.start(NOW)
    replay.now_ms = NOW + H
    server.inject("/api/v3/klines", Fault("status", status=429, retry_after=20))
    feed.poll(NOW + H)
    hits = server.hits("/api/v3/klines")
    feed.poll(NOW + H + 10_000)
    assert server.hits("/api/v3/klines") == hits  # still inside Retry-After
    feed.poll(NOW + H + 20_000)
    assert server.hits("/api/v3/klines") == hits + 1 and len(feed.advance_to(NOW + H + 20_000).bars) == 1


@pytest.mark.parametrize("bad", ["NaN", "-5.00000000", "0.00000000"])
def test_nan_negative_and_zero_prices_never_reach_a_strategy(binance, bad):
    replay, server = binance
    log = Recorder()
    feed = make_feed(server, log, symbols=("BTC/USDT",), timeframes=("1h",))
    feed.start(NOW)
    replay.now_ms = NOW + H

    def poison_last_closed(rows):
        rows[-2][4] = bad  # close of the bar that just closed (the last row is still forming)
        return rows

    server.inject("/api/v3/klines", Fault("rewrite", rewrite=poison_last_closed))
    feed.poll(NOW + H)
    assert feed.advance_to(NOW + H).bars == [] and feed.stale
    assert "bad bar(s) dropped" in log.events("live_data_problem")[0]["detail"]
    feed.poll(NOW + H + 60_000)  # the venue sends it sound again: published then, once
    [bar] = feed.advance_to(NOW + H + 60_000).bars
    assert math.isfinite(bar.close) and bar.close > 0 and not feed.stale


def test_bad_ticker_price_keeps_the_last_good_one(binance):
    replay, server = binance
    feed = make_feed(server, symbols=("BTC/USDT",), timeframes=("1h",))
    feed.start(NOW)
    good = feed.prices()["BTC/USDT"]
    server.inject("/api/v3/ticker/24hr", Fault("rewrite", rewrite=lambda t: {**t, "lastPrice": "-1"}))
    feed.poll(NOW + 10_000)
    assert feed.advance_to(NOW + 10_000).ticks == {} and feed.prices()["BTC/USDT"] == good
    assert any(r.startswith("ticker BTC/USDT") for r in feed.stale_reasons())


def test_a_long_outage_makes_the_feed_stale_even_without_errors(binance):
    replay, server = binance
    feed = make_feed(server, symbols=("BTC/USDT",), timeframes=("1h",))
    feed.start(NOW)
    next_close = NOW + 30 * 60_000  # 01:00, when the 00:00 bar closes
    assert not feed.stale_reasons(next_close + 60_000)  # within the grace of a minute
    assert "overdue" in feed.stale_reasons(next_close + 61_000)[0]  # no poll brought that bar


def test_unknown_symbol_is_operational_and_the_feed_keeps_running(binance):
    _, server = binance
    log = Recorder()
    feed = make_feed(server, log, symbols=("BTC/USDT", "DOGE/XYZ"), timeframes=("1h",))
    feed.start(NOW)
    assert len(feed.history("BTC/USDT", "1h")) == 120
    assert any(e["kind"] == "operational" and "DOGE/XYZ" in e["source"] for e in log.events("live_data_problem"))
    assert feed.stale


def test_bad_arguments_are_named(binance):
    _, server = binance
    client = CcxtSpotClient("binanceus", server.url)
    with pytest.raises(ValueError, match="history_days must be an int >= 1"):
        LiveFeed(["BTC/USDT"], ["1h"], client, history_days=0)
    with pytest.raises(ValueError, match="symbols must be a non-empty list"):
        LiveFeed([], ["1h"], client)
    with pytest.raises(ExchangeRejected, match="unknown CCXT exchange id 'nosuch'"):
        CcxtSpotClient("nosuch")
    feed = LiveFeed(["BTC/USDT"], ["1h"], client, background=False)
    with pytest.raises(RuntimeError, match="call start"):
        feed.advance_to(NOW)
    feed.start(NOW)
    with pytest.raises(ValueError, match="unknown timeframe '4h'"):
        feed.history("BTC/USDT", "4h")


def test_ccxt_is_pointed_at_the_override_host_only():
    client = CcxtSpotClient("binanceus", "http://127.0.0.1:9")
    urls = client.exchange.urls["api"]
    assert urls["public"] == "http://127.0.0.1:9/api/v3" and urls["sapi"] == "http://127.0.0.1:9/sapi/v1"
    assert urls["fapiPublic"].startswith("https://fapi.binance.com")  # other hosts untouched
    assert client.exchange.enableRateLimit is True
