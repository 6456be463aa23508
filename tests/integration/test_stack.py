"""The whole stack under a real supervisord: it trades, survives restarts of any service
without losing or doubling a fill, and keeps running when the feed goes away."""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from common.cores import split_cores
from tests.support.procfs import nice_of, thread_cores, thread_policies
from tests.support.stack import PROGRAMS, Stack, StateReader, acked_fill_ids, stack_config
from trading.ledger import rebuild_books_from_journal
from trading.portfolio import journal_fills

pytestmark = pytest.mark.timeout(240)


def total_trades(status: dict) -> int:
    return sum(v["trade_count"] for v in status["strategies"].values())


def spot_values(status: dict) -> list[float]:
    return [v["portfolio_value"] for v in status["strategies"].values() if v["type"] == "spot"]


def test_stack_trades_and_restarts_lose_or_double_no_fill(tmp_path):
    stack = Stack(tmp_path, stack_config())
    watcher = StateReader(stack.state_path)
    with stack:
        assert stack.states() == {p: "RUNNING" for p in PROGRAMS}
        base = os.getpriority(os.PRIO_PROCESS, 0)  # what supervisord's children inherit from us
        niced = {**{p: base for p in PROGRAMS}, "pricer": max(base, 10), "signals-options": max(base, 10)}
        # cpu.background_nice, off the spot fill path: set once a service has read its config, which
        # on a loaded machine can be after supervisord calls it RUNNING
        stack.wait_for(lambda: {p: nice_of(stack.pid(p)) for p in PROGRAMS} == niced, 30, f"nice values {niced}")
        assert not any(os.SCHED_IDLE in thread_policies(stack.pid(p)).values() for p in PROGRAMS)  # opt-in
        # cpu.split_cores: the fill path on the upper half of the cores supervisord's children may
        # use (ours), every thread of it; the others on the rest
        allowed = frozenset(os.sched_getaffinity(0))
        fill_path, off_path = split_cores(allowed) or (allowed, allowed)
        placed = {p: {fill_path if p in ("marketdata", "signals-spot", "portfolio") else off_path} for p in PROGRAMS}
        stack.wait_for(lambda: {p: set(thread_cores(stack.pid(p)).values()) for p in PROGRAMS} == placed, 30,
                       f"cores {placed}")
        # supervisord, which reads their log pipes, off the fill path (forking_supervisord): its
        # programs got the cores back before they placed themselves, as the line above shows
        assert set(thread_cores(stack.proc.pid).values()) == {off_path}
        watcher.start()
        # The marks reach /status with the portfolio's next delta, which may come after its first fills
        first = stack.wait_for(lambda: (s := stack.status()) and total_trades(s) >= 3 and len(s["prices"]) >= 3 and s,
                               60, "first spot trades and the portfolio's marks")
        assert first["cycle_count"] > 0
        assert set(first["prices"]) >= {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
        before = spot_values(first)
        stack.wait_for(lambda: spot_values(stack.status()) != before, 30, "moving P&L")
        health = stack.status()["health"]["services"]
        assert {name: health[name]["alive"] for name in ("signals-spot", "signals-options")} == {
            "signals-spot": True, "signals-options": True}
        for program in ("portfolio", "signals-spot", "marketdata"):
            trades_before = total_trades(stack.status())
            pid_before = stack.pid(program)
            options_pid = stack.pid("signals-options")
            result = stack.ctl("restart", program)
            assert result.returncode == 0, result.stdout + result.stderr
            stack.wait_running()
            assert stack.pid(program) != pid_before
            assert stack.pid("signals-options") == options_pid  # one engine restarts alone
            stack.wait_for(lambda: total_trades(stack.status()) > trades_before + 2, 60,
                           f"trading after restarting {program}")
        watcher.stop_event.set()
    watcher.join()
    assert watcher.failures == [] and watcher.reads > 10

    journal = stack.journal()
    fills = journal_fills(journal)
    assert [r["seq"] for r in journal] == list(range(1, len(journal) + 1)), "journal seqs must be gap-free"
    doubled = [key for key, n in Counter((f.order_id, f.instrument) for f in fills).items() if n > 1]
    assert doubled == [], f"orders filled twice: {doubled}"
    journaled = {f.order_id for f in fills}
    acked = acked_fill_ids(stack)
    assert acked and set(acked) <= journaled, f"acknowledged but not journaled: {set(acked) - journaled}"

    state = json.loads(stack.state_path.read_text())
    books = state["strategies"]
    initial = {sid: (b["kind"], b["initial_capital"], 0) for sid, b in books.items()}
    rebuilt = rebuild_books_from_journal(fills, initial)
    for sid, book in books.items():
        assert book["trade_count"] == rebuilt[sid].trade_count, sid
        assert book["cash"] == pytest.approx(rebuilt[sid].cash, rel=1e-12), sid
        assert set(book["positions"]) == set(rebuilt[sid].positions), sid


def test_feed_down_leaves_the_rest_running_and_trading_resumes(tmp_path):
    with Stack(tmp_path, stack_config()) as stack:
        stack.wait_for(lambda: total_trades(stack.status()) >= 1, 60, "first trade")
        assert stack.ctl("stop", "marketdata").returncode == 0
        states = stack.states()
        assert states["marketdata"] == "STOPPED"
        assert all(states[p] == "RUNNING" for p in PROGRAMS if p != "marketdata")
        code, health = stack.wait_for(
            lambda: (r := stack.http("/healthz"))[0] == 503 and r, 15, "/healthz reporting the feed down")
        assert health["services"]["marketdata"]["alive"] is False
        assert health["services"]["portfolio"]["alive"] is True
        assert stack.ctl("status").returncode != 0  # scripts can rely on it: not everything RUNNING
        frozen = total_trades(stack.status())
        assert stack.ctl("start", "marketdata").returncode == 0
        stack.wait_for(lambda: stack.http("/healthz")[0] == 200, 20, "/healthz healthy again")
        stack.wait_for(lambda: total_trades(stack.status()) > frozen + 2, 60, "trading after the feed came back")
        assert all(stack.states()[p] == "RUNNING" for p in PROGRAMS)
