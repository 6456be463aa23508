"""User strategies in the signal engine: a function decides like a built-in, a script answers off
the loop, and a broken one is counted, logged once per cause and shown, never stopping the rest."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest

from bench.ports import tcp_endpoint
from common.log import EventLog
from common.ohlcv import OHLCV
from config.settings import parse_config
from services.runtime import ServiceRuntime
from services.signals import SignalEngine
from tests.support import user_strategies
from tests.support.builders import log_events
from tests.support.stack import stack_config, stack_security

HOUR = 3_600_000
CLOSES = np.r_[np.linspace(100, 120, 60), np.linspace(119, 90, 40)]
BARS = OHLCV.from_rows([[i * HOUR, c, c + 0.5, c - 0.5, c, 10.0] for i, c in enumerate(CLOSES)])


def entry(sid: str, strategy: str, **extra) -> dict:
    return {"id": sid, "type": "spot", "strategy": strategy, "symbol": "BTC/USDT", "timeframe": "1h",
            "capital": 1000, "max_drawdown_pct": 90, "interval_seconds": 3600, **extra}


class History:
    def request(self, kind: str, body: dict) -> dict:
        return {"rows": BARS.slice(0, 80).tail(body["limit"]).rows()}


@pytest.fixture()
def engine(tmp_path):
    (tmp_path / "check_mine.py").write_text(
        "import json, sys\nprint(json.dumps({'strategy': sys.argv[1], 'symbol': sys.argv[2], 'timeframe': sys.argv[3], "
        "'signal': 1, 'price': 123.5, 'indicators': {'k': 2}}))\n")
    (tmp_path / "check_bad.py").write_text("print('not json')\n")
    raw = stack_config({"strategies": [
        entry("mine", "tests.support.user_strategies:breakout", params={"lookback": 5}),
        entry("builtin", "momentum"),
        entry("explodes", "tests.support.user_strategies:explodes"),
        entry("typo", "tests.support.user_strategies:breakout", params={"lookbak": 5}),
        {**entry("script", ""), "strategy": None, "script": "check_mine.py", "args": ["mine", "BTC/USDT", "1h"]},
        {**entry("badscript", ""), "strategy": None, "script": "check_bad.py", "args": ["bad", "BTC/USDT", "1h"]},
    ]})
    for e in raw["strategies"]:
        if e.get("script"):
            del e["strategy"], e["symbol"], e["timeframe"], e["type"]
    rt = ServiceRuntime("signals-test", stack_security(raw, tmp_path, "signals"))
    rt.log = EventLog("signals", stream=io.StringIO())
    try:
        rt.bind_publisher(tcp_endpoint())
        built = SignalEngine(parse_config(raw, base_dir=tmp_path), rt)
        built.portfolio_retry_at = time.monotonic() + 600  # orders wait in the outbox: no portfolio here
        built.marketdata = History()
        yield built
        built.scripts.close()
    finally:
        rt.close()


def events(engine, name: str) -> list[dict]:
    return log_events(engine.rt.log.stream.getvalue(), name)


def run_hours(engine, hours: range) -> None:
    for hour in hours:
        if hour > 79:
            engine.keep_bar({"symbol": "BTC/USDT", "timeframe": "1h", "ts_open": (hour - 1) * HOUR,
                             **dict(zip(("open", "high", "low", "close", "volume"), BARS.rows()[hour - 1][1:]))})
        engine.market_ts = hour * HOUR
        engine.run_due()


def wait_for_scripts(engine) -> None:
    deadline = time.monotonic() + 20
    while engine.scripts.running:
        assert time.monotonic() < deadline, engine.strategy_status
        time.sleep(0.02)
        engine.collect_scripts()


def test_user_functions_and_scripts_trade_beside_the_builtins_and_failures_stay_contained(engine):
    assert sorted(sc.id for sc in engine.spot) == ["badscript", "builtin", "explodes", "mine", "script"]
    run_hours(engine, range(80, 90))
    wait_for_scripts(engine)
    assert engine.strategy_status["script"]["reason"].startswith("stale BTC/USDT data")  # answered bars late
    run_hours(engine, range(90, 91))
    wait_for_scripts(engine)
    status = engine.strategy_status
    # the user function decided on the newest bar exactly as the backtester's registry does
    want = user_strategies.breakout(BARS.slice(0, 90), lookback=5)[-1]
    assert status["mine"]["ts"] == 90 * HOUR and status["mine"]["signal"] == int(want) == -1
    assert status["builtin"]["status"] == "ok"
    assert status["script"]["signal"] == 1 and status["script"]["decision"] == "buy"
    assert status["script"]["reason"] == "mine says buy at 123.5"  # args[0] labels the signal
    # failures: counted on every run, shown in /status, logged once per cause
    assert status["explodes"]["decision"] == "error" and status["explodes"]["failures"] == 11
    assert "ZeroDivisionError: bad bar" in status["explodes"]["reason"]
    assert status["typo"] == {"status": status["typo"]["status"], "ts": 0, "decision": "error", "failures": 1,
                              "reason": status["typo"]["reason"]}
    assert "unknown parameter 'lookbak'" in status["typo"]["reason"]
    assert status["badscript"]["decision"] == "error" and "check_bad.py: last line is not JSON" in \
        status["badscript"]["reason"]
    failed = [(r["strategy"], r["failures"]) for r in events(engine, "strategy_failed")]
    assert failed.count(("explodes", 1)) == 1 and [f for f in failed if f[0] == "explodes"] == [("explodes", 1)]
    assert ("typo", 1) in failed and [f[0] for f in failed].count("badscript") == 1
    assert {o.strategy_id for o in engine.outbox.values()} >= {"mine", "script"}


def test_each_cycle_logs_one_line_with_values_per_category_and_trades(engine):
    from common.bus import Envelope
    from tests.services.views.test_discord import known_status

    def envelope(type_: str, body: dict) -> Envelope:
        return Envelope(1, type_, "id", 0, "portfolio", 1, body)

    engine.on_message("portfolio.totals", envelope("totals", {"totals": known_status()["totals"]}))
    engine.on_message("fill.mine", envelope("fill", {"seq": 1}))
    engine.on_message("fill.mine", envelope("fill", {"seq": 2}))
    engine.on_message("portfolio.totals", envelope("totals", {"totals": "garbage"}))  # ignored
    run_hours(engine, range(80, 82))
    first, second = events(engine, "cycle")
    assert {k: first[k] for k in ("cycle", "spot_value", "spot_pnl", "deribit_value", "ibkr_pnl", "total_value",
                                  "total_pnl", "trades")} == {
        "cycle": 1, "spot_value": 2050.0, "spot_pnl": 50.0, "deribit_value": 1050.0, "ibkr_pnl": -100.0,
        "total_value": 5000.0, "total_pnl": 0.0, "trades": 2}
    assert second["trades"] == 0  # counted since the previous line
