"""Bar close -> fill acknowledged, measured from the bar's close in market time.

Marketdata's clock message carries the clock's mapping (``market_origin``, ``wall_origin``,
``speed``), so a bar closing at market time ``ts_close`` was due at wall time
``wall_origin + (ts_close - market_origin) / speed``. The fill ack is the portfolio's answer as
the engine that sent the order receives it: the engine publishes each final answer on
``ack.<strategy_id>`` with the wall times it sent the request (``sent_ms``) and received the
answer (``acked_ms``), read on the machine's one clock. A tap in a process of its own subscribes
to ``bar.*``, ``clock``, ``signal.*``, ``ack.*`` and ``fill.*`` and stamps every message with its
wall clock (``common.wall.wall_ms``) on receipt; with ``cpu.split_cores`` it runs on the cores off
the fill path, where the gateway, the stack's own observer, runs. For each spot order (id ``<strategy>:<bar open>``)
answered ``filled`` on a bar it saw published, it records:

- close -> ack, the total: ``acked_ms`` minus the close's wall time;
- its parts: close -> ``sent_ms`` (marketdata publishing the bar, the engine deciding) and
  ``sent_ms`` -> ``acked_ms`` (the portfolio deciding, the journal's fsync, booking, the reply);
- close -> bar received by the tap (marketdata's lateness, plus the tap's own receive delay);
- close -> fill received by the tap: the portfolio publishes a fill 2 ms after it has answered
  the order (journaled and booked before; portfolio.FILL_REPORT_DELAY_SECONDS); the fill
  publication stood for the ack before the acks were published. The same from the fill
  envelope's ``ts`` (the portfolio's clock, whole ms) is reported beside it;
- bar -> signal: the strategy's signal on that bar minus the bar's receipt. An engine publishes
  a cycle's signals once its orders are answered, so this comes after the ack;
- the order requests that reached the portfolio before their bar's tick and waited for it (its
  ``orders_ahead_of_tick``, from the heartbeats the tap hears): marketdata sends a close's ticks
  before its bars, so that this stays near zero.

Beside the running stack it measures the machine's floor: an fsync'd journal append, how late a
wake-up comes, and the same path with nothing of go-trader's in it (bench/bare_path.py: a feed,
an engine and a book process on CURVE loopback TCP, with the fsync), and reports close -> ack
over that bare path's. Each floor is taken twice: hot, one close every 10 ms, and at a pace
nearer the stack's, one every 100 ms (the stack closes once a second at 3,600x, and its
processes wake every 50 ms for ticks). On this VM the paced bare path's median came out 1.5 to
2.3 times the hot one's (bench/RESULTS.md): an fsync after a tenth of a second of idle disk, and
idle processes woken, cost that much more. The paced bare path is the floor the stack's figures
compare with.

Load: config/default.json (34 strategies) plus 30 PROBES (cheap SMA crossovers and momentum) on the default 1h bars,
which trade every few bars, so MIN_FILLS fills arrive within minutes at the default 3,600x. A
close's fills (every symbol's bar closing then) are decided together, sent in one ``orders``
request and journaled with one fsync, so they are answered together: the fills are far fewer
independent samples than their count (about one per close), and the report says how many closes
they came from, each close's close -> last ack, and that latency for light and heavy closes
(``by_load``): the heaviest closes carry many fills each, so they set the p99 over fills. One
stack per speed (3,600x, then 36,000x), then three more at 3,600x: one with ``cpu.background_idle``
on (the pricer and the options engine under SCHED_IDLE; off by default), one with
``cpu.split_cores`` off (every service on every core) and one with ``bus.local_ipc`` off (tcp
between the services): the same-run references for those two defaults. The target is judged
on the default. Each stack's tap starts after ``os.sync()``: no earlier step's writeback lands on
its fsyncs. The machine may be shared: the 1-minute load average at the start and end of
each run, and the share of CPU time the VM's host took while the tap listened (steal time, from
/proc/stat), are reported with the figures.

Run: ``python -m bench.bench_latency [--quick] [--speeds 3600,36000] [--fills N]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bare_path
from bench.harness import Row, cpu_ticks, percentile, running_stack, stolen_pct, verdict
from common.timeframes import timeframe_ms
from common.wall import wall_ms

REPO = Path(__file__).resolve().parents[1]
SPEEDS = (3_600, 36_000)
TARGET_P99_MS = 5.0  # bar close -> fill ack, at the default 3,600x
TARGET_SPEED = 3_600
MIN_FILLS = 1_000
QUICK_FILLS = 20
TAP_LIMIT_S = 600.0  # a run that cannot collect its fills in this long reports what it has
QUICK_LIMIT_S = 20.0
FLOOR_SAMPLES = 300
PACED_SPACING_S = 0.1  # the floors again at about the stack's pace (see the module docstring)
PACED_SAMPLES = 100
QUICK_PACED_SAMPLES = 10
WAKE_AHEAD_S = 0.002
# Cheap (vectorized) strategies that trade every two to four 1h bars on the sim.
PROBES = tuple(("sma_crossover", {"fast": fast, "slow": slow})
               for fast, slow in ((1, 2), (1, 3), (2, 3), (1, 4), (2, 4))) \
    + tuple(("momentum", {"period": period, "threshold": threshold})
            for period, threshold in ((1, 0.1), (1, 0.2), (2, 0.2), (1, 0.3), (2, 0.1)))
# The target speed again with one setting changed: SCHED_IDLE off the path (for a host of its
# own), then the same-run references of two defaults that claim a gain: the fill path's cores not
# split, and the bus on its tcp ports alone (no local aliases).
VARIANTS: tuple[dict[str, Any], ...] = ({"cpu.background_idle": True}, {"cpu.split_cores": False},
                                        {"bus.local_ipc": False})
COMPARED = ("cpu.split_cores", "bus.local_ipc")  # on by default: the default's run over the run with it off
SPANS = ("close_to_ack", "close_to_bar", "close_to_sent", "sent_to_ack", "close_to_fill", "close_to_fill_env",
         "bar_to_signal")


def bench_config() -> dict[str, Any]:
    """config/default.json plus PROBES on every symbol (1h bars, decided at each close)."""
    cfg = json.loads((REPO / "config" / "default.json").read_text())
    cfg["strategies"] += [
        {"id": f"probe-{symbol.split('/')[0].lower()}-{i}", "type": "spot", "strategy": strategy, "symbol": symbol,
         "timeframe": "1h", "capital": 1000, "max_drawdown_pct": 60, "interval_seconds": 3600, "params": params}
        for symbol in cfg["feed"]["symbols"] for i, (strategy, params) in enumerate(PROBES)
    ]
    return cfg


# --- the tap (its own process) -----------------------------------------------------------------
def tap(config_path: str, want_fills: int, limit_s: float) -> dict[str, Any]:
    """Listen until ``want_fills`` spot orders on bars seen published are acknowledged as filled
    (or ``limit_s``)."""
    import zmq

    from common.bus import Subscriber
    from common.bus_auth import READER
    from common.clock import MarketClock
    from config.settings import load_config
    from services.runtime import bus_security, service_cores

    cfg = load_config(config_path)
    off_path = service_cores(cfg.cpu, fill_path=False)
    if off_path is not None:  # an observer, as the gateway is: on its cores, before zmq starts its threads
        os.sched_setaffinity(0, off_path)
    security = bus_security(cfg, READER)  # the stack's read-only key
    spot = {sc.id: (sc.symbol, sc.timeframe) for sc in cfg.spot_strategies()}
    ctx = zmq.Context()
    subs = [Subscriber(ctx, [cfg.endpoints["marketdata"].pub], ["bar.", "clock"], security=security),
            Subscriber(ctx, [e.pub for e in cfg.engines], ["signal.", "ack."], security=security),
            Subscriber(ctx, [cfg.endpoints["portfolio"].pub], ["fill.", "heartbeat.portfolio"], security=security)]
    poller = zmq.Poller()
    for sub in subs:
        poller.register(sub.socket, zmq.POLLIN)
    clock: MarketClock | None = None
    bars: dict[tuple[str, str, int], tuple[float, float]] = {}  # key -> (receipt, close's wall time), ms
    signals: dict[tuple[str, int], float] = {}
    fills: dict[str, tuple[int, float]] = {}  # order id -> (envelope ts, receipt)
    acks: list[dict[str, Any]] = []  # filled spot orders on bars seen published, matched at the end
    bar_lateness: list[float] = []
    bar_sent: list[float] = []  # marketdata's own send time (envelope ts, whole ms) minus the close's
    ahead_of_tick: list[int] = []  # the portfolio's count of order requests that waited for a tick, per heartbeat
    deadline = time.monotonic() + limit_s
    try:
        while len(acks) < want_fills and time.monotonic() < deadline:
            ready = dict(poller.poll(100))
            for sub in subs:
                while sub.socket in ready:
                    got = sub.receive(0)
                    received = wall_ms()
                    if got is None:
                        break
                    env = got[1]
                    body = env.body
                    if env.type == "clock":
                        clock = MarketClock(body["market_origin"], body["wall_origin"], body["speed"])
                    elif env.type == "bar" and clock is not None:
                        key = (body["symbol"], body["timeframe"], body["ts_open"])
                        due = clock.wall_ms_at(body["ts_open"] + timeframe_ms(body["timeframe"]))
                        if key not in bars:
                            bars[key] = (received, due)
                            bar_lateness.append(received - due)
                            bar_sent.append(env.ts - due)
                    elif env.type == "signal":
                        signals.setdefault((body["strategy_id"], body["ts_bar"]), received)
                    elif env.type == "fill" and body.get("kind") == "spot":
                        fills.setdefault(str(body.get("order_id")), (env.ts, received))
                    elif env.type == "ack" and body.get("status") == "filled" and _on_seen_bar(body, spot, bars):
                        acks.append(body)
                    elif env.type == "heartbeat" and isinstance(body.get("orders_ahead_of_tick"), int):
                        ahead_of_tick.append(body["orders_ahead_of_tick"])
        gaps = sum(sum(sub.stats.to_dict()["missed"].values()) for sub in subs)
    finally:
        for sub in subs:
            sub.close()
        ctx.term()
    samples = [_ack_sample(ack, fills.get(ack["order_id"]), spot, bars, signals) for ack in acks]
    return {"fills": samples, "bar_lateness": bar_lateness, "bar_sent": bar_sent, "bars": len(bars), "seq_gaps": gaps,
            "ahead_of_tick": ahead_of_tick[-1] - ahead_of_tick[0] if len(ahead_of_tick) > 1 else None}


def _bar_key(body: dict[str, Any], spot: dict[str, tuple[str, str]]) -> tuple[str, tuple[str, str, int]] | None:
    """The strategy and the bar of a spot strategy's order, None for a liquidation, an expiry or
    an options strategy's order (their order ids are not ``<strategy>:<bar open>``)."""
    strategy_id, _, ts_bar = str(body.get("order_id", "")).rpartition(":")
    if strategy_id not in spot or not ts_bar.isdigit():
        return None
    symbol, timeframe = spot[strategy_id]
    return strategy_id, (symbol, timeframe, int(ts_bar))


def _on_seen_bar(body: dict[str, Any], spot: dict[str, tuple[str, str]],
                 bars: dict[tuple[str, str, int], tuple[float, float]]) -> bool:
    """A strategy's order on a bar the tap saw published (not one from before it joined)."""
    key = _bar_key(body, spot)
    return key is not None and key[1] in bars


def _ack_sample(ack: dict[str, Any], fill: tuple[int, float] | None, spot: dict[str, tuple[str, str]],
                bars: dict[tuple[str, str, int], tuple[float, float]],
                signals: dict[tuple[str, int], float]) -> dict[str, Any]:
    """One filled order's spans (ms); a span is None when its message never came to the tap."""
    key = _bar_key(ack, spot)
    assert key is not None
    strategy_id, bar_key = key
    bar_received, due = bars[bar_key]
    signal = signals.get((strategy_id, bar_key[2]))
    return {"close_to_ack": ack["acked_ms"] - due, "close_to_sent": ack["sent_ms"] - due,
            "sent_to_ack": ack["acked_ms"] - ack["sent_ms"], "close_to_bar": bar_received - due,
            "close_to_fill": None if fill is None else fill[1] - due,
            "close_to_fill_env": None if fill is None else fill[0] - due,
            "bar_to_signal": None if signal is None else signal - bar_received,
            "close": bar_key[2] + timeframe_ms(bar_key[1])}


# --- the benchmark --------------------------------------------------------------------------
def measure(stack: Any, want_fills: int, limit_s: float, paced_samples: int = PACED_SAMPLES) -> dict[str, Any]:
    """Run the tap against a running stack in a process of its own; percentiles of its spans,
    and of the machine's floor beside it (``paced_samples`` at PACED_SPACING_S)."""
    stack.wait_for(lambda: stack.journal(), timeout=120, what="the first fill")
    # What ran before (the stack's start, an earlier benchmark, an install) leaves dirty pages the
    # kernel writes back about 30 s later: an fsync behind 400 MB of it took 20 ms here, and a run
    # started right after an install had a 61 ms stall. Written now, it costs the run nothing; the
    # run's own writes still count.
    os.sync()
    load_before = os.getloadavg()[0]
    ticks_before = cpu_ticks()
    with tempfile.TemporaryDirectory(prefix="go-trader-tap-") as tmp:
        out = Path(tmp) / "tap.json"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "bench.bench_latency", "--tap", str(stack.config_path),
                        "--fills", str(want_fills), "--seconds", str(limit_s), "--out", str(out)],
                       cwd=stack.dir, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, timeout=limit_s + 60)
        seconds = time.monotonic() - started
        tapped = json.loads(out.read_text())
    stolen = stolen_pct(ticks_before, cpu_ticks())
    floors = {suffix: machine_floor(stack.state_path.parent, samples, spacing_s)
              for suffix, spacing_s, samples in floor_paces(paced_samples)}
    result: dict[str, Any] = {"speed": stack.config["feed"]["speed"], "seconds": round(seconds, 1),
                              "fills": len(tapped["fills"]), "bars": tapped["bars"], "seq_gaps": tapped["seq_gaps"],
                              "ahead_of_tick": tapped["ahead_of_tick"],
                              "load_before": load_before, "load_after": os.getloadavg()[0], "stolen_pct": stolen}
    for span in SPANS:
        result[span] = _spread([f[span] for f in tapped["fills"] if f[span] is not None])
    per_close: dict[int, list[float]] = {}
    for fill in tapped["fills"]:
        per_close.setdefault(fill["close"], []).append(fill["close_to_ack"])
    result["closes_with_fills"] = len(per_close)
    result["fills_per_close"] = _spread([float(len(v)) for v in per_close.values()])
    result["close_to_last_ack"] = _spread([max(v) for v in per_close.values()])
    result["by_load"] = by_load(list(per_close.values()))
    for name in ("bar_lateness", "bar_sent"):
        result[name] = _spread(tapped[name])
    for suffix, floor in floors.items():
        for name, values in floor.items():
            result[name + suffix] = _spread(values)
    return result


def floor_paces(paced_samples: int) -> tuple[tuple[str, float, int], ...]:
    """The paces the floor is taken at, as (suffix of its result keys, spacing in s, samples):
    hot, and at about the stack's pace."""
    return ("", bare_path.SPACING_S, FLOOR_SAMPLES), ("_paced", PACED_SPACING_S, paced_samples)


def machine_floor(directory: Path, samples: int = FLOOR_SAMPLES,
                  spacing_s: float = bare_path.SPACING_S) -> dict[str, list[float]]:
    """What the machine alone costs close -> fill, measured beside the running stack (ms): an
    fsync'd append of a journal-sized line in the stack's state directory (the portfolio pays
    one per cycle), how late a process wakes for a deadline 2 ms ahead (each hop pays one:
    marketdata at the close, the engine for the bar, the portfolio for the order, the tap), and
    the whole path with nothing of go-trader's in it (bench.bare_path). The appends come
    ``spacing_s`` apart, as the bare path's closes do: on this VM an fsync 10 ms after the last
    one took 0.3 ms at the median, one 0.1 to 1 s after it about 1 ms, and the portfolio's come
    once per close."""
    fsyncs, wakes = [], []
    path = directory / "floor-probe.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        line = b'{"seq":1,"kind":"spot","strategy_id":"probe","price":100.0,"quantity":1.0}\n' * 4
        for _ in range(samples):
            started = time.perf_counter()
            os.write(fd, line)
            os.fsync(fd)
            fsyncs.append((time.perf_counter() - started) * 1000)
            time.sleep(max(0.0, spacing_s - WAKE_AHEAD_S - (time.perf_counter() - started)))
            deadline = time.perf_counter() + WAKE_AHEAD_S
            time.sleep(WAKE_AHEAD_S)
            wakes.append((time.perf_counter() - deadline) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"floor_fsync": fsyncs, "floor_wake": wakes,
            "floor_bare_path": bare_path.close_to_ack(directory, samples, spacing_s)}


def by_load(closes: list[list[float]]) -> dict[str, float]:
    """Close -> its last ack for the lightest half of the closes (by fills) and the heaviest
    tenth, and the heaviest tenth's share of all fills. Every fill of a close is acked together,
    so a close of 20 fills is 20 samples of one latency: the p99 over fills is the latency of
    the few heaviest closes, which the per-order work (decided, journaled, booked, answered one
    by one) makes the slowest."""
    ranked = sorted(closes, key=len)
    if not ranked:
        return {"light_fills": 0.0, "light_p50": float("nan"), "heavy_fills": 0.0, "heavy_p50": float("nan"),
                "heavy_share_pct": float("nan")}
    light = ranked[:max(1, len(ranked) // 2)]
    heavy = ranked[-max(1, len(ranked) // 10):]
    return {"light_fills": float(len(light[-1])), "light_p50": percentile([max(c) for c in light], 50),
            "heavy_fills": float(len(heavy[0])), "heavy_p50": percentile([max(c) for c in heavy], 50),
            "heavy_share_pct": 100.0 * sum(map(len, heavy)) / sum(map(len, ranked))}


def _spread(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "p99": percentile(values, 99),
            "max": max(values, default=float("nan"))}


def run(quick: bool = False, stack: Any = None, speeds: tuple[int, ...] = SPEEDS,
        fills: int = MIN_FILLS) -> dict[str, Any]:
    """Quick: the default speed (or the given stack), QUICK_FILLS fills. Full: ``speeds``, then
    TARGET_SPEED again under each of VARIANTS (when ``speeds`` has it)."""
    want, limit, paced = ((QUICK_FILLS, QUICK_LIMIT_S, QUICK_PACED_SAMPLES) if quick
                          else (fills, TAP_LIMIT_S, PACED_SAMPLES))
    if stack is not None:
        return {"runs": [measure(stack, want, limit, paced)], "min_fills": want, "paced_samples": paced}
    runs = []
    plan: list[tuple[int, dict[str, Any]]] = [(speed, {}) for speed in (speeds[:1] if quick else speeds)]
    if not quick and TARGET_SPEED in speeds:
        plan += [(TARGET_SPEED, variant) for variant in VARIANTS]
    for speed, variant in plan:
        base = bench_config()
        for key, value in variant.items():
            section, name = key.split(".")
            base.setdefault(section, {})[name] = value
        with running_stack(base=base, speed=speed) as running:
            runs.append({**measure(running, want, limit, paced), "variant": variant})
    return {"runs": runs, "min_fills": want, "paced_samples": paced}


def variant_label(variant: dict[str, Any]) -> str:
    """How a run's settings differ from the default (``section.key`` -> value), as its rows name it."""
    return ", ".join(f"{key} {'on' if value is True else 'off' if value is False else value}"
                     for key, value in sorted(variant.items()))


def spread_text(s: dict[str, float]) -> str:
    """A span's percentiles as a row shows them."""
    return f"{s['p50']:.2f} / {s['p90']:.2f} / {s['p99']:.2f} / {s['max']:.2f} ms"


def floor_rows(run_: dict[str, Any], speed: str, suffix: str, spacing_s: float, samples: int) -> list[Row]:
    """The machine's floor taken ``spacing_s`` apart (``machine_floor``), and close -> ack over
    its bare path."""
    def span(name: str) -> str:
        return spread_text(run_[name + suffix])

    pace = f"one every {spacing_s * 1000:g} ms, {samples}"
    bare = run_["floor_bare_path" + suffix]
    return [
        (f"{speed}: floor, fsync of a journal append in the state dir ({pace})", span("floor_fsync"), "", ""),
        (f"{speed}: floor, lateness of a wake-up 2 ms ahead, one per hop ({pace})", span("floor_wake"), "", ""),
        (f"{speed}: floor, the same path bare: pyzmq CURVE PUB -> SUB -> REQ -> fsync'd append -> REP, "
         f"close -> ack (bench/bare_path.py; closes {pace})", span("floor_bare_path"), "", ""),
        (f"{speed}: close -> ack over the bare path's (closes one every {spacing_s * 1000:g} ms), p50 / p99",
         f"{run_['close_to_ack']['p50'] / bare['p50']:.2f}x / {run_['close_to_ack']['p99'] / bare['p99']:.2f}x",
         "", ""),
    ]


def report(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for run_ in r["runs"]:
        def span(name: str) -> str:
            return spread_text(run_[name])

        load = run_["by_load"]
        variant = run_.get("variant", {})
        speed = f"{run_['speed']:,}x" + (f", {variant_label(variant)}" if variant else "")
        targeted = run_["speed"] == TARGET_SPEED and not variant
        rows += [
            (f"{speed}: bar close -> fill ack received by the engine (p50 / p90 / p99 / max, {run_['fills']} "
             f"filled orders)", span("close_to_ack"), f"p99 < {TARGET_P99_MS:g} ms" if targeted else "",
             verdict(run_["close_to_ack"]["p99"] < TARGET_P99_MS) if targeted else ""),
            (f"{speed}: filled orders measured", f"{run_['fills']:,}", f">= {r['min_fills']:,}",
             verdict(run_["fills"] >= r["min_fills"])),
            (f"{speed}: the fills come {run_['fills_per_close']['p50']:.0f} per close (median, max "
             f"{run_['fills_per_close']['max']:.0f}; a close's orders go in one request): closes with fills; "
             f"close -> its last ack, per close", f"{run_['closes_with_fills']} closes; " + span("close_to_last_ack"),
             "", ""),
            (f"{speed}: close -> its last ack (p50) by load: the lightest half of the closes (up to "
             f"{load['light_fills']:.0f} fills) / the heaviest tenth (from {load['heavy_fills']:.0f} fills, "
             f"{load['heavy_share_pct']:.0f}% of the fills, so they set the p99 over fills)",
             f"{load['light_p50']:.2f} / {load['heavy_p50']:.2f} ms", "", ""),
            (f"{speed}: split 1, close -> bar received by the tap", span("close_to_bar"), "", ""),
            (f"{speed}: split 2, close -> orders sent by the engine (bar delivered, strategies decided)",
             span("close_to_sent"), "", ""),
            (f"{speed}: split 3, orders sent -> answered (the portfolio: decide, journal fsync, book, reply)",
             span("sent_to_ack"), "", ""),
            (f"{speed}: order requests that reached the portfolio before their bar's tick and waited for it "
             f"(its orders_ahead_of_tick, between the tap's first and last heartbeat of it)",
             "not seen" if run_.get("ahead_of_tick") is None else
             f"{run_['ahead_of_tick']} (closes with fills: {run_['closes_with_fills']})", "", ""),
            (f"{speed}: bar close -> fill received by the tap (the portfolio publishes it 2 ms after it answered)",
             span("close_to_fill"), "", ""),
            (f"{speed}: bar close -> fill, the fill envelope's ts (whole ms)", span("close_to_fill_env"), "", ""),
            (f"{speed}: bar -> signal (published after its order is answered)", span("bar_to_signal"), "", ""),
            (f"{speed}: every bar, close -> received ({run_['bars']} bars)", span("bar_lateness"), "", ""),
            (f"{speed}: every bar, close -> sent (bar envelope ts, whole ms)", span("bar_sent"), "", ""),
            *(row for suffix, spacing_s, samples in floor_paces(r["paced_samples"])
              for row in floor_rows(run_, speed, suffix, spacing_s, samples)),
            (f"{speed}: {run_['seconds']:g} s wall; load average {run_['load_before']:.2f} -> "
             f"{run_['load_after']:.2f} (2 cores, shared); CPU time the VM's host took (steal) "
             f"{run_['stolen_pct']:.1f}%; tap sequence gaps (topics it filters out count too)",
             f"{run_['seq_gaps']}", "", ""),
        ]
    default = next((x for x in r["runs"] if x["speed"] == TARGET_SPEED and not x.get("variant")), None)
    for key in COMPARED:
        off = next((x for x in r["runs"] if x.get("variant") == {key: False}), None)
        if default is not None and off is not None:
            rows.append((f"{TARGET_SPEED:,}x: close -> ack, {key} on (the default) over off: p50 / p90 / p99",
                         " / ".join(f"{default['close_to_ack'][q] / off['close_to_ack'][q]:.2f}x"
                                    for q in ("p50", "p90", "p99")), "", ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tap", metavar="CONFIG", help="run as the tap against the stack of this config")
    parser.add_argument("--fills", type=int, default=MIN_FILLS)
    parser.add_argument("--seconds", type=float, default=TAP_LIMIT_S)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--speeds", default=",".join(map(str, SPEEDS)), help="comma-separated feed speeds")
    args = parser.parse_args(argv)
    if args.tap:
        if args.out is None:
            parser.error("--tap needs --out")
        args.out.write_text(json.dumps(tap(args.tap, args.fills, args.seconds)))
        return 0
    try:
        speeds = tuple(int(s) for s in args.speeds.split(","))
    except ValueError:
        parser.error(f"--speeds: expected comma-separated integers, got {args.speeds!r}")
    for row in report(run(quick=args.quick, speeds=speeds, fills=args.fills)):
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
