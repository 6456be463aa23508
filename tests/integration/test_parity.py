"""Parity: the same CSV bars through the replay feed and the five services, and through the
backtester, give identical fills (time, side, size, price) for a set of spot strategies, even
across a stall of marketdata (its clock moves on; no close is skipped)."""
from __future__ import annotations

import threading

import pytest
import zmq

from backtest.spot import run_spot_backtest
from common.bus import Subscriber
from common.bus_auth import BusSecurity
from common.csv_bars import load_ohlcv_csv, write_ohlcv_csv
from common.timeframes import timeframe_ms
from tests.support.stack import Stack, stack_config
from trading.portfolio import journal_fills

pytestmark = pytest.mark.timeout(300)

STRATEGIES = {
    "sma-btc": ("sma_crossover", {"fast": 10, "slow": 30}),
    "ema-btc": ("ema_crossover", {}),
    "momentum-btc": ("momentum", {"period": 12, "threshold": 2.0}),
    "macd-btc": ("macd", {}),
}
WARMUP_BARS = 500  # the replay feed's default warm-up
TRADING_BARS = 400
HOUR = timeframe_ms("1h")


class SignalTap(threading.Thread):
    """Records which bars each strategy was evaluated on, from the public signal stream."""

    def __init__(self, endpoint: str, security: BusSecurity) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.security = security
        self.bars: dict[str, set[int]] = {sid: set() for sid in STRATEGIES}
        self.stop_event = threading.Event()

    def run(self) -> None:
        ctx = zmq.Context()
        sub = Subscriber(ctx, [self.endpoint], ["signal."], security=self.security)
        while not self.stop_event.is_set():
            got = sub.receive(100)
            if got is not None:
                body = got[1].body
                self.bars[body["strategy_id"]].add(body["ts_bar"])
        sub.close()
        ctx.term()


def test_replay_through_the_services_fills_exactly_as_the_backtester(tmp_path, shared_data):
    real = load_ohlcv_csv(shared_data / "ohlcv" / "binanceus" / "BTC_USDT-1h.csv")
    start = int(real.ts.searchsorted(1_620_000_000_000))  # May 2021: a market that moves
    bars = real.slice(start, start + WARMUP_BARS + TRADING_BARS)
    csv = tmp_path / "BTC_USDT-1h.csv"
    write_ohlcv_csv(csv, bars)

    base = {
        "fee_pct": 0.1,
        "feed": {"mode": "replay", "symbols": ["BTC/USDT"],
                 "replay": {"files": {"BTC/USDT": str(csv)}, "timeframe": "1h"}},
        "strategies": [
            {"id": sid, "type": "spot", "strategy": name, "symbol": "BTC/USDT", "timeframe": "1h", "params": params,
             "capital": 1000, "max_drawdown_pct": 100, "interval_seconds": 300}
            for sid, (name, params) in STRATEGIES.items()
        ],
    }
    cfg = stack_config(base, speed=36_000)  # a bar every 100 ms: the incremental engine keeps up
    stack = Stack(tmp_path / "stack", cfg)
    tap = SignalTap(cfg["endpoints"]["signals"]["pub"], stack.security())
    tap.start()
    with stack:
        stack.wait_for(lambda: len(tap.bars["sma-btc"]) >= 100, 100, "100 bars decided")
        stack.freeze("marketdata", 0.75)  # 7.5 bar periods: its missed closes still come one by one
        stack.wait_for(lambda: stack.http("/healthz")[1]["feed"].get("finished"), 200, "the replay to finish")
        stack.wait_for(lambda: stack.status()["market_ts"] is not None, 10, "a final snapshot")
        assert stack.http("/healthz")[1]["feed"]["clock_slips"] >= 1, "the stall did not stall marketdata"
    tap.stop_event.set()
    tap.join()
    fills = journal_fills(stack.journal())

    last_bar = int(bars.ts[-1])
    for sid, (name, params) in STRATEGIES.items():
        evaluated = sorted(tap.bars[sid])
        assert evaluated, f"{sid} published no signal"
        first = evaluated[0]
        expected_bars = set(range(first, last_bar + HOUR, HOUR)) & set(bars.ts.tolist())
        missed = expected_bars - set(evaluated)
        assert not missed, f"{sid}: the engine skipped {len(missed)} bars, parity would be meaningless"
        result = run_spot_backtest(sid, name, "BTC/USDT", "1h", bars, params, capital=1000, fee_pct=0.1,
                                   trade_from_ms=first)
        service = [(f.ts_event, f.side, f.quantity, f.price) for f in fills if f.strategy_id == sid]
        backtest = [(f.ts_event, f.side, f.quantity, f.price) for f in result.fills]
        assert service, f"{sid} made no trades: pick a livelier window"
        assert len(service) == len(backtest), (sid, service[:3], backtest[:3])
        for got, want in zip(service, backtest):
            assert got[:2] == want[:2], sid
            assert got[2] == pytest.approx(want[2], rel=1e-12) and got[3] == pytest.approx(want[3], rel=1e-12), sid
