"""``make once``: start the stack, run exactly one cycle of every strategy, print the summary,
stop everything with state saved (the seed's ``--once``).

marketdata, portfolio and pricer run as their real service processes; the strategies of every
signal engine run their cycle in this process with the same code the engines (``services.signals``)
use, and the signals key. The bus keys are created first if the key directory lacks them.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from common.bus import RemoteError, RequestFailed
from common.bus_auth import BusKeysError, generate_keys
from common.log import EventLog
from config.settings import load_config
from services.runtime import DEFAULT_CONFIG, ServiceRuntime, bus_security
from services.signals import SignalEngine
from services.views.summary import format_summary
from trading.risk import iso_utc

SERVICES = ("marketdata", "portfolio", "pricer")
STARTUP_TIMEOUT_MS = 500
STARTUP_TRIES = 60
ORDERS_SETTLE_SECONDS = 15.0  # how long the cycle's orders are resent while the portfolio says 'retry'


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
    try:
        generate_keys(cfg.bus.keys_dir)
        security = bus_security(cfg, "signals")
    except (BusKeysError, OSError) as exc:
        print(f"once: {exc}", file=sys.stderr)
        return 2
    rt = ServiceRuntime("signals", security)
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
    procs = [spawn(name, config) for name in SERVICES]
    try:
        status = engine.marketdata.request("status", timeout_ms=STARTUP_TIMEOUT_MS, retries=STARTUP_TRIES)
        start_seq = engine.portfolio.request("status", timeout_ms=STARTUP_TIMEOUT_MS,
                                             retries=STARTUP_TRIES)["journal_seq"]
        wait_for_spot_prices(engine, {sc.underlying for sc in cfg.options_strategies()})
        rt.bind_publisher(cfg.endpoints["signals"].pub)
        engine.market_ts = status["market_ts"]
        engine.warm_up()
        decisions = {d.strategy_id: d for d in engine.run_cycle([sc.id for sc in cfg.strategies])}
        engine.decide_pending_options()
        engine.scripts.wait_all()  # user scripts answer off the loop in the service; here we wait for them
        engine.collect_scripts()
        settle_orders(engine, ORDERS_SETTLE_SECONDS)
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
    fills = sorted((t for view in snapshot["strategies"].values() for t in view["recent_trades"]
                    if t["seq"] > start_seq), key=lambda t: t["seq"])
    print(format_summary(snapshot, fills, title=f"go-trader cycle at {iso_utc(engine.market_ts)} (market time)"))
    print("Strategies:")
    for sc in cfg.strategies:
        d = decisions.get(sc.id)
        if d is not None and d.signal is not None:
            what = {1: "BUY", -1: "SELL", 0: "hold"}[d.signal.signal]
        else:
            st = engine.strategy_status.get(sc.id, {})
            what = f"{st['actions']} action(s)" if "actions" in st else st.get("status", "not run")
        print(f"  {sc.id}: {what}")
    return 0


def settle_orders(engine: SignalEngine, seconds: float) -> None:
    """Send the outbox until the portfolio has answered every order for good, or ``seconds``
    pass. A transient refusal (``retry``: a portfolio just started may not have the order's
    tick yet) is resent after its backoff, as the engine's loop resends it in the service."""
    deadline = time.monotonic() + seconds
    while True:
        wait = engine.resend_when_due()  # sends once the backoff is over; the seconds until it is due again
        left = deadline - time.monotonic()
        if not engine.outbox or left <= 0:
            return
        time.sleep(min(wait, left))


def wait_for_spot_prices(engine: SignalEngine, underlyings: set[str]) -> None:
    """The pricer learns spot from the feed's ticks; options wait until it has every underlying."""
    for _ in range(STARTUP_TRIES):
        known = engine.pricer.request("status", timeout_ms=STARTUP_TIMEOUT_MS, retries=STARTUP_TRIES)["spot"]
        if underlyings <= set(known):
            return
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="once", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("GO_TRADER_CONFIG") or DEFAULT_CONFIG)
    return run_once(parser.parse_args(argv).config)


if __name__ == "__main__":
    sys.exit(main())
