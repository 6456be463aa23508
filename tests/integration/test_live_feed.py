"""The whole live path end to end against replay servers on 127.0.0.1 (no internet).

services.marketdata runs in this process with a live config whose ``feed.live.binance_url``
and ``deribit_url`` point at the replay servers, its real publisher on a loopback port, and a
common.bus.Subscriber reading ``bar.*`` from it. The wall clock of the service and of the
feed's poller is a test clock set inside the recorded period (2022-06-01), because the Binance.US
klines served are the real Binance.US 1h CSV rows (in Binance's kline JSON shape, prices as
strings); the option side reads the real 2020-05-14 Deribit chain.
"""
from __future__ import annotations

import time

import pytest

import services.feeds.exchange_client as exchange_client
import services.marketdata as marketdata
from common.bus import Subscriber
from config.settings import parse_config
from options.contracts import parse_instrument_name
from services.feeds.deribit import DeribitClient, DeribitMarkSource
from services.runtime import ServiceRuntime
from tests.support.replay_server import BinanceReplay, DeribitReplay, Fault, ReplayServer
from tests.support.stack import stack_security

H = 3_600_000
START = 1_654_041_600_000 + 30 * 60_000  # 2022-06-01 00:30 UTC
SNAPSHOT_TS = 1_589_434_896_486


class FakeClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def live_config(binance_url: str, deribit_url: str, tcp_endpoint) -> dict:
    return {
        "state_file": "unused/state.json",
        "feed": {"mode": "live", "symbols": ["BTC/USDT", "ETH/USDT"], "history_days": 3,
                 "live": {"exchange": "binanceus", "poll_seconds": 0.05, "binance_url": binance_url,
                          "deribit_url": deribit_url}},
        "endpoints": {name: {"pub": tcp_endpoint(), "rep": tcp_endpoint()}
                      for name in ("marketdata", "signals", "portfolio", "pricer")},
        "strategies": [
            {"id": "momentum-btc", "type": "spot", "strategy": "momentum", "symbol": "BTC/USDT", "timeframe": "1h",
             "capital": 1000, "max_drawdown_pct": 60},
            {"id": "deribit-vol-btc", "type": "options", "strategy": "vol_mean_reversion", "venue": "deribit",
             "underlying": "BTC", "capital": 1000, "max_drawdown_pct": 20},
        ],
    }


def wait_until(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"{what} not reached in {timeout}s")


@pytest.fixture
def live_stack(shared_data, tcp_endpoint, monkeypatch, tmp_path):
    clock = FakeClock(START)
    monkeypatch.setattr(marketdata, "wall_ms", clock)
    monkeypatch.setattr(exchange_client, "wall_ms", clock)
    binance = BinanceReplay(shared_data, START, symbols=("BTC/USDT", "ETH/USDT"))
    deribit = DeribitReplay(shared_data)
    with ReplayServer(binance.routes()) as bsrv, ReplayServer(deribit.routes()) as dsrv:
        raw = live_config(bsrv.url, dsrv.url + "/api/v2", tcp_endpoint)
        cfg = parse_config(raw, base_dir=tmp_path)
        rt = ServiceRuntime("marketdata", stack_security(raw, tmp_path, "marketdata"))
        svc = marketdata.MarketDataService(cfg, rt)
        rt.bind_publisher(cfg.endpoints["marketdata"].pub)
        sub = Subscriber(rt.ctx, [cfg.endpoints["marketdata"].pub], ["bar."],
                         security=stack_security(raw, tmp_path, "reader"))
        try:
            yield clock, binance, bsrv, dsrv, cfg, svc, sub
        finally:
            svc.stop()
            sub.close()
            rt.close()


def drain_bars(svc, sub, want: int, timeout: float = 10.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        svc.advance()
        msg = sub.receive(50)
        if msg is not None:
            got.append(msg[1].body)
    return got


def test_live_marketdata_publishes_closed_bars_and_shows_an_outage_as_stale(live_stack):
    clock, binance, bsrv, _, cfg, svc, sub = live_stack
    assert cfg.feed.speed == 1 and svc.feed.now_ts == START
    history = svc.history({"symbol": "BTC/USDT", "timeframe": "1h", "limit": 5000})
    assert len(history["rows"]) == 72 and history["rows"][-1][0] == START - 30 * 60_000 - H
    status = svc.status()
    assert status["mode"] == "live" and status["stale"] is False
    time.sleep(0.3)  # the subscriber joins before anything is published (no bar can be lost)

    # an hour later the 00:00 bars close: each published once, on the bus
    binance.now_ms = START + H  # the server first, so no poll sees the clock ahead of it
    clock.now = START + H
    bars = drain_bars(svc, sub, want=2)
    assert sorted((b["symbol"], b["timeframe"], b["ts_open"]) for b in bars) == [
        ("BTC/USDT", "1h", START - 30 * 60_000), ("ETH/USDT", "1h", START - 30 * 60_000)]
    assert drain_bars(svc, sub, want=1, timeout=0.5) == []  # no duplicate
    assert svc.prices(None)["prices"]["BTC/USDT"]["price"] > 0

    # Binance.US goes down (503 on everything): nothing published, /status says stale and why
    bsrv.inject("/api/v3/", Fault("status", status=503), times=10_000)
    binance.now_ms = START + 2 * H
    clock.now = START + 2 * H
    wait_until(lambda: svc.status()["stale"], "stale status")
    assert drain_bars(svc, sub, want=1, timeout=0.5) == []
    reasons = svc.status()["stale_reasons"]
    assert any("BTC/USDT 1h: temporary failure" in r and "503" in r for r in reasons)

    # it comes back: the missed bar arrives once and the flag clears
    bsrv.clear_faults()
    clock.now += 61_000  # past the backoff
    bars = drain_bars(svc, sub, want=2)
    assert {b["ts_open"] for b in bars} == {START + 30 * 60_000}
    wait_until(lambda: not svc.status()["stale"], "fresh status")


def test_live_option_chain_is_read_and_positions_are_marked(live_stack):
    *_, dsrv, cfg, _, _ = live_stack
    client = DeribitClient(cfg.feed.live.deribit_url, timeout_s=0.5)
    expiry = client.find_closest_expiry("BTC", 7, now_ts=SNAPSHOT_TS)
    strike = client.find_closest_strike("BTC", expiry, False, 9000, now_ts=SNAPSHOT_TS)
    opened = parse_instrument_name("BTC-22MAY20-9000-P")
    assert (expiry, strike) == (opened.expiry_ts, 9000.0)  # a contract that exists
    positions = [opened, parse_instrument_name("BTC-23MAY20-9000-P"),  # no 23MAY20: maps to 22MAY20
                 parse_instrument_name("MBT-29MAY20-9000-C"), parse_instrument_name("BTC-14MAY20-9000-C")]
    marks = DeribitMarkSource(client).marks(positions, SNAPSHOT_TS + 3 * H)
    assert [marks[c.name].source for c in positions] == ["exact", "mapped", "exact", "settled"]
    assert marks["BTC-23MAY20-9000-P"].instrument == "BTC-22MAY20-9000-P"
    assert marks["BTC-23MAY20-9000-P"].days_shift == -1.0
    # an empty chain: nothing to open, nothing marked, nothing crashes
    dsrv.inject("/api/v2/public/get_instruments", Fault("rewrite", rewrite=lambda d: {**d, "result": []}))
    dsrv.inject("/api/v2/public/get_book_summary_by_currency",
                Fault("rewrite", rewrite=lambda d: {**d, "result": []}))
    fresh = DeribitClient(cfg.feed.live.deribit_url, timeout_s=0.5)
    assert DeribitMarkSource(fresh).marks([opened], SNAPSHOT_TS) == {}
