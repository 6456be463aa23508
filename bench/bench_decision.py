"""Per-strategy decision cost of the signal engine: where common/capacity.py's constants come from.

Spot: ``evaluate_spot`` for every spot strategy of config/default.json on 1,000 bars (the
engine's ``HISTORY_BARS``), pairs reading both legs. Options: what the engine spends on one
options strategy (services/signals.py ``evaluate_option_strategy``): a ``positions`` REQ/REP
round trip to a portfolio-like replier in another process, then ``evaluate_options`` on a
listed chain (built once per batch, as the engine asks the pricer once per underlying and
venue; that batch cost is measured as ``chain_request``: a REQ/REP round trip carrying a
serialized chain). Each figure is the median of several rounds, in milliseconds.

Run: ``python -m bench.bench_decision``.
"""
from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zmq

from common.bus import Replier, Requester
from common.config import load_config
from common.engine import HISTORY_BARS, evaluate_options, evaluate_spot, options_params
from common.ohlcv import OHLCV
from common.timeframes import timeframe_ms
from options.chain import build_chain
from options.risk import OptionsRiskLimits
from options.venues import venue_spec
from services.pricer import chain_to_dict

REPO = Path(__file__).resolve().parents[1]
NOW = 1_767_225_600_000  # 2026-01-01 00:00 UTC, on every timeframe's grid
SPOT_PRICES = {"BTC": 90_000.0, "ETH": 3_000.0, "SOL": 150.0}


def _bars(symbol: str, timeframe: str, seed: int) -> OHLCV:
    """A random walk of HISTORY_BARS closed bars ending at NOW."""
    rng = np.random.default_rng(seed)
    step = timeframe_ms(timeframe)
    close = SPOT_PRICES[symbol.split("/")[0]] * np.exp(np.cumsum(rng.normal(0, 0.01, HISTORY_BARS)))
    ts = NOW - step * np.arange(HISTORY_BARS, 0, -1)
    return OHLCV.from_rows([[int(t), c, c * 1.002, c * 0.998, c, 100.0] for t, c in zip(ts, close)])


def _median_ms(fn: Callable[[], Any], rounds: int, calls: int) -> float:
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - began) / calls * 1000)
    return statistics.median(samples)


def _serve(endpoint: str, replies: dict[str, Any]) -> None:
    """A replier in its own process, as the portfolio and pricer are."""
    ctx = zmq.Context()
    replier = Replier(ctx, endpoint, "bench", {kind: (lambda _body, r=reply: r) for kind, reply in replies.items()})
    while True:
        if replier.socket.poll(1000):
            replier.serve_pending()


def run(quick: bool = False) -> dict[str, float]:
    rounds = 3 if quick else 9
    cfg = load_config(REPO / "config" / "default.json")
    series: dict[tuple[str, str], OHLCV] = {}
    for i, key in enumerate(cfg.symbols_and_timeframes()):
        series[key] = _bars(*key, seed=i)

    def bars(symbol: str, timeframe: str) -> OHLCV:
        return series[(symbol, timeframe)]

    spot = {sc.id: _median_ms(lambda sc=sc: evaluate_spot(sc.id, sc.strategy, sc.symbol, sc.timeframe,
                                                          dict(sc.params), bars, NOW, sc.pair), rounds, 20)
            for sc in cfg.spot_strategies()}

    book = {"capital": 50_000.0, "cash": 50_000.0, "portfolio_value": 50_000.0, "peak_value": 50_000.0,
            "option_positions": [], "spot_quantity": 0.0, "spot_cost_basis": 0.0}
    chains = {(sc.underlying, sc.venue): build_chain(venue_spec(sc.venue), sc.underlying,
                                                     SPOT_PRICES[sc.underlying], NOW, 0.5, horizon_days=100)
              for sc in cfg.options_strategies()}
    endpoint = "ipc:///tmp/go-trader-bench-decision"
    server = multiprocessing.Process(target=_serve, daemon=True, args=(endpoint, {
        "positions": book, "chain": chain_to_dict(next(iter(chains.values())))}))
    server.start()
    ctx = zmq.Context()
    requester = Requester(ctx, endpoint, "bench", timeout_ms=2000, retries=1)
    try:
        requester.request("positions")  # connected before timing
        iv_history = np.linspace(0.4, 0.6, 14)

        def options_decision(sc: Any) -> None:
            reply = requester.request("positions", {"strategy_id": sc.id})
            evaluate_options(sc.id, sc.strategy, venue_spec(sc.venue), sc.underlying,
                             options_params(sc.strategy, sc.params, sc.theta_harvest),
                             bars(sc.symbol, sc.timeframe), sc.timeframe, NOW, chains[(sc.underlying, sc.venue)],
                             0.5, iv_history, reply, OptionsRiskLimits(max_drawdown_pct=sc.max_drawdown_pct), 0.3)

        options = {sc.id: _median_ms(lambda sc=sc: options_decision(sc), rounds, 10)
                   for sc in cfg.options_strategies()}
        positions_request = _median_ms(lambda: requester.request("positions"), rounds, 50)
        chain_request = _median_ms(lambda: requester.request("chain"), rounds, 10)
    finally:
        requester.close()
        ctx.term()
        server.kill()
        server.join()
    return {
        "spot_mean_ms": statistics.mean(spot.values()),
        "spot_max_ms": max(spot.values()),
        "spot_slowest": max(spot, key=spot.__getitem__),
        "options_mean_ms": statistics.mean(options.values()),
        "options_max_ms": max(options.values()),
        "options_slowest": max(options, key=options.__getitem__),
        "positions_request_ms": positions_request,
        "chain_request_ms": chain_request,
    }


if __name__ == "__main__":
    for name, value in run(quick="--quick" in sys.argv).items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
