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

``--disk`` (``make chaos DISK=1``) adds, in every round, the operator's and the machine's
faults (``DiskFaults``): supervisord itself SIGKILLed (every service must exit within seconds,
and a new supervisord starts one copy of each), the state volume filled to ENOSPC (a real
tmpfs mounted over the state directory: /healthz must turn 503 with a persist problem and
recover once space is back), and, each while its owner is stopped, state.json truncated (the
portfolio must refuse, the file untouched; restored from state.json.bak as the README says),
the .bak garbled (harmless), the clock file garbled (resumed from its .bak) or both clock
files garbled (marketdata must refuse), a torn tail appended to the journal (cut off: never
acknowledged), and the journal's last acknowledged line truncated (the portfolio must refuse).
On top of the invariants above: market time never rewinds by more than a lost clock save.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from common.bus import Subscriber
from common.bus_auth import BusSecurity
from common.timeframes import timeframe_ms
from config.settings import parse_config
from tests.support import disk
from tests.support.stack import Stack, StateReader, acked_fill_ids, stack_config
from trading.portfolio import Portfolio, journal_fills, strategy_metas

VICTIMS = ("marketdata", "signals-spot", "signals-options", "portfolio", "pricer", "gateway")  # default engines
FAULTS = ("supervisord", "disk_full", "state_truncated", "state_bak_garbled", "clock_garbled",
          "clock_and_bak_garbled", "journal_torn_tail", "journal_last_line_truncated")
# The clock is saved every 0.25 s wall; a SIGKILL or a fall-back to the .bak loses at most a
# save or two, which under a loaded machine's stalls stays far below a market day. A rewind
# to the feed's start (the bug this guards against) is two months.
MAX_REWIND_MS = 86_400_000


@dataclass
class ChaosReport:
    seconds: float = 0.0
    kills: Counter = field(default_factory=Counter)
    restarts: int = 0
    orders_acked: int = 0
    fills: int = 0
    state_reads: int = 0
    market_days: float = 0.0
    max_rewind_ms: int = 0
    faults: Counter = field(default_factory=Counter)
    skipped_faults: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def summary(self) -> str:
        faults = f", faults={sum(self.faults.values())} ({dict(self.faults)})" if self.faults else ""
        skipped = f", skipped={self.skipped_faults}" if self.skipped_faults else ""
        return (f"chaos: {self.seconds:.0f}s wall, {self.market_days:.1f} market days, "
                f"kills={sum(self.kills.values())} ({dict(self.kills)}), restarts={self.restarts}{faults}{skipped}, "
                f"orders_acked={self.orders_acked}, fills={self.fills}, state_reads={self.state_reads}, "
                f"max_rewind_h={self.max_rewind_ms / 3_600_000:.1f}, mismatches={len(self.mismatches)}")


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
        self.max_rewind_ms = 0  # the furthest a clock message went back before the latest seen

    def run(self) -> None:
        ctx = zmq.Context()
        eps = self.cfg["endpoints"]
        engines = [e["pub"] for e in self.cfg["engines"].values()]  # every signal engine's PUB
        sub = Subscriber(ctx, [eps["marketdata"]["pub"], *engines, eps["portfolio"]["pub"]],
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
                    self.max_rewind_ms = max(self.max_rewind_ms, self.market_ts - body["ts"])
                    self.market_ts = max(self.market_ts, body["ts"])
        finally:
            sub.close()
            ctx.term()


class DiskFaults:
    """The faults of ``--disk``, one method each; every one ends with the stack RUNNING again
    and adds a mismatch when the stack did not react as promised."""

    def __init__(self, stack: Stack, report: ChaosReport, rng: random.Random, can_fill: bool,
                 reader: StateReader) -> None:
        self.stack = stack
        self.reader = reader
        self.report = report
        self.rng = rng
        self.can_fill = can_fill
        self.state_dir = stack.state_path.parent
        self.journal = self.state_dir / "journal.jsonl"
        self.clock = self.state_dir / "marketdata.clock.json"
        self.handlers = {
            "supervisord": self.kill_supervisord,
            "disk_full": self.fill_disk,
            "state_truncated": self.truncate_state,
            "state_bak_garbled": self.garble_state_bak,
            "clock_garbled": self.garble_clock,
            "clock_and_bak_garbled": self.garble_clock_and_bak,
            "journal_torn_tail": self.tear_journal_tail,
            "journal_last_line_truncated": self.truncate_journal_last_line,
        }

    def run(self, fault: str) -> None:
        if fault == "disk_full" and not self.can_fill:
            if fault not in self.report.skipped_faults:
                self.report.skipped_faults.append(fault)  # no tmpfs here (needs root): said, not hidden
            return
        self.handlers[fault]()
        self.report.faults[fault] += 1
        self.stack.wait_running(timeout=60)

    # --- helpers ---------------------------------------------------------------------------
    def fail(self, fault: str, problem: str) -> None:
        self.report.mismatches.append(f"{fault}: {problem}")

    def stopped(self, program: str) -> None:
        self.stack.ctl("stop", program)

    def start(self, program: str) -> None:
        self.stack.ctl("start", program)

    def refuses(self, fault: str, program: str, names: Path, *files: Path) -> None:
        """Run ``program`` on the damaged files by hand: it must exit 2 at once, name ``names``
        in its error and leave every file byte-identical."""
        before = {f: f.read_bytes() if f.exists() else None for f in files}
        try:
            done = subprocess.run([sys.executable, "-m", f"services.{program}",
                                   "--config", str(self.stack.config_path)],
                                  cwd=self.stack.dir, env=self.stack.env, capture_output=True, text=True, timeout=15)
        except subprocess.TimeoutExpired:
            self.fail(fault, f"{program} started on damaged files instead of refusing")
            return
        if done.returncode != 2 or str(names) not in done.stderr:
            self.fail(fault, f"{program} exited {done.returncode} without naming {names.name}: {done.stderr[-300:]!r}")
        for f, content in before.items():
            if (f.read_bytes() if f.exists() else None) != content:
                self.fail(fault, f"{f.name} was modified by the refused start")

    def health_problems(self) -> list[str]:
        code, doc = self.stack.http("/healthz")
        if not isinstance(doc, dict):
            return []
        return [p for svc in doc.get("services", {}).values() for p in svc.get("problems", [])]

    # --- the faults ------------------------------------------------------------------------
    def kill_supervisord(self) -> None:
        pids = self.stack.program_pids()
        self.stack.proc.kill()
        self.stack.proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = [pid for pid in pids if _alive(pid)]
        if orphans:
            self.fail("supervisord", f"services {orphans} outlived their supervisord by 10 s")
            for pid in orphans:
                os.kill(pid, signal.SIGKILL)
        (self.stack.dir / "run" / "supervisor.sock").unlink(missing_ok=True)
        self.stack.proc = None
        self.stack.start()

    def fill_disk(self) -> None:
        disk.fill(self.state_dir)
        try:
            flagged = _wait(lambda: any("persist" in p for p in self.health_problems()), 15)
            if not flagged:
                self.fail("disk_full", "/healthz showed no persist problem within 15 s of a full disk")
            time.sleep(self.rng.uniform(0.5, 2.0))
        finally:
            disk.free(self.state_dir)
        if not _wait(lambda: not any("persist" in p for p in self.health_problems()), 20):
            self.fail("disk_full",
                      f"persist problem still reported 20 s after space came back: {self.health_problems()}")

    def truncate_state(self) -> None:
        self.stopped("portfolio")
        state = self.stack.state_path
        self.reader.paused.set()  # this damage is ours: the reader checks what the services write
        time.sleep(0.05)
        try:
            state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
            self.refuses("state_truncated", "portfolio", state, state, self.journal)
            bak = state.with_name(state.name + ".bak")
            shutil.copyfile(bak, state.with_name(".restored.tmp"))  # the README's way back: the .bak,
            os.replace(state.with_name(".restored.tmp"), state)  # then the journal tail replays
        finally:
            self.reader.paused.clear()
        self.start("portfolio")

    def garble_state_bak(self) -> None:
        self.stopped("portfolio")
        self.stack.state_path.with_name("state.json.bak").write_bytes(b"\x00garbage")
        self.start("portfolio")

    def garble_clock(self) -> None:
        self.stopped("marketdata")
        log = self.stack.dir / "run" / "logs" / "marketdata.log"
        seen = log.stat().st_size
        self.clock.write_bytes(b'{"version": 1, "market_ts": 17')
        self.start("marketdata")
        if not _wait(lambda: b"clock_file_restored_from_bak" in _read_from(log, seen), 15):
            self.fail("clock_garbled", "marketdata did not log that it resumed from the clock's .bak")

    def garble_clock_and_bak(self) -> None:
        self.stopped("marketdata")
        bak = self.clock.with_name(self.clock.name + ".bak")
        originals = {f: f.read_bytes() for f in (self.clock, bak)}
        for f in originals:
            f.write_bytes(b"\xff" + originals[f][: len(originals[f]) // 3])
        self.refuses("clock_and_bak_garbled", "marketdata", self.clock, self.clock, bak)
        for f, content in originals.items():  # the operator restores them from a backup
            f.write_bytes(content)
        self.start("marketdata")

    def tear_journal_tail(self) -> None:
        self.stopped("portfolio")
        with open(self.journal, "ab") as f:
            f.write(b'{"seq":999999999,"order_id":"torn-by-a-crash')  # no newline: never acknowledged
        self.start("portfolio")

    def truncate_journal_last_line(self) -> None:
        self.stopped("portfolio")
        original = self.journal.read_bytes()
        if original.count(b"\n") < 2:
            self.start("portfolio")
            return
        self.journal.write_bytes(original[:-12])  # the last fill was acknowledged: this is damage
        self.refuses("journal_last_line_truncated", "portfolio", self.journal, self.journal, self.stack.state_path)
        self.journal.write_bytes(original)
        self.start("portfolio")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _read_from(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


def _wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (OSError, RuntimeError, ValueError):
            pass
        time.sleep(0.25)
    return False


def check_invariants(stack: Stack, report: ChaosReport, recorder: BusRecorder,
                     outages: list[tuple[str, float]], speed: float) -> None:
    records = stack.journal()
    fills = journal_fills(records)
    report.fills = len(fills)
    seqs = [r["seq"] for r in records]
    if seqs != list(range(1, len(records) + 1)):
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
            report.mismatches.append(
                f"{sid}: positions {sorted(book['positions'])} != journal {sorted(mine.positions)}")
        if set(book["option_positions"]) != set(mine.option_positions):
            report.mismatches.append(f"{sid}: option positions differ from the journal")

    # Missed bars: every closed 1h bar the feed published should carry a signal of every 1h
    # spot strategy, except around outages of the spot engine or marketdata (kill -> back + warm-up).
    down_wall = sum(seconds for victim, seconds in outages if victim in ("signals-spot", "marketdata"))
    for sc in cfg.spot_strategies():
        bars = recorder.bars.get((sc.symbol, sc.timeframe), set())
        if sc.timeframe != "1h" or len(bars) < 10:
            continue
        window = sorted(bars)[2:-2]  # the edges of the run are not outages
        missed = [b for b in window if b not in recorder.signaled.get(sc.id, set())]
        allowed = down_wall * speed / (timeframe_ms(sc.timeframe) / 1000) + 3 * len(outages) + 2
        if len(missed) > allowed:
            report.mismatches.append(f"{sc.id}: missed {len(missed)} bars, outages explain {allowed:.0f}")


def run_chaos(workdir: Path, seconds: float, kill_every: float = 3.0, seed: int = 1, speed: float = 36_000,
              faults: tuple[str, ...] = (), min_kills: int = 0) -> ChaosReport:
    """``faults`` (a subset of FAULTS; ``--disk`` passes them all) join every round of kills.
    With ``disk_full`` among them the state directory is a small tmpfs (root only). The run goes
    on past ``seconds`` until every fault ran once and ``min_kills`` services were SIGKILLed, so
    a slow machine makes it longer, never weaker."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"chaos: unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    with ExitStack() as mounts:
        can_fill = "disk_full" in faults and disk.can_mount()
        state_dir = Path(workdir) / "state"
        if can_fill:
            mounts.enter_context(disk.small_tmpfs(state_dir, size_kb=32 * 1024))
        try:
            return _run_chaos(Path(workdir), seconds, kill_every, seed, speed, faults, can_fill, min_kills)
        finally:
            if can_fill and state_dir.exists():  # keep the files to look at once the tmpfs is gone
                shutil.copytree(state_dir, Path(workdir) / "state.saved", dirs_exist_ok=True)


def _run_chaos(workdir: Path, seconds: float, kill_every: float, seed: int, speed: float,
               faults: tuple[str, ...], can_fill: bool, min_kills: int) -> ChaosReport:
    rng = random.Random(seed)
    cfg = stack_config(speed=speed)
    stack = Stack(workdir, cfg)
    report = ChaosReport()
    recorder = BusRecorder(cfg, stack.security())
    reader = StateReader(stack.state_path)
    outages: list[tuple[str, float]] = []
    operator = DiskFaults(stack, report, rng, can_fill, reader)
    started = time.monotonic()
    with stack:
        recorder.start()
        reader.start()
        first_ts = None
        stack.wait_for(lambda: recorder.market_ts, 30, "market clock")
        first_ts = recorder.market_ts
        deadline = time.monotonic() + seconds
        schedule: list[str] = []
        while (time.monotonic() < deadline or any(f in schedule for f in faults)  # every fault at least once
               or sum(report.kills.values()) < min_kills):
            time.sleep(rng.uniform(0.5, kill_every))
            if not schedule:  # every service in each round, in random order, the portfolio twice;
                # each fault once, every fault followed by a kill, the faults first (short runs see them all)
                kills = rng.sample(VICTIMS + ("portfolio",), len(VICTIMS) + 1)
                shuffled = rng.sample(faults, len(faults))
                paired = [e for pair in zip(shuffled, kills + rng.choices(VICTIMS, k=len(faults))) for e in pair]
                schedule = list(reversed(paired + kills[len(faults):]))
            victim = schedule.pop()
            if victim in faults:
                fault_at = time.monotonic()
                operator.run(victim)
                clock_faults = ("supervisord", "clock_garbled", "clock_and_bak_garbled")
                stopped = "marketdata" if victim in clock_faults else "portfolio"
                outages.append((stopped, time.monotonic() - fault_at + 1.0))
                continue
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
        report.max_rewind_ms = recorder.max_rewind_ms
        recorder.stop_event.set()
        reader.stop_event.set()
    recorder.join()
    reader.join()
    report.seconds = time.monotonic() - started
    report.state_reads = reader.reads
    report.mismatches += reader.failures
    if report.max_rewind_ms > MAX_REWIND_MS:
        report.mismatches.append(f"market time went back {report.max_rewind_ms / 3_600_000:.1f} h across a restart")
    check_invariants(stack, report, recorder, outages, speed)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=None, help="work dir (default: a new temp dir)")
    parser.add_argument("--disk", action="store_true", help="also kill supervisord, fill the disk and damage files")
    args = parser.parse_args(argv)
    import tempfile

    workdir = Path(args.dir or tempfile.mkdtemp(prefix="go-trader-chaos-"))
    report = run_chaos(workdir, args.seconds, args.kill_every, args.seed, faults=FAULTS if args.disk else ())
    print(report.summary())
    for problem in report.mismatches:
        print(f"  MISMATCH {problem}")
    print(f"logs and state: {workdir}")
    return 0 if not report.mismatches else 1


if __name__ == "__main__":
    raise SystemExit(main())
