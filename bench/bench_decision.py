"""Per-strategy cost of the signal engine's decisions: where config/capacity.py's constants come from.

The signal service's own ``SignalEngine`` (services/signals.py) runs in this process on the
strategies of config/default.json, with 1,000 bars per series (the engine's ``HISTORY_BARS``)
already in its stores, against a stand-in portfolio and pricer in another process (as the real
ones are) that answer ``positions``, ``orders`` (and ``order``, ``option_order``), ``chain`` and ``iv``. Spot:
``run_cycle`` over the 14 spot strategies (decide, publish each signal, send the orders of the
first cycle), divided by 14. Options: ``queue_options`` + ``decide_pending_options`` +
``flush_outbox`` over the 20 options strategies (one chain and IV request per underlying and
venue, a ``positions`` request per strategy, decide, score, risk, publish, send its orders),
divided by 20. A bare REQ/REP ``chain`` round trip is timed on its own too. Medians of several
rounds, in milliseconds. Bar upkeep (one append per closed bar) is not part of a decision.

Run: ``python -m bench.bench_decision``.
"""
from __future__ import annotations

import io
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zmq

from common.bars import BarStore
from common.bus import Replier
from common.bus_auth import generate_keys
from common.ohlcv import OHLCV
from common.timeframes import timeframe_ms
from config.settings import Config, parse_config
from options.iv_history import DEFAULT_IV_RANK_DAYS
from services.runtime import bus_security
from trading.engine import HISTORY_BARS

REPO = Path(__file__).resolve().parents[1]
NOW = 1_767_225_600_000  # 2026-01-01 00:00 UTC, on every timeframe's grid
SPOT_PRICES = {"BTC": 90_000.0, "ETH": 3_000.0, "SOL": 150.0}
BOOK = {"strategy_id": "bench", "ts": NOW, "capital": 50_000.0, "cash": 50_000.0, "portfolio_value": 50_000.0,
        "peak_value": 50_000.0, "option_positions": [], "spot_quantity": 0.0, "spot_cost_basis": 0.0}


def _bars(symbol: str, timeframe: str, seed: int) -> OHLCV:
    """A random walk of HISTORY_BARS closed bars, the last one closing at NOW."""
    rng = np.random.default_rng(seed)
    step = timeframe_ms(timeframe)
    close = SPOT_PRICES[symbol.split("/")[0]] * np.exp(np.cumsum(rng.normal(0, 0.01, HISTORY_BARS)))
    ts = NOW - step * np.arange(HISTORY_BARS, 0, -1)
    return OHLCV.from_rows([[int(t), c, c * 1.002, c * 0.998, c, 100.0] for t, c in zip(ts, close)])


def _serve(ipc_dir: str) -> None:
    """The portfolio and the pricer as the engine sees them, in their own process, each on its
    own endpoint with its own bus key (the engine pins both)."""
    from options.chain import build_chain, chain_to_dict
    from options.venues import venue_spec

    chains = {(u, v): chain_to_dict(build_chain(venue_spec(v), u, SPOT_PRICES[u], NOW, 0.5, horizon_days=100))
              for u in ("BTC", "ETH") for v in ("deribit", "ibkr")}
    iv = {"atm_iv": 0.5, "history": list(np.linspace(0.4, 0.6, DEFAULT_IV_RANK_DAYS))}
    ack = {"status": "filled", "reason": "bench"}
    handlers: dict[str, Callable[[Any], Any]] = {
        "positions": lambda _body: BOOK, "order": lambda _body: ack, "option_order": lambda _body: ack,
        "orders": lambda body: {"acks": [ack] * len(body["orders"])},
        "positions_batch": lambda body: {"books": dict.fromkeys(body["strategy_ids"], BOOK)},
        "iv": lambda _body: iv, "chain": lambda body: chains[(body["underlying"], body["venue"])],
    }
    cfg = _config(ipc_dir)
    ctx = zmq.Context()
    repliers = [Replier(ctx, cfg.endpoints[name].rep, "bench", handlers, security=bus_security(cfg, name))
                for name in ("portfolio", "pricer")]
    poller = zmq.Poller()
    for replier in repliers:
        poller.register(replier.socket, zmq.POLLIN)
    while True:
        ready = dict(poller.poll(1000))
        for replier in repliers:
            if replier.socket in ready:
                replier.serve_pending()


def _config(ipc_dir: str) -> Config:
    """config/default.json on ipc endpoints in ``ipc_dir``; the stand-in answers portfolio and pricer."""
    raw = json.loads((REPO / "config" / "default.json").read_text())
    raw["endpoints"] = {name: {"pub": f"ipc://{ipc_dir}/{name}-pub", "rep": f"ipc://{ipc_dir}/{name}-rep"}
                        for name in ("marketdata", "signals", "portfolio", "pricer")}
    raw["feed"]["speed"] = 1  # a config the capacity check accepts whatever these constants say
    raw["bus"] = {"keys_dir": f"{ipc_dir}/keys"}
    return parse_config(raw, "bench")


def _median_ms(fn: Callable[[], int], rounds: int) -> float:
    """Median over ``rounds`` of the milliseconds per strategy of one call of ``fn`` (which
    returns how many strategies it decided)."""
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        count = fn()
        samples.append((time.perf_counter() - began) / count * 1000)
    return statistics.median(samples)


def run(quick: bool = False) -> dict[str, float]:
    import services.signals as signals
    from services.runtime import ServiceRuntime

    rounds = 5 if quick else 21
    with tempfile.TemporaryDirectory(prefix="go-trader-bench-decision-") as ipc_dir:
        cfg = _config(ipc_dir)
        generate_keys(cfg.bus.keys_dir)
        server = multiprocessing.get_context("spawn").Process(target=_serve, args=(ipc_dir,), daemon=True)
        server.start()
        rt = ServiceRuntime("signals-bench", bus_security(cfg, "signals"))
        rt.log.stream = io.StringIO()  # the engine's log lines are not the benchmark's output
        try:
            rt.bind_publisher(cfg.endpoints["signals"].pub)
            engine = signals.SignalEngine(cfg, rt)
            for i, (symbol, timeframe) in enumerate(sorted(engine.needs_warmup)):
                store = BarStore(capacity=HISTORY_BARS)
                store.append(symbol, timeframe, _bars(symbol, timeframe, seed=i))
                engine.stores[(symbol, timeframe)] = store
            engine.needs_warmup = set()
            engine.market_ts = NOW
            engine.portfolio.request("positions", timeout_ms=30_000)  # the stand-in is up and connected
            spot_ids = [sc.id for sc in engine.spot]
            options_ids = [sc.id for sc in engine.options]

            def spot_cycle() -> int:
                engine.run_cycle(spot_ids)
                engine.flush_outbox()
                return len(spot_ids)

            def options_cycle() -> int:
                engine.queue_options(options_ids)
                engine.decide_pending_options()
                engine.flush_outbox()
                return len(options_ids)

            def chain_request() -> int:
                engine.pricer.request("chain", {"underlying": "BTC", "venue": "deribit"})
                return 1

            spot_ms = _median_ms(spot_cycle, rounds)
            options_ms = _median_ms(options_cycle, rounds)
            chain_ms = _median_ms(chain_request, rounds * 5)
            acked = engine.orders_acked
        finally:
            rt.close()
            server.kill()
            server.join()
    return {"spot_strategies": len(spot_ids), "options_strategies": len(options_ids), "orders_acked": acked,
            "spot_decision_ms": spot_ms, "options_decision_ms": options_ms, "chain_request_ms": chain_ms}


if __name__ == "__main__":
    for name, value in run(quick="--quick" in sys.argv).items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
