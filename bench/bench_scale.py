"""Signal engines at scale: 34, 100, 300 and 1,000 strategies on 1, 2 and 4 engines, real acks.

A real stack (marketdata on the sim with 43 symbols, the portfolio, the pricer; no engines)
runs the scaled config: config/default.json's 34 strategies replicated to N, spot replicas
spread over the symbols (so they share no computation), options replicas on BTC and ETH (the
venues list no others). Each engine is its own process running the signal service's own
``SignalEngine`` with the config's ``engines`` split (``hash:I/E``), fed bars (``keep_bar``,
which decides nothing), clock, chains and IV from the stack's PUBs between rounds (untimed),
and asking the real portfolio (positions_batch, order, option_order: real acks, journaled). The
engines start a round together (a barrier); one round is every strategy of the engine once:
``run_cycle`` (spot, orders sent at once), the whole options batch, and the outbox flushed. The
cycle time of E engines in a round is the slowest engine's; reported: the median over rounds
(the first round, which builds the incremental caches from history, is left out), with its
parts per engine: spot (``run_cycle``), options (the batch; ``chains``: reading the published
chains and IV, or asking for them) and the outbox flush.

Target (issue 15): 1,000 strategies, real acks, cycle <= 1 s on 2 engines. On a 2-core machine
4 engines share 2 cores with the stack, so 4 is not expected to beat 2 here.

Run: ``python -m bench.bench_scale`` (``run(quick=True)``: 34 strategies on 1 and 2 engines).
"""
from __future__ import annotations

import io
import json
import multiprocessing
import queue
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Row

REPO = Path(__file__).resolve().parents[1]
SIZES = (34, 100, 300, 1_000)
ENGINE_COUNTS = (1, 2, 4)
QUICK_SIZES = (34,)
QUICK_ENGINE_COUNTS = (1, 2)
ROUNDS, QUICK_ROUNDS = 5, 2
EXTRA_SYMBOLS = tuple(f"S{i:03d}/USDT" for i in range(40))
SPEED = 3_600.0
HISTORY_DAYS = 60  # 1,000+ 1h bars for the engines' warm-up
ROUND_GAP_S = 0.3  # wall time between rounds: new bars close (1h bars every second at 3600x)
TARGET_STRATEGIES, TARGET_ENGINES, TARGET_CYCLE_S = 1_000, 2, 1.0


def scaled_config(n: int) -> dict[str, Any]:
    """config/default.json with its strategies replicated to ``n``: replica r of a spot strategy
    trades symbol number (its index + 14 r) of the extra symbols (its pair the next one)."""
    raw = json.loads((REPO / "config" / "default.json").read_text())
    base = raw["strategies"]
    symbols = [*raw["feed"]["symbols"], *EXTRA_SYMBOLS]
    spot_index = {s["id"]: i for i, s in enumerate(s for s in base if s["type"] == "spot")}
    strategies = []
    for i in range(n):
        src, rep = dict(base[i % len(base)]), i // len(base)
        if rep:
            src["id"] = f"{src['id']}-r{rep}"
            if src["type"] == "spot":
                k = spot_index[base[i % len(base)]["id"]] + len(spot_index) * rep
                src["symbol"] = EXTRA_SYMBOLS[k % len(EXTRA_SYMBOLS)]
                if "pair" in src:
                    src["pair"] = EXTRA_SYMBOLS[(k + 1) % len(EXTRA_SYMBOLS)]
        strategies.append(src)
    raw["strategies"] = strategies
    raw["feed"].update(symbols=symbols, history_days=HISTORY_DAYS)
    return raw


def with_engines(raw: dict[str, Any], count: int, ports: list[int]) -> dict[str, Any]:
    """``raw`` split by hash into ``count`` engines ``e0``.. (endpoints: ``ports``, unbound; the
    engines here publish on ports of their own). Speed 1 for the capacity check only: the
    benchmark measures what the estimate guards."""
    out = json.loads(json.dumps(raw))
    out["engines"] = {f"e{i}": {"strategies": f"hash:{i}/{count}", "pub": f"tcp://127.0.0.1:{ports[2 * i]}",
                                "rep": f"tcp://127.0.0.1:{ports[2 * i + 1]}"} for i in range(count)}
    out["feed"]["speed"] = 1
    return out


def _engine(raw: dict[str, Any], workdir: str, name: str, rounds: int, barrier: Any, results: Any) -> None:
    """One engine process: warm up, then ``rounds`` + 1 rounds started with the others."""
    from config.settings import parse_config
    from services.runtime import ServiceRuntime, bus_security
    from services.signals import SignalEngine

    cfg = parse_config(raw, "bench", base_dir=Path(workdir))
    rt = ServiceRuntime(f"signals-{name}", bus_security(cfg, "signals"))  # as services.signals runs it
    rt.log.stream = io.StringIO()  # per-cycle log lines are not the benchmark's output
    rt.bind_publisher("tcp://127.0.0.1:*")
    engine = SignalEngine(cfg, rt, name)
    feeds = [rt.subscribe([cfg.endpoints["marketdata"].pub], ["bar.", "clock"], lambda *_: None),
             rt.subscribe([cfg.endpoints["pricer"].pub], ["chain.", "iv."], lambda *_: None)]
    ids = list(engine.schedule.due_at)
    engine.market_seconds = 0.0  # time in getting chains and IV (published, or asked for)
    options_market = engine._options_market

    def timed_market(needs: Any) -> Any:
        began = time.perf_counter()
        try:
            return options_market(needs)
        finally:
            engine.market_seconds += time.perf_counter() - began
    engine._options_market = timed_market
    try:
        engine.market_ts = engine.marketdata.request("status")["market_ts"]
        for r in range(rounds + 1):
            _follow(engine, feeds)
            barrier.wait(timeout=600)
            acked, started = engine.orders_acked, time.perf_counter()
            engine.run_cycle(ids)
            spot_done = time.perf_counter()
            engine.decide_pending_options()
            options_done = time.perf_counter()
            engine.flush_outbox()
            done = time.perf_counter()
            if r:
                results.put({"engine": name, "round": r, "seconds": done - started, "strategies": len(ids),
                             "spot_s": spot_done - started, "options_s": options_done - spot_done,
                             "flush_s": done - options_done, "market_s": engine.market_seconds,
                             "acked": engine.orders_acked - acked, "unacked": len(engine.outbox)})
            engine.market_seconds = 0.0
            time.sleep(ROUND_GAP_S)
    finally:
        rt.close()


def _follow(engine: Any, feeds: list[Any]) -> None:
    """What arrived since the last round: bars, the clock, chains and IV (untimed upkeep)."""
    for sub in feeds:
        while (got := sub.receive(0)) is not None:
            _topic, env = got
            if env.type == "bar":
                engine.keep_bar(env.body)
            elif env.type == "clock" and isinstance(env.body.get("ts"), int):
                engine.market_ts = max(engine.market_ts, env.body["ts"])
            elif env.type in ("chain", "iv"):
                engine.on_published(env)
    while engine.needs_warmup:
        engine.warm_up()


def measure(raw: dict[str, Any], workdir: Path, count: int, rounds: int, ports: list[int]) -> dict[str, Any]:
    """``count`` engine processes over the running stack's config; per-round slowest engine."""
    split = with_engines(raw, count, ports)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=_engine, args=(split, str(workdir), f"e{i}", rounds, barrier, results))
             for i in range(count)]
    for proc in procs:
        proc.start()
    rows: list[dict[str, Any]] = []
    try:
        while len(rows) < count * rounds:
            try:
                rows.append(results.get(timeout=1.0))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"an engine process exited with {dead[0]}; see its traceback above") from None
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    per_round = [max(r["seconds"] for r in rows if r["round"] == k) for k in range(1, rounds + 1)]
    per_engine = {f"e{i}": statistics.median(r["seconds"] for r in rows if r["engine"] == f"e{i}")
                  for i in range(count)}
    parts = {part: statistics.median(r[part] for r in rows) for part in ("spot_s", "options_s", "flush_s", "market_s")}
    return {"engines": count, "cycle_s": statistics.median(per_round), "cycle_max_s": max(per_round),
            "per_engine_median_s": per_engine, "parts_median_s": parts, "acked": sum(r["acked"] for r in rows),
            "unacked_at_end": sum(r["unacked"] for r in rows if r["round"] == rounds),
            "strategies_per_engine": {f"e{i}": next(r["strategies"] for r in rows if r["engine"] == f"e{i}")
                                      for i in range(count)}}


def ready(raw: dict[str, Any], security: Any, timeout_s: float = 300) -> None:
    """Wait until marketdata (its history built for every symbol), the portfolio and the pricer
    answer; supervisord calls a program RUNNING a second after it starts."""
    import zmq

    from common.bus import Requester, RequestFailed

    ctx = zmq.Context()
    deadline = time.monotonic() + timeout_s
    try:
        for service in ("marketdata", "portfolio", "pricer"):
            req = Requester(ctx, raw["endpoints"][service]["rep"], "bench", 1000, 1, security=security)
            try:
                while True:
                    try:
                        req.request("status")
                        break
                    except RequestFailed:
                        if time.monotonic() > deadline:
                            raise
            finally:
                req.close()
    finally:
        ctx.term()


def run(quick: bool = False) -> dict[str, Any]:
    from bench.ports import free_port  # a stack only, as bench.harness does
    from bench.stack import Stack, stack_config

    sizes, counts = (QUICK_SIZES, QUICK_ENGINE_COUNTS) if quick else (SIZES, ENGINE_COUNTS)
    rounds = QUICK_ROUNDS if quick else ROUNDS
    out: dict[str, Any] = {"rounds": rounds, "symbols": 3 + len(EXTRA_SYMBOLS), "speed": SPEED, "sizes": {}}
    for n in sizes:
        raw = stack_config(scaled_config(n), speed=SPEED)
        ports = [free_port() for _ in range(2 * max(counts))]
        with tempfile.TemporaryDirectory(prefix="go-trader-scale-") as tmp:
            with Stack(Path(tmp), raw, core=("marketdata", "portfolio", "pricer"), engines=()) as stack:
                ready(raw, stack.security())
                out["sizes"][str(n)] = {str(e): measure(raw, Path(tmp), e, rounds, ports) for e in counts}
                out["sizes"][str(n)]["journaled_fills"] = len(stack.journal())
    return out


def report(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for n, by_count in r["sizes"].items():
        for e, m in by_count.items():
            if e == "journaled_fills":
                continue
            slowest, parts = max(m["per_engine_median_s"].values()), m["parts_median_s"]
            target, verdict = "", ""
            if int(n) == TARGET_STRATEGIES and int(e) == TARGET_ENGINES:
                target = f"<= {TARGET_CYCLE_S:g} s"
                verdict = "PASS" if m["cycle_s"] <= TARGET_CYCLE_S else "FAIL"
            rows.append((f"{n} strategies on {e} engine{'s' if int(e) > 1 else ''}: cycle (median of "
                         f"{r['rounds']} rounds, slowest engine; {m['acked']} real acks)",
                         f"{m['cycle_s'] * 1000:.0f} ms (max {m['cycle_max_s'] * 1000:.0f} ms, slowest engine's "
                         f"median {slowest * 1000:.0f} ms; per engine: spot {parts['spot_s'] * 1000:.0f}, options "
                         f"{parts['options_s'] * 1000:.0f} (chains {parts['market_s'] * 1000:.1f}), outbox "
                         f"{parts['flush_s'] * 1000:.0f} ms)", target, verdict))
    return rows
