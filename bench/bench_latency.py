"""Bar close -> signal published -> fill acknowledged, over the bus of a running stack.

Spot strategies (options decide on the chain's time, not on a bar). A tap subscribes to marketdata's ``bar.*``, the signal engine's ``signal.*`` and the
portfolio's ``fill.*`` on a fast sim. A signal is matched to the bar it decided on (same
symbol, timeframe and bar open time; the first signal per strategy and bar counts, later
cycles only repeat it), a spot fill to its order's bar through the order id
``<strategy>:<bar open>``. Latency is measured two ways: from the envelopes' ``ts`` (each
publisher's wall clock, whole ms) and from the tap's own ``perf_counter_ns`` on receipt (µs,
one clock, includes the tap's own queueing). The portfolio publishes a fill after it is
journaled and just before it acknowledges the order, so fill latency is the order's
acknowledgement time to within a send.

Run: ``python -m bench.bench_latency``.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from bench.harness import Row, percentile, running_stack, verdict

TARGET_P99_MS = 10.0
SPEED = 36_000


def _tap(stack: Any, seconds: float) -> dict[str, Any]:
    """Listen for ``seconds``; return the bars, first signals and spot fills seen, with both clocks."""
    import zmq

    from common.bus import Subscriber
    from common.config import load_config

    cfg = load_config(str(stack.config_path))
    security = stack.security()  # the stack's read-only key
    ctx = zmq.Context()
    subs = {
        "bar": Subscriber(ctx, [cfg.endpoints["marketdata"].pub], ["bar."], security=security),
        "signal": Subscriber(ctx, [cfg.endpoints["signals"].pub], ["signal."], security=security),
        "fill": Subscriber(ctx, [cfg.endpoints["portfolio"].pub], ["fill."], security=security),
    }
    poller = zmq.Poller()
    for sub in subs.values():
        poller.register(sub.socket, zmq.POLLIN)
    bars: dict[tuple[str, str, int], tuple[int, int]] = {}
    signals: dict[tuple[str, int], tuple[int, int, tuple[str, str, int]]] = {}
    fills: list[tuple[int, int, str, int]] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready = dict(poller.poll(100))
            for kind, sub in subs.items():
                while sub.socket in ready:
                    got = sub.receive(0)
                    received_ns = time.perf_counter_ns()
                    if got is None:
                        break
                    body = got[1].body
                    sent_ms = got[1].ts
                    if kind == "bar":
                        bars.setdefault((body["symbol"], body["timeframe"], body["ts_open"]), (sent_ms, received_ns))
                    elif kind == "signal" and got[1].type == "signal":  # spot; options_signal has no bar
                        signals.setdefault((body["strategy_id"], body["ts_bar"]),
                                           (sent_ms, received_ns, (body["symbol"], body["timeframe"], body["ts_bar"])))
                    elif kind == "fill" and body["kind"] == "spot":
                        strategy_id, ts_bar = body["order_id"].rsplit(":", 1)
                        fills.append((sent_ms, received_ns, strategy_id, int(ts_bar)))
        drops = {kind: sub.stats.to_dict() for kind, sub in subs.items()}
    finally:
        for sub in subs.values():
            sub.close()
        ctx.term()
    return {"bars": bars, "signals": signals, "fills": fills, "bus": drops}


def _latencies(tapped: dict[str, Any]) -> dict[str, list[float]]:
    bars, signals = tapped["bars"], tapped["signals"]
    out: dict[str, list[float]] = {"signal_env_ms": [], "signal_recv_ms": [], "fill_env_ms": [], "fill_recv_ms": [],
                                   "signal_to_fill_recv_ms": []}
    bar_of_signal: dict[tuple[str, int], tuple[str, str, int]] = {}
    for key, (sent_ms, received_ns, bar_key) in signals.items():
        bar = bars.get(bar_key)
        if bar is None:  # the bar closed before the tap joined
            continue
        bar_of_signal[key] = bar_key
        out["signal_env_ms"].append(sent_ms - bar[0])
        out["signal_recv_ms"].append((received_ns - bar[1]) / 1e6)
    for sent_ms, received_ns, strategy_id, ts_bar in tapped["fills"]:
        bar_key = bar_of_signal.get((strategy_id, ts_bar))
        if bar_key is None:
            continue
        bar = bars[bar_key]
        out["fill_env_ms"].append(sent_ms - bar[0])
        out["fill_recv_ms"].append((received_ns - bar[1]) / 1e6)
        out["signal_to_fill_recv_ms"].append((received_ns - signals[(strategy_id, ts_bar)][1]) / 1e6)
    return out


def run(quick: bool = False, stack: Any = None) -> dict[str, Any]:
    seconds = 4.0 if quick else 60.0
    with running_stack(stack, speed=SPEED) as running:
        running.wait_for(lambda: running.journal(), timeout=60, what="the first fill")
        tapped = _tap(running, seconds)
    lat = _latencies(tapped)
    result: dict[str, Any] = {"seconds": seconds, "speed": SPEED, "bars_seen": len(tapped["bars"]),
                              "signals_matched": len(lat["signal_env_ms"]), "fills_matched": len(lat["fill_env_ms"]),
                              "tap_seq_gaps": sum(sum(b["missed"].values()) for b in tapped["bus"].values())}
    for name, values in lat.items():
        result[f"{name}_p50"] = percentile(values, 50)
        result[f"{name}_p99"] = percentile(values, 99)
        result[f"{name}_max"] = max(values, default=float("nan"))
    return result


def report(r: dict[str, Any]) -> list[Row]:
    def span(name: str) -> str:
        return f"{r[f'{name}_p50']:.2f} / {r[f'{name}_p99']:.2f} / {r[f'{name}_max']:.2f} ms"

    fill_p99 = max(r["fill_env_ms_p99"], r["fill_recv_ms_p99"])
    return [
        (f"bar -> signal, envelope ts (p50 / p99 / max, {r['signals_matched']} signals)", span("signal_env_ms"),
         "", ""),
        ("bar -> signal, tap receipt clock", span("signal_recv_ms"), "", ""),
        (f"bar -> fill acknowledged, envelope ts ({r['fills_matched']} fills)", span("fill_env_ms"),
         f"p99 < {TARGET_P99_MS:g} ms", verdict(r["fill_env_ms_p99"] < TARGET_P99_MS)),
        ("bar -> fill acknowledged, tap receipt clock", span("fill_recv_ms"), f"p99 < {TARGET_P99_MS:g} ms",
         verdict(fill_p99 < TARGET_P99_MS)),
        ("signal -> fill, tap receipt clock", span("signal_to_fill_recv_ms"), "", ""),
        (f"sim speed {r['speed']:,}x for {r['seconds']:g} s wall: bars seen / sequence gaps the tap counted "
         "(seq is per publisher, so topics the tap filters out count as gaps: not losses)",
         f"{r['bars_seen']} / {r['tap_seq_gaps']}", "", ""),
    ]


if __name__ == "__main__":
    for row in report(run(quick="--quick" in sys.argv)):
        print(" | ".join(row))
