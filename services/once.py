"""``make once``: start the stack, run exactly one cycle of every strategy, print the summary,
stop everything with state saved (the seed's ``--once``).

marketdata and portfolio run as their real service processes; the signal engine runs its
cycle in this process with the same code the ``signals`` service uses.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import Any

from common.bus import RemoteError, RequestFailed
from common.config import load_config
from common.log import EventLog
from common.risk import iso_utc
from common.summary import format_summary
from services.runtime import DEFAULT_CONFIG, ServiceRuntime
from services.signals import SignalEngine

STARTUP_TIMEOUT_MS = 500
STARTUP_TRIES = 60


def spawn(service: str, config: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"services.{service}", "--config", config],
                            stdout=subprocess.DEVNULL, stderr=None)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_once(config: str) -> int:
    cfg = load_config(config)
    rt = ServiceRuntime("signals")
    rt.log = EventLog("signals", stream=sys.stderr, level="warning")  # stdout is the summary
    engine = SignalEngine(cfg, rt)
    try:
        engine.marketdata.request("status", timeout_ms=200, retries=1)
    except RequestFailed:
        pass
    else:
        print("once: a go-trader stack is already running on these endpoints; `make stop` first",
              file=sys.stderr)
        rt.close()
        return 2
    procs = [spawn("marketdata", config), spawn("portfolio", config)]
    try:
        status = engine.marketdata.request("status", timeout_ms=STARTUP_TIMEOUT_MS, retries=STARTUP_TRIES)
        engine.portfolio.request("status", timeout_ms=STARTUP_TIMEOUT_MS, retries=STARTUP_TRIES)
        rt.bind_publisher(cfg.endpoints["signals"].pub)
        engine.market_ts = status["market_ts"]
        engine.warm_up()
        decisions = engine.run_cycle([sc.id for sc in engine.spot])
        acks: list[dict[str, Any]] = engine.flush_outbox()
        if engine.outbox:
            print(f"once: {len(engine.outbox)} orders were not acknowledged", file=sys.stderr)
            return 1
        snapshot = engine.portfolio.request("snapshot")
    except (RequestFailed, RemoteError) as exc:
        print(f"once: {exc}", file=sys.stderr)
        return 1
    finally:
        stop(procs)
        rt.close()
    fills = [a["fill"] for a in acks if a.get("fill")]
    print(format_summary(snapshot, fills, title=f"go-trader cycle at {iso_utc(engine.market_ts)} (market time)"))
    print("Strategies:")
    for d in decisions:
        what = d.skipped if d.signal is None else {1: "BUY", -1: "SELL", 0: "hold"}[d.signal.signal]
        print(f"  {d.strategy_id}: {what}")
    for sid, st in engine.strategy_status.items():
        if st["status"].startswith("not yet"):
            print(f"  {sid}: {st['status']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="once", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("GO_TRADER_CONFIG") or DEFAULT_CONFIG)
    return run_once(parser.parse_args(argv).config)


if __name__ == "__main__":
    sys.exit(main())
