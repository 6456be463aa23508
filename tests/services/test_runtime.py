"""The runtime: glibc allocator settings applied before zmq starts its threads (refusals left out),
a service that dies with its parent, and problems logged once per outage."""
from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
from typing import Any, Callable

import pytest

from bench.harness import rss_mb
from config.settings import CpuConfig
from services import runtime
from services.runtime import (
    M_ARENA_MAX,
    M_MMAP_THRESHOLD,
    MALLOC_SETTINGS,
    ServiceRuntime,
    precise_wakeups,
    service_cores,
    trim_heap,
    tune_malloc,
)
from tests.support.procfs import thread_cores, thread_nices, thread_policies


class FakeLibc:
    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 0 if param == self.refuse else 1


@pytest.fixture
def in_process(monkeypatch):
    """A runtime's loop run by the test in its own process: no parent-death signal armed, and
    pytest's signal handlers left alone."""
    monkeypatch.setattr(runtime, "die_with_parent", lambda *_a: False)
    monkeypatch.setattr(runtime.signal, "signal", lambda *_a: None)


@pytest.fixture
def probe(in_process) -> ServiceRuntime:
    """A runtime without keys, its log kept here, whose loop the test runs."""
    rt = ServiceRuntime("probe")
    rt.log.stream = io.StringIO()
    return rt


def test_every_setting_is_asked_for_and_only_the_accepted_ones_are_reported():
    libc = FakeLibc(refuse=M_ARENA_MAX)
    applied = tune_malloc(libc)
    assert libc.calls == [(-8, 2), (-3, 131_072), (-1, 131_072)]
    assert applied == [(M_MMAP_THRESHOLD, 131_072), (-1, 131_072)]


@pytest.mark.skipif(runtime._libc is None, reason="not glibc")
def test_a_service_on_glibc_runs_with_all_the_settings():
    rt = ServiceRuntime("probe")
    try:
        assert rt.malloc_settings == list(MALLOC_SETTINGS)
    finally:
        rt.close()


@pytest.mark.skipif(runtime._libc is None, reason="not glibc")
def test_trim_heap_gives_back_freed_pages_the_heap_keeps():
    blocks = [bytearray(64 * 1024) for _ in range(1024)]  # 64 MB of heap chunks, each under the mmap threshold
    del blocks[:-1]  # the last one stays: the heap cannot shrink from the top, only a trim frees the rest
    before = rss_mb(os.getpid())
    assert trim_heap() is True
    assert before - rss_mb(os.getpid()) > 32


def test_trim_heap_without_glibc_says_so(monkeypatch):
    monkeypatch.setattr(runtime, "_libc", None)
    assert trim_heap() is False


@pytest.mark.skipif(runtime._libc is None or not sys.platform.startswith("linux"), reason="glibc on Linux")
def test_precise_wakeups_takes_the_timer_slack_of_the_calling_thread_to_1_ns():
    pr_get_timerslack = 30
    slack: list[int] = []

    def probe() -> None:  # a thread of its own: the slack is per thread, and this process keeps its own
        before = runtime._libc.prctl(pr_get_timerslack, 0, 0, 0, 0)
        assert precise_wakeups() is True
        slack.extend((before, runtime._libc.prctl(pr_get_timerslack, 0, 0, 0, 0)))

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert slack[1] == 1
    assert runtime._libc.prctl(pr_get_timerslack, 0, 0, 0, 0) == slack[0]  # this thread kept its slack


def test_precise_wakeups_without_glibc_says_so(monkeypatch):
    monkeypatch.setattr(runtime, "_libc", None)
    assert precise_wakeups() is False


class FakePrctl:
    def __init__(self, result: int) -> None:
        self.result = result
        self.calls: list[tuple[int, ...]] = []

    def prctl(self, *args: int) -> int:
        self.calls.append(args)
        return self.result


def test_die_with_parent_arms_pdeathsig_and_stays_while_the_parent_is_ours(monkeypatch):
    raised = []
    monkeypatch.setattr(runtime.signal, "raise_signal", raised.append)
    libc = FakePrctl(0)
    assert runtime.die_with_parent(libc, os.getppid())
    assert libc.calls == [(runtime.PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)] and raised == []


def test_a_service_whose_parent_died_before_arming_stops_at_once(monkeypatch):
    raised = []
    monkeypatch.setattr(runtime.signal, "raise_signal", raised.append)
    assert runtime.die_with_parent(FakePrctl(0), os.getppid() + 1)  # reparented: the starter is gone
    assert raised == [signal.SIGTERM]


def test_without_prctl_nothing_is_armed():
    assert not runtime.die_with_parent(None, os.getppid())
    assert not runtime.die_with_parent(FakePrctl(-1), os.getppid())


def test_a_problem_is_logged_once_per_outage_and_cleared():
    rt = ServiceRuntime("probe")
    try:
        rt.log.stream = io.StringIO()
        rt.set_problem("persist", "cannot write state.json: ENOSPC")
        rt.set_problem("persist", "cannot write journal.jsonl: ENOSPC")
        assert rt.problems == {"persist": "cannot write journal.jsonl: ENOSPC"}
        rt.clear_problem("persist")
        rt.clear_problem("persist")
        events = [json.loads(line)["event"] for line in rt.log.stream.getvalue().splitlines()]
        assert events == ["problem", "problem_cleared"] and rt.problems == {}
    finally:
        rt.close()


def test_a_self_timed_callback_runs_again_when_it_asks(probe):
    """``wake``: the callback's return value is its next wait (marketdata sleeps until a close)."""
    import time

    rt = probe
    runs: list[float] = []
    waits = iter([0.03, 0.0, "not a number"])

    def tick() -> float:
        runs.append(time.monotonic())
        if len(runs) == 4:
            rt.request_stop()
        return next(waits, 0.0)

    rt.wake(tick)
    rt.run()  # closes the runtime when it stops
    assert len(runs) == 4
    assert runs[1] - runs[0] >= 0.029  # asked for 30 ms
    assert runs[2] - runs[1] < 0.02  # asked for 0: at once
    assert 0.045 <= runs[3] - runs[2] < 0.5  # a bad answer falls back to 50 ms, never a dead timer


def test_a_wake_brought_forward_runs_then_and_not_at_the_beat_it_asked_for(probe):
    """An engine's resend check asked to sleep 50 ms (an empty outbox); a clock message then
    left an order for 5 ms later: ``within`` brings the check forward."""
    import time

    rt = probe
    runs: list[float] = []
    asked: list[float] = []

    def check() -> float:
        runs.append(time.monotonic())
        if len(runs) == 2:
            rt.request_stop()
        return 10.0  # nothing to do for a long while

    within = rt.wake(check)

    def elsewhere() -> None:
        if runs and not asked:
            asked.append(time.monotonic())
            within(0.02)
            within(5.0)  # a later wish never puts off a sooner one

    rt.every(0.005, elsewhere)
    rt.run()
    assert len(runs) == 2 and 0.019 <= runs[1] - asked[0] < 1.0


def test_housekeeping_waits_while_held_and_other_timers_do_not(probe):
    """``hold_housekeeping``: a save waits out a bar close's burst; the work of the burst does not."""
    import time

    rt = probe
    started = time.monotonic()
    held_until = started + 0.15
    saves: list[float] = []
    work: list[float] = []
    rt.hold_housekeeping(lambda _ahead_ms: time.monotonic() < held_until)
    rt.every(0.01, lambda: saves.append(time.monotonic()), housekeeping=True)

    def tick() -> None:
        work.append(time.monotonic())
        if len(saves) >= 2:
            rt.request_stop()

    rt.every(0.01, tick)
    rt.run()
    assert saves[0] >= held_until  # due at once, run only once the hold was over
    assert min(work) < started + 0.05  # plain timers ran through the hold
    assert len([t for t in work if t < held_until]) >= 3


def test_housekeeping_held_for_good_still_runs_after_the_max_delay(monkeypatch, probe):
    import time

    monkeypatch.setattr(runtime, "HOUSEKEEPING_MAX_DELAY_SECONDS", 0.05)
    rt = probe
    started = time.monotonic()
    saves: list[float] = []
    rt.hold_housekeeping(lambda _ahead_ms: True)

    def save() -> None:
        saves.append(time.monotonic())
        rt.request_stop()

    rt.every(1.0, save, housekeeping=True)
    rt.run()
    assert saves and saves[0] - started >= 0.05


def test_the_heartbeat_keeps_beating_while_a_request_waits_on_a_silent_peer(tmp_path):
    """A service blocked on a slow peer is alive: /healthz must not call it dead (two missed
    beats), so the requester beats while it waits."""
    import time

    import zmq

    from common.bus import RequestFailed, Subscriber
    from tests.support.stack import stack_config, stack_security

    raw = stack_config()
    endpoints = raw["endpoints"]
    rt = ServiceRuntime("portfolio", stack_security(raw, tmp_path, "portfolio"))
    peer = rt.ctx.socket(zmq.REP)  # never answers (nor completes the CURVE handshake)
    listener = None
    try:
        rt.bind_publisher(endpoints["portfolio"]["pub"])
        peer.bind(rt.security.address(endpoints["pricer"]["rep"]))  # where the requester goes
        listener = Subscriber(rt.ctx, [endpoints["portfolio"]["pub"]], ["heartbeat."], rt.stats,
                              security=stack_security(raw, tmp_path))
        time.sleep(0.3)  # the subscription reaches the publisher
        req = rt.requester(endpoints["pricer"]["rep"], timeout_ms=2600, retries=1)
        rt._heartbeat_timer.due = time.monotonic()  # the next beat is due now
        started = time.monotonic()
        with pytest.raises(RequestFailed):
            req.request("status")
        assert time.monotonic() - started >= 2.5
        beats = []
        while (got := listener.receive(200)) is not None:
            beats.append(got[1].body["service"])
        assert 2 <= beats.count("portfolio") <= 3  # at 0, 1 and 2 s of the 2.6 s wait (2: a slow machine)
    finally:
        if listener is not None:
            listener.close()
        peer.close(0)
        rt.close()


def test_after_turn_runs_once_the_turns_messages_are_handled_or_at_once_outside_the_loop(probe):
    rt = probe
    order: list[str] = []
    rt.after_turn(lambda: order.append("outside the loop"))
    assert order == ["outside the loop"]

    def timer() -> None:
        rt.after_turn(lambda: order.append("after"))
        order.append("timer")
        rt.request_stop()

    rt.every(0.01, timer)
    rt.run()
    assert order == ["outside the loop", "timer", "after"]


def test_after_turn_with_a_delay_waits_that_long_and_never_outlives_the_service(probe):
    import time

    rt = probe
    ran: dict[str, float] = {}
    asked = 0.0

    def delayed() -> None:
        ran["delayed"] = time.monotonic()
        rt.request_stop()

    def timer() -> None:  # runs once: the next run is a minute away
        nonlocal asked
        asked = time.monotonic()
        rt.after_turn(delayed, 0.03)
        rt.after_turn(lambda: ran.setdefault("next turn", time.monotonic()))
        rt.after_turn(lambda: ran.setdefault("at stop", time.monotonic()), 60.0)

    rt.every(60.0, timer)
    rt.run()
    assert ran["next turn"] - asked < 0.02  # no delay: this turn
    assert 0.03 <= ran["delayed"] - asked < 0.08  # woken for it, not left to the loop's 0.1 s idle beat
    assert ran["at stop"] >= ran["delayed"]  # not due, yet run before the service stopped


def test_a_housekeeping_timer_is_held_as_far_ahead_as_its_last_run_took(probe):
    """A save that takes 40 ms is asked about the next 40 ms, so it never starts just before a
    close and holds up the close's orders; the look-ahead is capped."""
    import time

    rt = probe
    asked: list[float] = []
    runs: list[float] = []
    rt.hold_housekeeping(lambda ahead_ms: asked.append(ahead_ms) or False)

    def save() -> None:
        runs.append(time.monotonic())
        time.sleep(0.04 if len(runs) == 1 else 0.2)
        if len(runs) == 3:
            rt.request_stop()

    rt.every(0.001, save, housekeeping=True)
    rt.run()
    assert asked.count(0.0) >= 1  # a timer that never ran looks nothing ahead (the heap trim asks too)
    assert 40.0 <= min(a for a in asked if a >= 1.0) < 100.0  # as long as the save's first run took
    assert max(asked) == runtime.HOLD_LOOKAHEAD_MAX_SECONDS * 1000  # the second took 200 ms: capped


def test_a_tick_that_came_before_an_order_is_read_before_it_though_both_waited(tmp_path, in_process):
    """A replier serves one request per loop turn: an order that queued up behind a slow reply,
    after a tick, is answered only once the turn's subscriptions have read that tick."""
    import threading
    import time

    import zmq

    from common.bus import Requester
    from tests.support.stack import stack_config, stack_security

    raw = stack_config()
    endpoints = raw["endpoints"]
    rt = ServiceRuntime("portfolio", stack_security(raw, tmp_path, "portfolio"))
    rt.log.stream = io.StringIO()
    feed = ServiceRuntime("marketdata", stack_security(raw, tmp_path, "marketdata"))
    reader = stack_security(raw, tmp_path)
    ticks: list[str] = []
    seen_by_second: list[int] = []
    first_in = threading.Event()

    def status(_body):
        if not first_in.is_set():
            first_in.set()
            time.sleep(0.4)  # a slow reply (an fsync on a busy disk): the tick and the order queue up
        else:
            seen_by_second.append(len(ticks))
            rt.request_stop()
        return {}

    def ask(after: threading.Event | None) -> None:
        ctx = zmq.Context()
        try:
            if after is not None:
                after.wait(5)
                feed.publisher.publish("tick.BTC/USDT", "tick", {"symbol": "BTC/USDT"})
                time.sleep(0.1)
            Requester(ctx, endpoints["portfolio"]["rep"], "probe", 5000, 1, security=reader).request("status")
        finally:
            ctx.destroy(linger=0)

    try:
        feed.bind_publisher(endpoints["marketdata"]["pub"])
        rt.subscribe([endpoints["marketdata"]["pub"]], ["tick."], lambda topic, _env: ticks.append(topic))
        rt.bind_replier(endpoints["portfolio"]["rep"], {"status": status})
        time.sleep(0.3)  # the subscription reaches the publisher
        clients = [threading.Thread(target=ask, args=(None,)), threading.Thread(target=ask, args=(first_in,))]
        for client in clients:
            client.start()
        rt.run()
        for client in clients:
            client.join(5)
    finally:
        feed.close()
    assert seen_by_second == [1]


def started_service(runtime_args: str, read: Callable[[int], Any]) -> tuple[dict, int, Any]:
    """A process that builds ``ServiceRuntime('probe', <runtime_args>)`` and opens a socket (the
    context starts its I/O threads with the first one): its first log record, its thread count,
    and ``read(pid)`` taken while it runs."""
    import subprocess
    import sys

    code = ("import os, zmq\n"
            "from config.settings import CpuConfig\n"
            "from services.runtime import ServiceRuntime\n"
            f"rt = ServiceRuntime('probe', {runtime_args})\n"
            "sock = rt.ctx.socket(zmq.PUB)\n"
            "print('threads', len(os.listdir('/proc/self/task')), flush=True)\n"
            "input()\n"
            "sock.close(0); rt.close()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        logged = json.loads(proc.stdout.readline())
        threads = int(proc.stdout.readline().split()[1])
        return logged, threads, read(proc.pid)
    finally:
        proc.communicate("\n", timeout=30)


@pytest.mark.parametrize("idle", [True, False], ids=["sched_idle", "nice_only"])
def test_a_background_service_and_every_thread_zmq_starts_run_at_its_nice_and_policy(idle):
    logged, threads, (nices, policies) = started_service(
        f"background=CpuConfig(background_nice=7, background_idle={idle})",
        lambda pid: (thread_nices(pid), thread_policies(pid)))
    assert (logged["event"], logged["nice"], logged["policy"]) == ("cpu_priority", 7, "idle" if idle else "normal")
    assert threads >= 2 and len(nices) == threads  # the main thread and zmq's own
    assert set(nices.values()) == {7}
    assert set(policies.values()) == {os.SCHED_IDLE if idle else os.SCHED_OTHER}


def runtime_records(call: Callable[[ServiceRuntime], Any]) -> list[dict]:
    """The log records ``call`` makes on a fresh runtime."""
    out = io.StringIO()
    rt = ServiceRuntime("probe")
    try:
        rt.log.stream = out
        call(rt)
    finally:
        rt.close()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_refused_priority_is_logged_and_the_service_runs_on(monkeypatch):
    def refuse(*_args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "setpriority", refuse)
    [record] = runtime_records(lambda rt: rt.yield_cpu(CpuConfig(background_nice=5)))
    assert (record["event"], record["nice"], record["detail"]) == ("cpu_priority_refused", 5, "Permission denied")


def test_an_os_without_sched_idle_runs_at_the_nice_alone_and_says_so(monkeypatch):
    monkeypatch.setattr(os, "setpriority", lambda *_a: None)
    monkeypatch.delattr(os, "SCHED_IDLE")
    refused, applied = runtime_records(lambda rt: rt.yield_cpu(CpuConfig(background_nice=5, background_idle=True)))
    assert (refused["event"], refused["detail"]) == ("cpu_priority_refused", "this OS has no SCHED_IDLE")
    assert (applied["event"], applied["policy"]) == ("cpu_priority", "normal")


def test_a_service_given_cores_runs_there_with_every_thread_zmq_starts():
    core = max(os.sched_getaffinity(0))  # on two cores or more, not where a process starts
    logged, threads, cores = started_service(f"cores=frozenset({{{core}}})", thread_cores)
    assert (logged["event"], logged["cores"]) == ("cpu_cores", [core])
    assert threads >= 2 and len(cores) == threads  # the main thread and zmq's own
    assert set(cores.values()) == {frozenset({core})}


def test_refused_cores_are_logged_and_the_service_runs_where_it_was(monkeypatch):
    def refuse(*_args):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    [record] = runtime_records(lambda rt: rt.pin_cores(frozenset({99})))
    assert (record["event"], record["cores"], record["detail"]) == ("cpu_cores_refused", [99], "Invalid argument")


@pytest.mark.parametrize(("allowed", "split", "fill_path", "off_path"), [
    ({0, 1, 2, 3}, True, {2, 3}, {0, 1}),
    ({0, 1}, True, {1}, {0}),
    ({0, 1}, False, None, None),  # cpu.split_cores off: every service where supervisord started it
    ({3}, True, None, None),  # one core: nothing to split
])
def test_service_cores_split_what_this_process_may_use(monkeypatch, allowed, split, fill_path, off_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(allowed))
    cpu = CpuConfig(split_cores=split)
    assert service_cores(cpu, fill_path=True) == (None if fill_path is None else frozenset(fill_path))
    assert service_cores(cpu, fill_path=False) == (None if off_path is None else frozenset(off_path))


def test_hold_at_closes_holds_housekeeping_through_each_close_burst_from_marketdata_s_clock(tmp_path):
    from pathlib import Path

    from common.clock import CLOSE_AFTER_MS, CLOSE_BEFORE_MS
    from common.wall import wall_ms
    from config.settings import parse_config
    from tests.support.stack import stack_config, stack_security

    raw = stack_config()
    rt = ServiceRuntime("gateway", stack_security(raw, tmp_path, "gateway"))
    try:
        watch = rt.hold_at_closes(parse_config(raw, base_dir=Path(tmp_path)))
        assert not rt._hold(0.0)  # no clock yet: nothing is held
        hour = 3_600_000
        for offset_ms, held in ((-500.0, False), (-CLOSE_BEFORE_MS / 2, True), (CLOSE_AFTER_MS / 2, True),
                                (CLOSE_AFTER_MS + 100.0, False)):
            now = wall_ms()  # the 1h bar closing at market 100 h is due at now - offset_ms (wall)
            watch.follow({"market_origin": 99 * hour, "wall_origin": now - offset_ms - 1000.0, "speed": 3600})
            assert rt._hold(0.0) is held, offset_ms
        watch.follow({"market_origin": "x"})  # a bad clock message: counted, the last good mapping kept
        assert rt.stats.dropped["bad_clock"] == 1 and not rt._hold(0.0)
    finally:
        rt.close()


def test_an_idle_loop_sleeps_until_its_next_timer_instead_of_spinning_the_last_ms(tmp_path, in_process):
    """The poll's timeout was the wait rounded down: the last fraction of a ms before every due
    timer was spun in poll(0) turns, on the CPU the fills of a bar close need."""
    from tests.support.stack import stack_config, stack_security

    raw = stack_config()
    rt = ServiceRuntime("portfolio", stack_security(raw, tmp_path, "portfolio"))
    rt.log.stream = io.StringIO()
    # a socket to poll, as every service has (a poller of none returns at once); its feed is silent
    rt.subscribe([raw["endpoints"]["marketdata"]["pub"]], ["clock"], lambda *_a: None)
    fired: list[int] = []
    turns: list[int] = []

    def tick() -> None:
        fired.append(1)
        if len(fired) == 40:
            rt.request_stop()

    rt.every(0.0105, tick)  # never a whole number of ms away
    rt.step_between_messages(lambda: bool(turns.append(1)))  # counts the loop's turns; never busy
    rt.run()
    assert len(fired) == 40
    assert len(turns) <= 3 * len(fired), f"{len(turns)} loop turns for {len(fired)} timer runs"


@pytest.mark.parametrize("local_ipc", [True, False])
def test_bus_security_aliases_every_loopback_tcp_endpoint_while_local_ipc_is_on(tmp_path, local_ipc):
    from tests.support.stack import stack_config, stack_security

    raw = stack_config()
    raw["bus"] = {"local_ipc": local_ipc}
    raw["endpoints"]["pricer"]["rep"] = "ipc:///tmp/go-trader-test-pricer-rep"  # not tcp: no alias
    security = stack_security(raw, tmp_path, "signals")
    tcp = [ep for pair in raw["endpoints"].values() for ep in pair.values() if ep.startswith("tcp://")]
    tcp += [raw["engines"]["options"]["pub"], raw["engines"]["options"]["rep"]]
    expected = {ep: "ipc://@go-trader-bus/" + ep.removeprefix("tcp://") for ep in tcp} if local_ipc else {}
    assert security.aliases == expected
    portfolio = raw["endpoints"]["portfolio"]["rep"]
    assert security.address(portfolio) == expected.get(portfolio, portfolio)
