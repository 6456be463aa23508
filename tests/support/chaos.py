"""Chaos run: the whole stack on the accelerated sim while a random service is SIGKILLed
every few seconds (the portfolio often right after a fill, while it writes its files).
supervisord restarts each one. Afterwards the invariants must hold:

- every order the engine saw acknowledged as filled is in the journal exactly once;
- the journal's seqs are gap-free and no order id was filled twice;
- state.json parsed at every instant it was read;
- the final state equals the state rebuilt from the journal alone (cash, positions, trades);
- no spot strategy missed more bars than the outages of its services explain.

``python -m tests.support.chaos --seconds 600`` (``make chaos``) prints the counts; the test
suite runs a short version.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from common.bus import Subscriber
from common.bus_auth import BusSecurity
from common.config import parse_config
from common.model import Fill
from common.timeframes import timeframe_ms
from common.portfolio import Portfolio, strategy_metas
from tests.support.stack import StateReader, Stack, acked_fill_ids, stack_config

VICTIMS = ("marketdata", "signals", "portfolio", "pricer", "gateway")


@dataclass
class ChaosReport:
    seconds: float = 0.0
    kills: Counter = field(default_factory=Counter)
    restarts: int = 0
    orders_acked: int = 0
    fills: int = 0
    state_reads: int = 0
    market_days: float = 0.0
    mismatches: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"chaos: {self.seconds:.0f}s wall, {self.market_days:.1f} market days, "
                f"kills={sum(self.kills.values())} ({dict(self.kills)}), restarts={self.restarts}, "
                f"orders_acked={self.orders_acked}, fills={self.fills}, state_reads={self.state_reads}, "
                f"mismatches={len(self.mismatches)}")


class BusRecorder(threading.Thread):
    """Follows bars, signals and fills from outside the stack, as any user's tap would."""

    def __init__(self, cfg: dict[str, Any], security: BusSecurity) -> None:
        super().__init__(daemon=True)
        self.cfg = cfg
        self.security = security
        self.stop_event = threading.Event()
        self.bars: dict[tuple[str, str], set[int]] = defaultdict(set)
        self.signaled: dict[str, set[int]] = defaultdict(set)
        self.fill_event = threading.Event()
        self.market_ts = 0

    def run(self) -> None:
        ctx = zmq.Context()
        eps = self.cfg["endpoints"]
        sub = Subscriber(ctx, [eps["marketdata"]["pub"], eps["signals"]["pub"], eps["portfolio"]["pub"]],
                         ["bar.", "signal.", "fill.", "clock"], security=self.security)
        try:
            while not self.stop_event.is_set():
                got = sub.receive(100)
                if got is None:
                    continue
                _topic, env = got
                body = env.body
                if env.type == "bar":
                    self.bars[(body["symbol"], body["timeframe"])].add(body["ts_open"])
                elif env.type == "signal":
                    self.signaled[body["strategy_id"]].add(body["ts_bar"])
                elif env.type == "fill":
                    self.fill_event.set()
                elif env.type == "clock":
                    self.market_ts = max(self.market_ts, body["ts"])
        finally:
            sub.close()
            ctx.term()


def check_invariants(stack: Stack, report: ChaosReport, recorder: BusRecorder,
                     outages: list[tuple[str, float]], speed: float) -> None:
    fills = [Fill.from_dict(r) for r in stack.journal()]
    report.fills = len(fills)
    seqs = [f.seq for f in fills]
    if seqs != list(range(1, len(fills) + 1)):
        report.mismatches.append("journal seqs are not gap-free")
    legs = Counter((f.order_id, f.instrument) for f in fills)  # a structure's legs share one order id
    report.mismatches += [f"order {oid} leg {leg} filled {n} times" for (oid, leg), n in legs.items() if n > 1]
    acked = acked_fill_ids(stack)
    report.orders_acked = len(set(acked))
    journaled = {f.order_id for f in fills}
    report.mismatches += [f"acknowledged order {oid} is not in the journal" for oid in set(acked) - journaled]

    cfg = parse_config(stack.config, base_dir=stack.dir)
    state = json.loads(stack.state_path.read_text())
    rebuilt = Portfolio(strategy_metas(cfg), fee_rate=cfg.fee_pct / 100, slippage_rate=cfg.slippage_pct / 100)
    rebuilt.reconcile(0)
    rebuilt.commit(fills)
    for sid, book in state["strategies"].items():
        mine = rebuilt.books[sid]
        if book["trade_count"] != mine.trade_count:
            report.mismatches.append(f"{sid}: trade_count {book['trade_count']} != journal {mine.trade_count}")
        if abs(book["cash"] - mine.cash) > 1e-6 * max(1.0, abs(mine.cash)):
            report.mismatches.append(f"{sid}: cash {book['cash']} != journal {mine.cash}")
        if set(book["positions"]) != set(mine.positions):
            report.mismatches.append(f"{sid}: positions {sorted(book['positions'])} != journal {sorted(mine.positions)}")
        if set(book["option_positions"]) != set(mine.option_positions):
            report.mismatches.append(f"{sid}: option positions differ from the journal")

    # Missed bars: every closed 1h bar the feed published should carry a signal of every 1h
    # spot strategy, except around outages of signals or marketdata (kill -> back + warm-up).
    down_wall = sum(seconds for victim, seconds in outages if victim in ("signals", "marketdata"))
    for sc in cfg.spot_strategies():
        bars = recorder.bars.get((sc.symbol, sc.timeframe), set())
        if sc.timeframe != "1h" or len(bars) < 10:
            continue
        window = sorted(bars)[2:-2]  # the edges of the run are not outages
        missed = [b for b in window if b not in recorder.signaled.get(sc.id, set())]
        allowed = down_wall * speed / (timeframe_ms(sc.timeframe) / 1000) + 3 * len(outages) + 2
        if len(missed) > allowed:
            report.mismatches.append(f"{sc.id}: missed {len(missed)} bars, outages explain {allowed:.0f}")


def run_chaos(workdir: Path, seconds: float, kill_every: float = 3.0, seed: int = 1, speed: float = 36_000) -> ChaosReport:
    rng = random.Random(seed)
    cfg = stack_config(speed=speed)
    stack = Stack(workdir, cfg)
    report = ChaosReport()
    recorder = BusRecorder(cfg, stack.security())
    reader = StateReader(stack.state_path)
    outages: list[tuple[str, float]] = []
    started = time.monotonic()
    with stack:
        recorder.start()
        reader.start()
        first_ts = None
        stack.wait_for(lambda: recorder.market_ts, 30, "market clock")
        first_ts = recorder.market_ts
        deadline = time.monotonic() + seconds
        schedule: list[str] = []
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, kill_every))
            if not schedule:  # every service in each round, in random order; the portfolio twice
                schedule = rng.sample(VICTIMS + ("portfolio",), len(VICTIMS) + 1)
            victim = schedule.pop()
            if victim == "portfolio" and rng.random() < 0.7:
                recorder.fill_event.clear()
                recorder.fill_event.wait(2.0)  # strike while it journals and saves
            pid = stack.pid(victim)
            if pid <= 0:
                continue
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            report.kills[victim] += 1
            stack.wait_for(lambda: stack.pid(victim) not in (0, pid), 30, f"{victim} restarted")
            stack.wait_running(timeout=30)
            outages.append((victim, time.monotonic() - killed_at + 1.0))
            report.restarts += 1
        time.sleep(2.0)  # let the last restarted service catch up before the stop
        report.market_days = (recorder.market_ts - first_ts) / 86_400_000
        recorder.stop_event.set()
        reader.stop_event.set()
    recorder.join()
    reader.join()
    report.seconds = time.monotonic() - started
    report.state_reads = reader.reads
    report.mismatches += reader.failures
    check_invariants(stack, report, recorder, outages, speed)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=None, help="work dir (default: a new temp dir)")
    args = parser.parse_args(argv)
    import tempfile

    workdir = Path(args.dir or tempfile.mkdtemp(prefix="go-trader-chaos-"))
    report = run_chaos(workdir, args.seconds, args.kill_every, args.seed)
    print(report.summary())
    for problem in report.mismatches:
        print(f"  MISMATCH {problem}")
    print(f"logs and state: {workdir}")
    return 0 if not report.mismatches else 1


if __name__ == "__main__":
    raise SystemExit(main())
