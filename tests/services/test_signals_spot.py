"""The signal engine decides spot from its incremental cache: warmed from the fetched history,
fed bar by bar through its bar hook, rebuilt from the refetched history after a bar gap."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.ports import tcp_endpoint
from common.bars import Bar
from common.bus import Envelope
from common.csv_bars import load_ohlcv_csv
from common.ohlcv import OHLCV
from common.timeframes import timeframe_ms
from config.settings import parse_config
from services.runtime import ServiceRuntime
from services.signals import SignalEngine
from strategies.registry import compute_signals
from tests.support.stack import stack_config, stack_security

BTC = Path(__file__).resolve().parents[3] / "shared" / "data" / "ohlcv" / "binance" / "BTC_USDT-1h.csv"
HOUR = timeframe_ms("1h")


class FakeMarketdata:
    """Answers ``history`` with the newest bars of ``self.bars``, as marketdata does."""

    def __init__(self, bars: OHLCV) -> None:
        self.bars = bars
        self.asked = 0

    def request(self, kind: str, body: dict) -> dict:
        assert kind == "history" and (body["symbol"], body["timeframe"]) == ("BTC/USDT", "1h")
        self.asked += 1
        return {"rows": self.bars.tail(body["limit"]).rows()}


def bar_body(bars: OHLCV, i: int) -> dict:
    return Bar("BTC/USDT", "1h", int(bars.ts[i]), float(bars.open[i]), float(bars.high[i]), float(bars.low[i]),
               float(bars.close[i]), float(bars.volume[i])).to_dict()


@pytest.fixture()
def engine(tmp_path):
    raw = stack_config()
    rt = ServiceRuntime("signals-test", stack_security(raw, tmp_path, "signals"))
    try:
        rt.bind_publisher(tcp_endpoint())
        built = SignalEngine(parse_config(raw), rt)
        built.portfolio_retry_at = time.monotonic() + 600  # orders wait in the outbox: no portfolio here
        yield built
    finally:
        rt.close()


def warmed_on_real_btc(engine, bars: int) -> tuple[OHLCV, Any]:
    """The last ``bars`` real BTC 1h bars, the engine's ``rsi-btc`` strategy, and the engine
    warmed up on the first 1,000 of them (skipped without ../shared/data)."""
    if not BTC.is_file():
        pytest.skip(f"{BTC} is not present (../shared/data)")
    btc = load_ohlcv_csv(BTC).tail(bars)
    engine.marketdata = FakeMarketdata(btc.slice(0, 1000))
    engine.needs_warmup = {("BTC/USDT", "1h")}
    engine.warm_up()
    return btc, next(s for s in engine.spot if s.id == "rsi-btc")


def test_spot_signals_follow_the_bars_and_are_rebuilt_after_a_gap(engine):
    btc, sc = warmed_on_real_btc(engine, 1600)

    def decide_through(stop: int, history_start: int) -> None:
        want = compute_signals(sc.strategy, btc.slice(history_start, stop), dict(sc.params))
        for i in range(int(btc.ts.searchsorted(engine.bars("BTC/USDT", "1h", 1).ts[-1])) + 1, stop):
            engine.keep_bar(bar_body(btc, i))
            engine.market_ts = int(btc.ts[i]) + HOUR
            signal = engine.run_spot(sc).signal
            assert (signal.ts_bar, signal.signal) == (int(btc.ts[i]), int(want.signals[i - history_start]))
            assert signal.indicators["rsi"] == pytest.approx(float(want.indicators["rsi"][i - history_start]),
                                                             rel=1e-9)

    engine.market_ts = int(btc.ts[999]) + HOUR
    engine.run_spot(sc)  # first due: the state is built from the 1,000 bars fetched
    decide_through(1300, 0)
    assert np.count_nonzero(compute_signals("rsi", btc.slice(0, 1300)).signals[1000:]) > 0  # real events seen
    state = next(iter(engine.spot_signals.states.values()))
    assert state.bars_seen == 1300  # warmed from 1,000 bars, then one per bar

    engine.keep_bar(bar_body(btc, 1301))  # bar 1300 never came: a gap
    assert ("BTC/USDT", "1h") in engine.needs_warmup
    engine.marketdata.bars = btc.slice(0, 1302)
    engine.warm_up()  # the refetch: the newest 1,000 bars, 302..1301
    assert engine.spot_signals.states == {}
    engine.market_ts = int(btc.ts[1301]) + HOUR
    assert engine.run_spot(sc).signal.ts_bar == int(btc.ts[1301])  # rebuilt from the refetched history
    decide_through(1600, 302)
    assert next(iter(engine.spot_signals.states.values())).bars_seen == 1600 - 302


def test_holds_says_hold_exactly_when_the_strategy_would_on_real_bars(engine):
    """``holds`` (decide after the orders) is True on a bar exactly when the full decision is a
    hold; a state not built yet, or not fed the newest bar, is never taken for one."""
    btc, sc = warmed_on_real_btc(engine, 1400)
    engine.market_ts = int(btc.ts[999]) + HOUR
    assert not engine.holds(sc)  # no state yet: decided before the orders
    engine.run_spot(sc)
    seen = set()
    for i in range(1000, 1400):
        engine.keep_bar(bar_body(btc, i))
        engine.market_ts = int(btc.ts[i]) + HOUR
        held = engine.holds(sc)
        signal = engine.run_spot(sc).signal
        assert held == (signal.signal == 0), i
        seen.add(held)
    assert seen == {True, False}  # both kinds of bar were met
    engine.spot_signals.invalidate("BTC/USDT", "1h")
    assert not engine.holds(sc)  # a history refetched: rebuilt by the full decision


def test_a_tail_is_shared_read_only_until_its_series_gets_a_bar(engine):
    """A close's strategies share one copy of a series' newest bars; a new bar or a refetched
    history replaces it, and the whole history is still a copy of the caller's own."""
    bars = OHLCV(np.arange(5, dtype=np.int64) * HOUR, *(np.full(5, 100.0) for _ in range(5)))
    engine.marketdata = FakeMarketdata(bars.slice(0, 4))
    engine.needs_warmup = {("BTC/USDT", "1h")}
    engine.warm_up()
    tail = engine.bars("BTC/USDT", "1h", 2)
    assert engine.bars("BTC/USDT", "1h", 2) is tail
    assert tail.ts.tolist() == [2 * HOUR, 3 * HOUR]
    with pytest.raises(ValueError, match="read-only"):
        tail.close[0] = 1.0
    engine.keep_bar(bar_body(bars, 4))
    assert engine.bars("BTC/USDT", "1h", 2).ts.tolist() == [3 * HOUR, 4 * HOUR]
    engine.marketdata.bars = bars.slice(0, 3)
    engine.needs_warmup = {("BTC/USDT", "1h")}
    engine.warm_up()
    assert engine.bars("BTC/USDT", "1h", 1).ts.tolist() == [2 * HOUR]
    whole = engine.bars("BTC/USDT", "1h")
    whole.close[0] = 1.0  # the caller's own copy
    assert engine.bars("BTC/USDT", "1h").close[0] == 100.0


class TwoSeriesMarketdata(FakeMarketdata):
    """BTC's bars for BTC/USDT, and the same bars at a twentieth for ETH/USDT."""

    def request(self, kind: str, body: dict) -> dict:
        assert kind == "history" and body["timeframe"] == "1h"
        self.asked += 1
        scale = {"BTC/USDT": 1.0, "ETH/USDT": 0.05}[body["symbol"]]
        return {"rows": [[r[0], *(x * scale for x in r[1:5]), r[5]] for r in self.bars.tail(body["limit"]).rows()]}


def symbol_bar(bars: OHLCV, i: int, symbol: str, scale: float) -> dict:
    return {**bar_body(bars, i), "symbol": symbol,
            **{k: float(getattr(bars, k)[i]) * scale for k in ("open", "high", "low", "close")}}


def test_a_close_is_decided_at_its_last_bar_not_at_the_clock_after_it(engine):
    """Marketdata sends a close's bars, then its ticks, then the clock. The engine decides once
    the last series it keeps has its bar; a series left behind (a gap) leaves it to the clock."""
    base = 1_767_225_600_000  # 2026-01-01 00:00 UTC; bar i opens at base + i h
    close = 100.0 + np.sin(np.arange(40))
    bars = OHLCV(base + np.arange(40, dtype=np.int64) * HOUR, close, close + 1.0, close - 1.0, close,
                 np.full(40, 5.0))
    engine.marketdata = TwoSeriesMarketdata(bars.slice(0, 30))
    engine.needs_warmup = {("BTC/USDT", "1h"), ("ETH/USDT", "1h")}
    engine.warm_up()
    engine.market_ts = base + 30 * HOUR
    engine.run_due()
    cycles = engine.cycle_count

    def clock(ts: int) -> None:
        engine.on_message("clock", Envelope(1, "clock", "marketdata", ts, "marketdata", 1,
                                            {"ts": ts, "finished": False, "market_origin": 0,
                                             "wall_origin": 0, "speed": 3600}))

    engine.on_bar(symbol_bar(bars, 30, "BTC/USDT", 1.0))
    assert (engine.cycle_count, engine.market_ts) == (cycles, base + 30 * HOUR)  # ETH's bar is still to come
    engine.on_bar(symbol_bar(bars, 30, "ETH/USDT", 0.05))
    assert (engine.cycle_count, engine.market_ts) == (cycles + 1, base + 31 * HOUR)
    assert engine.schedule.due_at["momentum-eth"] > base + 31 * HOUR  # decided at 31h, on bar 30
    clock(base + 31 * HOUR)
    assert engine.cycle_count == cycles + 1  # nothing left for the clock to decide

    engine.on_bar(symbol_bar(bars, 32, "ETH/USDT", 0.05))  # ETH skips bar 31: refetched, behind
    engine.on_bar(symbol_bar(bars, 31, "BTC/USDT", 1.0))
    assert engine.cycle_count == cycles + 1
    clock(base + 32 * HOUR)
    assert (engine.cycle_count, engine.market_ts) == (cycles + 2, base + 32 * HOUR)
