"""The README's user strategy (examples/breakout.py) in a live stack: configured through
``strategies_dir``, it publishes signals and trades beside a built-in and a seed-style script,
/status shows its decisions, and it passes check-lookahead."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import msgpack
import pytest
import zmq

from common.csv_bars import load_ohlcv_csv, write_ohlcv_csv
from tests.support.stack import REPO, Stack, stack_config

pytestmark = pytest.mark.timeout(180)

BTC = REPO.parent / "shared" / "data" / "ohlcv" / "binance" / "BTC_USDT-1h.csv"
SCRIPT = ("import json, sys\n"
          "print(json.dumps({'strategy': sys.argv[1], 'symbol': sys.argv[2], 'timeframe': sys.argv[3], "
          "'signal': 0, 'price': 1.0, 'indicators': {}, 'timestamp': 0}))\n")


def user_config(tmp_path) -> dict:
    (tmp_path / "check_hold.py").write_text(SCRIPT)
    spot = {"type": "spot", "symbol": "BTC/USDT", "timeframe": "1h", "capital": 1000, "max_drawdown_pct": 90}
    return stack_config({
        "strategies_dir": str(REPO / "examples"),
        "feed": {"symbols": ["BTC/USDT"], "timeframes": ["1h"]},
        "strategies": [
            {**spot, "id": "breakout-btc", "strategy": "breakout:breakout", "params": {"lookback": 10}},
            {**spot, "id": "momentum-btc", "strategy": "momentum"},
            {"id": "hold-btc", "script": str(tmp_path / "check_hold.py"), "args": ["hold", "BTC/USDT", "1h"],
             "capital": 1000, "max_drawdown_pct": 90, "interval_seconds": 3600},
        ],
    })


def test_the_readme_strategy_trades_in_a_live_stack_and_passes_check_lookahead(tmp_path):
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        with Stack(tmp_path, user_config(tmp_path)) as stack:
            stack.security().connect(sub, stack.config["endpoints"]["signals"]["pub"])
            sub.setsockopt(zmq.SUBSCRIBE, b"signal.breakout-btc")
            got = []
            while len(got) < 5:
                assert sub.poll(30_000), f"no signal from breakout-btc in 30 s; logs:\n{stack.logs_tail()}"
                got.append(msgpack.unpackb(sub.recv_multipart()[1])["body"])
            assert {s["strategy"] for s in got} == {"breakout:breakout"}
            assert all(s["signal"] in (-1, 0, 1) and s["symbol"] == "BTC/USDT" for s in got)

            def decided() -> dict | None:
                strategies = stack.status()["strategies"]
                done = {sid: strategies[sid]["last_decision"] for sid in ("breakout-btc", "momentum-btc", "hold-btc")}
                return done if all(d["decision"] in ("buy", "sell", "hold") for d in done.values()) else None

            decisions = stack.wait_for(decided, timeout=60, what="every strategy deciding")
            assert decisions["hold-btc"]["reason"] == "hold says hold at 1"
            stack.wait_for(lambda: any(f.get("strategy_id") == "breakout-btc" for f in stack.journal()),
                           timeout=90, what="a breakout-btc fill in the journal")
    finally:
        sub.close()
        ctx.term()
    if not BTC.is_file():
        pytest.skip(f"{BTC} is not present (../shared/data)")
    csv = tmp_path / "btc.csv"
    write_ohlcv_csv(csv, load_ohlcv_csv(BTC).tail(400))
    check = subprocess.run([sys.executable, "-m", "backtest.lookahead", "breakout:breakout", "--csv", str(csv)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'examples'}"})
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert (report["lookahead"], report["prefixes_checked"]) == (False, 399)
