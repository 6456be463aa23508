"""One full 34-strategy cycle on the running services vs the seed's process-per-strategy design.

Service side: the signal service's own ``SignalEngine`` (services/signals.py), built in this
process against a real stack whose signals program is stopped first, so it is the only engine
and its order ids are new. One cycle = ``run_cycle`` over every strategy the engine schedules
(spot through ``evaluate_spot``; options with their positions request to the running portfolio,
the pricer's chains and IV decoded, and ``evaluate_options``) + ``flush_outbox`` (a REQ/REP round
trip to the portfolio, journaled and acknowledged, for every order). Bar upkeep is outside the
timer: the newest bars are fetched and kept by the engine's bar hook (``keep_bar``), as the
running service gets them from the bus (its ``on_bar`` would then decide the close at once: the
timer takes that decision instead). So are the chains and IV: the engine subscribes to the
pricer's ``chain.*`` / ``iv.*`` as the service does, and before each cycle takes what arrived,
waiting (untimed) for a publication recent enough for the engine to use; a cycle whose engine
still asked the pricer is counted in the report.

Spot before/after, in the same run: the same cycles once with every ``evaluate_spot`` call
recomputing the whole history (the path before incremental strategies) and once reading the
incremental cache (the service's path). Per cycle: the spot decision time, and for the first
and the last spot strategy in config order the time from the cycle's start (the clock message
that makes them due, after their bar) to its decision ("bar -> signal" inside the engine).

Seed side: every ``evaluate_spot`` / ``evaluate_options`` call of one recorded engine cycle is
pickled with its exact inputs; a fresh ``python -c 'import pandas, numpy, ccxt; ...'`` per
strategy loads one and makes the same call, one after the other and 4 at a time (the seed's
executor). Each child's decision must equal the engine's, so both sides did the same work.

Run: ``python -m bench.bench_cycle``.
"""
from __future__ import annotations

import io
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from bench.harness import Row, running_stack, verdict
from common.ohlcv import OHLCV

REPO = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP = 3_000  # issue 15's floor: the cycle against the seed's one-process-per-strategy spawn
SEED_WORKERS = 4
SEED_CHILD = ("import pandas, numpy, ccxt; import pickle, sys; import trading.engine as engine; "
              "name, args = pickle.load(open(sys.argv[1], 'rb')); print(repr(getattr(engine, name)(*args)))")
DECIDERS = ("evaluate_spot", "evaluate_options")
PUBLISHED_WAIT_S = 2.0  # how long upkeep waits for the pricer's next chains (it publishes each options interval)


class RecordedBars:
    """The bars one ``evaluate_spot`` call read, as a picklable stand-in for the engine's store."""

    def __init__(self, bars: dict[tuple[str, str], OHLCV]) -> None:
        self.bars = bars

    def __call__(self, symbol: str, timeframe: str) -> OHLCV:
        return self.bars[(symbol, timeframe)]


# --- the service side ----------------------------------------------------------------------
class BenchEngine:
    """The signal service's engine, driven cycle by cycle instead of by its timer."""

    def __init__(self, stack: Any) -> None:
        import services.signals as signals
        from config.settings import load_config
        from services.runtime import ServiceRuntime

        self.signals = signals
        self.rt = ServiceRuntime("signals-bench", stack.security("signals"))
        self.rt.log.stream = io.StringIO()  # its per-cycle log lines are not the benchmark's output
        self.rt.bind_publisher("tcp://127.0.0.1:*")
        cfg = load_config(str(stack.config_path))
        self.engine = signals.SignalEngine(cfg, self.rt)
        self.published = self.rt.subscribe([cfg.endpoints["pricer"].pub], ["chain.", "iv."], self.engine.on_message)
        self.needs = {key for sc in self.engine.options for key in ((sc.underlying, sc.venue), sc.underlying)}
        self.pricer_asked = 0  # chain / iv requests the engine made (no recent publication at hand)
        ask = self.engine.ask_pricer

        def counted(kind: str, body: dict[str, Any]) -> Any:
            self.pricer_asked += 1
            return ask(kind, body)

        self.engine.ask_pricer = counted  # type: ignore[method-assign]
        self.ids = list(self.engine.schedule.due_at)
        self.deciders = {name: getattr(signals, name) for name in DECIDERS}
        self.decide_s = {name: 0.0 for name in DECIDERS}
        self.spot_done_s: list[float] = []  # when each spot decision of the cycle returned, from its start

    def close(self) -> None:
        for name, fn in self.deciders.items():
            setattr(self.signals, name, fn)
        self.rt.close()

    def refresh(self) -> None:
        """Newest bars through the engine's bar hook, and market time, as the running service
        has them (untimed upkeep). A gap makes the engine refetch, as in the service."""
        for (symbol, timeframe), store in self.engine.stores.items():
            last = store.history(symbol, timeframe, 1)
            after = int(last.ts[-1]) if len(last) else -1
            reply = self.engine.marketdata.request("history", {"symbol": symbol, "timeframe": timeframe,
                                                               "limit": self.signals.HISTORY_BARS})
            for ts, o, h, lo, c, v in (row for row in reply["rows"] if int(row[0]) > after):
                self.engine.keep_bar({"symbol": symbol, "timeframe": timeframe, "ts_open": int(ts), "open": o,
                                      "high": h, "low": lo, "close": c, "volume": v})
        self.engine.warm_up()
        self.engine.market_ts = self.engine.marketdata.request("status")["market_ts"]
        deadline = time.monotonic() + PUBLISHED_WAIT_S
        while True:  # the pricer publishes at each options interval; the service has them by the cycle
            got = self.published.receive(0)
            if got is None:
                if all(self.engine.latest(key) is not None for key in self.needs) or time.monotonic() > deadline:
                    return
                got = self.published.receive(5)
            if got is not None:
                self.engine.on_message(*got)

    def _wrap(self, wrapper: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> None:
        for name, fn in self.deciders.items():
            setattr(self.signals, name, wrapper(name, fn))

    def cycle(self, recompute: bool = False) -> dict[str, Any]:
        """One timed cycle; the deciders are timed to split the spot part from the rest.

        ``recompute``: spot strategies decide over the whole history (the path before
        incremental strategies) instead of from the engine's incremental cache.
        """
        self.decide_s = {name: 0.0 for name in DECIDERS}
        self.spot_done_s = []

        def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                began = time.perf_counter()
                try:
                    return fn(*args[:8]) if recompute and name == "evaluate_spot" else fn(*args)
                finally:
                    done = time.perf_counter()
                    self.decide_s[name] += done - began
                    if name == "evaluate_spot":
                        self.spot_done_s.append(done - start)
            return call

        self._wrap(timed)
        acked, asked = self.engine.orders_acked, self.pricer_asked
        start = time.perf_counter()
        self.engine.run_cycle(self.ids)
        self.engine.decide_pending_options()  # the service steps through these between messages
        decided = time.perf_counter()
        self.engine.flush_outbox()
        end = time.perf_counter()
        spot_s = self.decide_s["evaluate_spot"]
        return {"seconds": end - start, "spot_s": spot_s, "options_s": decided - start - spot_s,
                "orders_s": end - decided, "orders": self.engine.orders_acked - acked,
                "options_decide_s": self.decide_s["evaluate_options"], "spot_done_s": list(self.spot_done_s),
                "pricer_asked": self.pricer_asked - asked}

    def record(self) -> list[tuple[str, tuple[Any, ...], str]]:
        """One untimed cycle whose every decision is kept with its inputs and its outcome."""
        calls: list[tuple[str, tuple[Any, ...], str]] = []

        def recording(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                result = fn(*args)
                if name == "evaluate_spot":
                    # A seed child recomputes the history it is given; its reference is the same
                    # recomputation here, whose decision must be the incremental one's.
                    _id, _strategy, symbol, timeframe, _params, bars, _now, pair, _cache = args
                    read = {(s, timeframe): bars(s, timeframe) for s in filter(None, (symbol, pair))}
                    args = (*args[:5], RecordedBars(read), *args[6:8])
                    full = fn(*args)
                    if (full.order, full.skipped, full.signal and full.signal.signal) != \
                            (result.order, result.skipped, result.signal and result.signal.signal):
                        raise RuntimeError(f"{_id}: the incremental decision {result} differs from the full "
                                           f"recomputation {full}")
                    result = full
                calls.append((name, args, repr(result)))
                return result
            return call

        self._wrap(recording)
        self.engine.run_cycle(self.ids)
        self.engine.decide_pending_options()
        self.engine.flush_outbox()
        return calls

    def options_ready(self) -> bool:
        """True once the pricer quotes (the first chain needs a spot tick) or no options are scheduled."""
        self.refresh()
        calls = self.record()
        skipped = [repr_ for name, _args, repr_ in calls if name == "evaluate_options" and "skipped=None" not in repr_]
        options_scheduled = len(self.ids) > len(self.engine.spot)
        return not options_scheduled or (any(n == "evaluate_options" for n, _a, _r in calls) and not skipped)


# --- the seed side ---------------------------------------------------------------------------
def seed_cycle(paths: Iterable[Path], workers: int) -> tuple[float, list[str]]:
    """Wall time of one seed cycle (one child per strategy) and each child's printed outcome."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}

    def child(path: Path) -> str:
        done = subprocess.run([sys.executable, "-c", SEED_CHILD, str(path)], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"seed child for {path.name} failed: {done.stderr.strip()[-500:]}")
        return done.stdout.strip()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outputs = list(pool.map(child, paths))
    return time.perf_counter() - start, outputs


def _sample(calls: list[tuple[str, tuple[Any, ...], str]], quick: bool) -> list[tuple[str, tuple[Any, ...], str]]:
    """Every call, or in quick mode one of each kind (the cycle time is then scaled up)."""
    if not quick:
        return calls
    return [c for c in calls if c[0] == "evaluate_spot"][:1] + [c for c in calls if c[0] == "evaluate_options"][:1]


def run(quick: bool = False, stack: Any = None) -> dict[str, Any]:
    service_cycles = 5 if quick else 30
    seed_cycles = 1 if quick else 3
    with running_stack(stack, speed=36_000) as running:
        engines = [p for p in running.programs if p.startswith("signals-")]
        running.ctl("stop", *engines)  # the benchmark is the engine now: its order ids are its own
        bench = BenchEngine(running)
        try:
            running.wait_for(bench.options_ready, timeout=30, what="the pricer quoting chains")
            recomputed = []
            for _ in range(service_cycles):
                bench.refresh()
                recomputed.append(bench.cycle(recompute=True))
            bench.refresh()
            bench.cycle()  # the incremental cache catches up with the bars of the cycles above
            outcomes = []
            for _ in range(service_cycles):
                bench.refresh()
                outcomes.append(bench.cycle())
            bench.refresh()
            calls = bench.record()
            scheduled, spot_count = len(bench.ids), len(bench.engine.spot)
        finally:
            bench.close()
            if stack is not None:
                stack.ctl("start", *engines)
    sample = _sample(calls, quick)
    seed: dict[int, list[float]] = {1: [], SEED_WORKERS: []}
    with tempfile.TemporaryDirectory(prefix="go-trader-seed-") as tmp:
        paths = []
        for i, (name, args, _repr) in enumerate(sample):
            path = Path(tmp) / f"{i:02d}-{name}.pickle"
            path.write_bytes(pickle.dumps((name, args)))
            paths.append(path)
        expected = [repr_ for _name, _args, repr_ in sample]
        for _ in range(seed_cycles):
            for workers in seed:
                seconds, outputs = seed_cycle(paths, workers)
                if outputs != expected:
                    wrong = next(i for i, (a, b) in enumerate(zip(outputs, expected)) if a != b)
                    raise RuntimeError(f"seed child {paths[wrong].name} decided {outputs[wrong][:300]}, "
                                       f"the engine {expected[wrong][:300]}")
                seed[workers].append(seconds * len(calls) / len(sample))
    times = [o["seconds"] for o in outcomes]
    service_s = statistics.median(times)
    seq_s, par_s = statistics.median(seed[1]), statistics.median(seed[SEED_WORKERS])
    options_decided = sum(1 for name, _a, repr_ in calls if name == "evaluate_options" and "skipped=None" in repr_)
    return {
        "strategies_scheduled": scheduled,
        "spot_strategies": spot_count,
        "options_strategies": scheduled - spot_count,
        "decisions_recorded": len(calls),
        "options_decided": options_decided,
        "service_cycles": service_cycles,
        "service_cycle_s": service_s,
        "service_cycle_p90_s": float(np.percentile(times, 90)),
        **{f"service_{phase}_median_s": statistics.median(o[phase] for o in outcomes)
           for phase in ("spot_s", "options_s", "options_decide_s", "orders_s")},
        "orders_per_cycle_median": statistics.median(o["orders"] for o in outcomes),
        "orders_acked_total": sum(o["orders"] for o in outcomes),
        "cycles_asking_pricer": sum(1 for o in outcomes if o["pricer_asked"]),
        "seed_cycles": seed_cycles,
        "seed_processes_run": len(sample),
        "seed_extrapolated": len(sample) != len(calls),
        "seed_sequential_cycle_s": seq_s,
        "seed_4way_cycle_s": par_s,
        "speedup_vs_sequential": seq_s / service_s,
        "speedup_vs_4way": par_s / service_s,
        **spot_before_after(recomputed, outcomes),
    }


def spot_before_after(recomputed: list[dict[str, Any]], incremental: list[dict[str, Any]]) -> dict[str, float]:
    """Medians per cycle: spot decision time, and bar -> signal of the first and last spot strategy."""
    out: dict[str, float] = {}
    for label, cycles in (("recompute", recomputed), ("incremental", incremental)):
        out[f"spot_{label}_median_s"] = statistics.median(c["spot_s"] for c in cycles)
        out[f"first_signal_{label}_median_s"] = statistics.median(c["spot_done_s"][0] for c in cycles)
        out[f"last_signal_{label}_median_s"] = statistics.median(c["spot_done_s"][-1] for c in cycles)
    out["spot_speedup"] = out["spot_recompute_median_s"] / out["spot_incremental_median_s"]
    return out


def report(r: dict[str, Any]) -> list[Row]:
    scaled = f" (scaled from {r['seed_processes_run']} children)" if r["seed_extrapolated"] else ""
    ms = lambda seconds: f"{seconds * 1000:.1f} ms"  # noqa: E731
    return [
        (f"service cycle: {r['spot_strategies']} spot + {r['options_strategies']} options strategies + order "
         f"acks (median of {r['service_cycles']}; {r['options_decided']} options decided in the recorded cycle)",
         ms(r["service_cycle_s"]), "", ""),
        ("service cycle p90", ms(r["service_cycle_p90_s"]), "", ""),
        ("  spot decisions / options (positions REQ, chains decoded, decisions) / order acks, medians",
         " / ".join(ms(r[f"service_{p}_median_s"]) for p in ("spot_s", "options_s", "orders_s")), "", ""),
        ("  of the options part, evaluate_options itself (median)", ms(r["service_options_decide_s_median_s"]),
         "", ""),
        (f"  timed cycles whose engine asked the pricer for a chain or IV (none recent published), of "
         f"{r['service_cycles']}", f"{r['cycles_asking_pricer']}", "", ""),
        ("orders acknowledged per cycle (median) / in all timed cycles",
         f"{r['orders_per_cycle_median']:g} / {r['orders_acked_total']}", "", ""),
        (f"seed cycle, {r['decisions_recorded']} processes one at a time (median of {r['seed_cycles']}){scaled}",
         f"{r['seed_sequential_cycle_s']:.2f} s", "", ""),
        (f"seed cycle, {SEED_WORKERS} processes at a time (median of {r['seed_cycles']}){scaled}",
         f"{r['seed_4way_cycle_s']:.2f} s", "", ""),
        ("spot decisions per cycle, full recompute (before) / incremental (after), medians, same run",
         f"{ms(r['spot_recompute_median_s'])} / {ms(r['spot_incremental_median_s'])} "
         f"({r['spot_speedup']:.1f}x)", "", ""),
        ("bar -> signal in the engine, 1st spot strategy: before / after (median)",
         f"{ms(r['first_signal_recompute_median_s'])} / {ms(r['first_signal_incremental_median_s'])}", "", ""),
        (f"bar -> signal in the engine, {_ordinal(r['spot_strategies'])} (last) spot strategy: before / after "
         "(median)", f"{ms(r['last_signal_recompute_median_s'])} / {ms(r['last_signal_incremental_median_s'])}",
         "", ""),
        ("speed-up vs seed, one at a time", f"{r['speedup_vs_sequential']:,.0f}x", f">= {TARGET_SPEEDUP}x",
         verdict(r["speedup_vs_sequential"] >= TARGET_SPEEDUP)),
        (f"speed-up vs seed, {SEED_WORKERS} at a time", f"{r['speedup_vs_4way']:,.0f}x", f">= {TARGET_SPEEDUP}x",
         verdict(r["speedup_vs_4way"] >= TARGET_SPEEDUP)),
    ]


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


if __name__ == "__main__":
    import bench.bench_cycle as importable  # children unpickle RecordedBars by its module path, not __main__

    for row in importable.report(importable.run(quick="--quick" in sys.argv)):
        print(" | ".join(row))
