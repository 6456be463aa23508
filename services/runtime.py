"""One lifecycle for every service: init, open sockets, loop, stop, close (LINGER 0), term.

SIGTERM and SIGINT set a flag that the loop checks, so a service always leaves through the
same door: its ``on_stop`` saves what it owns, then the sockets close and the context ends.
A failing callback is logged and counted; it never takes the service down.

A service dies with the process that started it (Linux ``PR_SET_PDEATHSIG``): when
supervisord itself is SIGKILLed, its programs get SIGTERM, save and exit instead of running
on as unsupervised orphans beside the copies a new supervisord starts.

Every socket the runtime opens is authenticated (common/bus_auth.py): it speaks as the bus
identity of its service, with the keys from the key directory of the config the process runs
(``config_path()``), unless the caller hands it a ``BusSecurity``. There is no plain mode:
without readable keys the first socket stops the process with the fix in the message.
"""
from __future__ import annotations

import ctypes
import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import zmq

from common.bus import BusStats, Publisher, Replier, Requester, Subscriber
from common.bus_auth import BusKeysError, BusSecurity, load_security, stop_zap, zap_handler
from common.clock import CLOSE_AFTER_MS, CLOSE_BEFORE_MS, CloseWindow, MarketClock, clock_from_message
from common.cores import split_cores
from common.log import EventLog
from common.messages import HEARTBEAT_SECONDS
from common.timeframes import timeframe_ms
from common.wall import wall_ms
from config.schema import local_alias
from config.settings import Config, ConfigError, CpuConfig, StrategyConfig, load_config

SLOW_CALLBACK_SECONDS = 0.5
HEAP_TRIM_SECONDS = 10.0
REPAIR_SECONDS = 1.0  # how soon a subscriber reconnects an endpoint an impostor broke
# A housekeeping timer waits while the service's hold check says a bar close's burst is on
# (hold_housekeeping), but never more than this past its due time.
HOUSEKEEPING_MAX_DELAY_SECONDS = 5.0
# A housekeeping run that would still be going at a close waits too: its last run's length,
# at most this, is looked ahead (a save begun 10 ms before a close held the close's orders).
HOLD_LOOKAHEAD_MAX_SECONDS = 0.1
REQUESTS_PER_TURN = 1  # requests a replier serves per loop turn, between the subscriptions' reads
HOLD_RECHECK_SECONDS = 0.005  # how often a held timer asks again (the loop still wakes for messages)
# glibc mallopt settings for a small, long-running process (measured in bench/bench_memory):
# two arenas instead of 8 per core for zmq's I/O threads; a fixed 128 KiB mmap threshold, so
# a large transient (a state snapshot, a numpy temporary) is mapped and unmapped instead of
# raising the heap's high-water mark (glibc otherwise raises the threshold after each such
# free); and the heap trimmed past 128 KiB of free top.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MALLOC_SETTINGS = ((M_ARENA_MAX, 2), (M_MMAP_THRESHOLD, 128 * 1024), (M_TRIM_THRESHOLD, 128 * 1024))
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29


def _glibc() -> Any:
    """glibc, or None on a libc without malloc_trim/mallopt (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        if libc.malloc_trim and libc.mallopt:  # attribute lookup raises when a symbol is missing
            return libc
        return None
    except (OSError, AttributeError):
        return None


def tune_malloc(libc: Any) -> list[tuple[int, int]]:
    """Apply MALLOC_SETTINGS; the ones glibc accepted (mallopt returns 1 on success)."""
    return [(param, value) for param, value in MALLOC_SETTINGS if libc.mallopt(param, value) == 1]


_libc = _glibc()


def trim_heap() -> bool:
    """Give freed heap pages back to the OS (glibc keeps them otherwise): a service's numpy
    temporaries would make its RSS creep though nothing leaks, and supervisord's import scratch
    would be inherited by every service it forks. False without glibc."""
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True


_PARENT_PID = 0  # who started us, read as early as this process can


def _remember_parent() -> None:
    """At import, and again in a child forked from an importer: a service that
    services/forking_supervisord.py forks was started by that supervisord."""
    global _PARENT_PID
    _PARENT_PID = os.getppid()


_remember_parent()
os.register_at_fork(after_in_child=_remember_parent)


def die_with_parent(libc: Any, parent_pid: int, sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` when our parent exits; True when armed. The parent may
    have died before we asked (we were reparented, or a supervisord child now hangs off init):
    then we are already an orphan, and ``sig`` is raised at once."""
    if libc is None or libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    ppid = os.getppid()
    if ppid != parent_pid or (ppid == 1 and os.environ.get("SUPERVISOR_ENABLED")):
        signal.raise_signal(sig)
    return True


def precise_wakeups() -> bool:
    """Wake the calling thread (and the threads it starts from now on) when its timer is due, not
    up to 50 us later: Linux's default timer slack lets the kernel batch a sleeper's wake-up with
    others, and marketdata's close is such a wake-up (its bars are due at the close, in wall
    time). False without glibc or where prctl refuses (not Linux)."""
    return _libc is not None and _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0


@dataclass
class _Timer:
    interval: float
    callback: Callable[[], Any]
    due: float
    self_timed: bool = False  # the callback returns the seconds until it wants to run again
    housekeeping: bool = False  # waits while the service's hold check is True (hold_housekeeping)
    took: float = 0.0  # seconds its last run took: a housekeeping run must end before a close's burst


class CloseWatch:
    """When a bar close's burst is on in wall time (``hold_housekeeping``), from a clock mapping:
    marketdata's own, or the one its ``clock`` messages carry. A bad message is counted
    (``bad_clock``) and the last good mapping kept."""

    def __init__(self, bar_periods_ms: Any, stats: BusStats) -> None:
        self.periods = tuple(sorted(set(bar_periods_ms)))
        self.stats = stats
        self.window: CloseWindow | None = None

    @classmethod
    def of_strategies(cls, strategies: Iterable[StrategyConfig], stats: BusStats) -> "CloseWatch":
        """The watch of the closes of ``strategies``' bars."""
        return cls((timeframe_ms(sc.timeframe) for sc in strategies), stats)

    def use(self, clock: MarketClock) -> None:
        if self.periods and (self.window is None or self.window.clock != clock):
            self.window = CloseWindow(clock, self.periods, CLOSE_BEFORE_MS, CLOSE_AFTER_MS)

    def follow(self, body: Any) -> None:
        try:
            self.use(clock_from_message(body))
        except ValueError:
            self.stats.count_drop("bad_clock")

    def holds(self, now_ms: float, ahead_ms: float = 0.0) -> bool:
        """True at ``now_ms``, or ``ahead_ms`` later: work that long would still be running then."""
        return self.window is not None and (self.window.holds(now_ms) or self.window.holds(now_ms + ahead_ms))


def service_cores(cpu: CpuConfig, fill_path: bool) -> frozenset[int] | None:
    """The cores of a service on the spot fill path (marketdata, the engines with spot
    strategies, the portfolio) or off it, when ``cpu.split_cores`` is on and this process may
    use two cores or more (``common.cores.split_cores``); None: where it is."""
    if not cpu.split_cores or not hasattr(os, "sched_getaffinity"):
        return None
    split = split_cores(os.sched_getaffinity(0))
    return None if split is None else split[0 if fill_path else 1]


def bus_security(cfg: Config, identity: str) -> BusSecurity:
    """The bus keys of ``identity`` (a service, or ``reader``) from ``cfg``'s key directory,
    pinned to the services that bind ``cfg``'s endpoints; BusKeysError says what to fix."""
    binds = {service: (ep.pub, ep.rep) for service, ep in cfg.endpoints.items()}
    binds["signals"] = tuple(ep for e in cfg.engines for ep in (e.pub, e.rep))  # every engine holds the signals key
    aliases = {ep: alias for eps in binds.values() for ep in eps
               if cfg.bus.local_ipc and (alias := local_alias(ep)) is not None}
    return load_security(cfg.bus.keys_dir, identity, binds, aliases)


class ServiceRuntime:
    """Sockets, timers and the poll loop of one service process. ``security`` defaults to the
    keys of the service called ``name``, read when the first socket opens."""

    def __init__(self, name: str, security: BusSecurity | None = None, background: CpuConfig | None = None,
                 cores: frozenset[int] | None = None) -> None:
        self.name = name
        self._security = security
        self._refused_seen = 0
        self.log = EventLog(name)
        self.stats = BusStats()
        self.malloc_settings = tune_malloc(_libc) if _libc is not None else []  # before zmq starts its threads
        if background is not None:
            self.yield_cpu(background)  # before zmq starts its threads, which inherit it
        if cores is not None:
            self.pin_cores(cores)  # likewise
        self.dies_with_parent = False
        self.ctx = zmq.Context()
        self.started_ms = wall_ms()
        self.stopping = False
        self.errors = 0
        self.publisher: Publisher | None = None
        self._closables: list[Any] = []
        self._readers: list[tuple[zmq.Socket, Callable[[], None]]] = []
        self._subscribers: list[Subscriber] = []
        self._timers: list[_Timer] = []
        self._steps: list[Callable[[], bool]] = []
        self._busy = False
        self._heartbeat_extra: Callable[[], dict[str, Any]] = dict
        self._heartbeat_timer: _Timer | None = None
        self._hold: Callable[[float], bool] = lambda _ahead_ms: False
        self._after_turn: list[tuple[float, Callable[[], Any]]] = []  # (monotonic due, callback)
        self._looping = False
        # What keeps this service from doing its job right now (name -> one-line reason):
        # the heartbeat carries it and the gateway's /healthz is 503 while any is set.
        self.problems: dict[str, str] = {}
        self._poller = zmq.Poller()
        self.every(HEAP_TRIM_SECONDS, trim_heap, housekeeping=True)
        self.every(REPAIR_SECONDS, self._repair_subscribers, housekeeping=True)

    def yield_cpu(self, cpu: CpuConfig) -> None:
        """Run as a service off the spot fill path: at ``cpu.background_nice``, and under
        SCHED_IDLE when ``cpu.background_idle`` (Linux), so the feed, the spot engine and the
        portfolio get the cores when a bar close wakes them all at once; this service still
        gets every idle cycle. Applies to the calling thread and the threads it starts from
        now on; a refusal (not root, lowering the nice value; no SCHED_IDLE) is logged, not fatal."""
        idle = getattr(os, "SCHED_IDLE", None) if cpu.background_idle else None
        try:
            if cpu.background_nice:
                os.setpriority(os.PRIO_PROCESS, 0, cpu.background_nice)
            if idle is not None:
                os.sched_setscheduler(0, idle, os.sched_param(0))
        except OSError as exc:
            self.log.warning("cpu_priority_refused", nice=cpu.background_nice, idle=cpu.background_idle,
                             detail=exc.strerror or str(exc))
            return
        if cpu.background_idle and idle is None:
            self.log.warning("cpu_priority_refused", idle=True, detail="this OS has no SCHED_IDLE")
        self.log.info("cpu_priority", nice=os.getpriority(os.PRIO_PROCESS, 0),
                      policy="idle" if idle is not None else "normal")

    def pin_cores(self, cores: frozenset[int]) -> None:
        """Run on ``cores`` (``service_cores``): the calling thread and the threads it starts
        from now on. A refusal (a core outside this process's cpuset, an OS without affinity)
        is logged, not fatal: the service runs where it was."""
        try:
            os.sched_setaffinity(0, cores)
        except (OSError, AttributeError) as exc:
            self.log.warning("cpu_cores_refused", cores=sorted(cores),
                             detail=getattr(exc, "strerror", None) or str(exc))
            return
        self.log.info("cpu_cores", cores=sorted(os.sched_getaffinity(0)))

    # --- sockets -------------------------------------------------------------------------
    @property
    def security(self) -> BusSecurity:
        if self._security is None:
            try:
                self._security = bus_security(load_config(config_path()), self.name)
            except (ConfigError, BusKeysError) as exc:
                self.log.error("bus_keys_unreadable", detail=str(exc))
                raise SystemExit(f"{self.name}: {exc}") from None
        return self._security

    def bind_publisher(self, endpoint: str) -> Publisher:
        self.publisher = Publisher(self.ctx, endpoint, self.name, self.stats, security=self.security)
        self._closables.append(self.publisher)
        self.every(HEARTBEAT_SECONDS, self._heartbeat, housekeeping=True)
        self._heartbeat_timer = self._timers[-1]
        return self.publisher

    def subscribe(self, endpoints: list[str], topics: list[str], on_message: Callable[[str, Any], None]) -> Subscriber:
        sub = Subscriber(
            self.ctx, endpoints, topics, self.stats,
            on_drop=lambda reason, detail: self.log.warning("bad_frame_dropped", reason=reason, detail=detail),
            security=self.security,
        )
        self._closables.append(sub)
        self._subscribers.append(sub)

        def drain() -> None:
            for _ in range(10_000):  # bounded so timers keep running under a flood
                got = sub.receive(0)
                if got is None:
                    return
                on_message(*got)

        self._readers.append((sub.socket, drain))
        self._poller.register(sub.socket, zmq.POLLIN)
        return sub

    def bind_replier(self, endpoint: str, handlers: dict[str, Callable[[Any], Any]]) -> Replier:
        rep = Replier(
            self.ctx, endpoint, self.name, handlers, self.stats,
            on_error=lambda kind, detail: self.log.error("request_failed", request=kind, detail=detail),
            security=self.security,
        )
        self._closables.append(rep)

        def serve() -> None:
            # One request per turn: the next waits for the turn's subscriptions, so a tick that came
            # before an order is read before it even when both queued up while a reply was slow.
            rep.serve_pending(REQUESTS_PER_TURN)

        self._readers.append((rep.socket, serve))
        self._poller.register(rep.socket, zmq.POLLIN)
        return rep

    def requester(self, endpoint: str, timeout_ms: int = 2000, retries: int = 3) -> Requester:
        req = Requester(self.ctx, endpoint, self.name, timeout_ms, retries, self.stats,
                        security=lambda: self.security, while_waiting=self._beat_if_due)
        self._closables.append(req)
        return req

    # --- timers and heartbeat -----------------------------------------------------------
    def every(self, seconds: float, callback: Callable[[], None], *, housekeeping: bool = False) -> None:
        """Run ``callback`` every ``seconds``; a ``housekeeping`` one (a save, a snapshot) waits
        while the hold check is True (``hold_housekeeping``), at most HOUSEKEEPING_MAX_DELAY_SECONDS."""
        self._timers.append(_Timer(seconds, callback, time.monotonic(), housekeeping=housekeeping))

    def hold_housekeeping(self, hold: Callable[[float], bool]) -> None:
        """``hold(ahead_ms)`` is True while latency-critical work is near (a bar close and the
        orders it brings), now or within ``ahead_ms`` (what the timer's last run took):
        housekeeping timers then wait, so a fill never queues behind a save begun just before."""
        self._hold = hold

    def hold_at_closes(self, cfg: Config) -> CloseWatch:
        """``hold_housekeeping`` for a service off the fill path: its housekeeping timers (the
        pricer's chains, the gateway's requests to the portfolio) wait out the burst of orders
        at each close of ``cfg``'s strategies' bars, placed in wall time by marketdata's
        ``clock`` messages (a subscription of their own). Returns the watch they feed."""
        watch = CloseWatch.of_strategies(cfg.strategies, self.stats)
        self.subscribe([cfg.endpoints["marketdata"].pub], ["clock"], lambda _topic, env: watch.follow(env.body))
        self.hold_housekeeping(lambda ahead_ms: watch.holds(wall_ms(), ahead_ms))
        return watch

    def wake(self, callback: Callable[[], float]) -> Callable[[float], None]:
        """A timer that sets its own beat: ``callback`` returns the seconds until its next run
        (marketdata wakes at each bar's close rather than on a fixed period). Returns a function
        that brings the next run forward to at most that many seconds from now, for work that
        came up elsewhere (an order the portfolio asked to be sent again)."""
        timer = _Timer(0.0, callback, time.monotonic(), self_timed=True)
        self._timers.append(timer)

        def within(seconds: float) -> None:
            timer.due = min(timer.due, time.monotonic() + seconds)

        return within

    def step_between_messages(self, step: Callable[[], bool]) -> None:
        """Long work cut into small steps: one step per loop turn, between socket reads, so a
        message never waits behind the whole job. ``step`` returns True while work remains."""
        self._steps.append(step)

    def after_turn(self, callback: Callable[[], Any], delay: float = 0.0) -> None:
        """Run ``callback`` once this loop turn's requests are answered and ``delay`` seconds have
        passed (a fill's publication is never in the way of its ack on its way back); at once
        when the loop is not running (a test, ``once``), and before the service stops."""
        if self._looping:
            self._after_turn.append((time.monotonic() + delay, callback))
        else:
            self._guarded(callback)

    def heartbeat_status(self, extra: Callable[[], dict[str, Any]]) -> None:
        """What this service adds to its heartbeat (the gateway shows it in /healthz)."""
        self._heartbeat_extra = extra

    def _repair_subscribers(self) -> None:
        for sub in self._subscribers:
            failed = sub.repair()
            if failed:
                self.stats.dropped["bus_handshake_failed"] += len(failed)
                self.log.warning("bus_impostor_refused", endpoints=failed,
                                 detail="the peer does not speak CURVE: it is not a go-trader service")

    def _report_refused_clients(self) -> None:
        """Count and log the clients the ZAP handler turned away since the last heartbeat."""
        zap = zap_handler(self.ctx)
        if zap is None or zap.refused == self._refused_seen:
            return
        new, self._refused_seen = zap.refused - self._refused_seen, zap.refused
        self.stats.dropped["bus_client_refused"] += new
        self.log.warning("bus_client_refused", count=new, last=zap.last_refused)

    def _beat_if_due(self) -> None:
        """The heartbeat, on time even while the loop waits for a peer's reply: a service
        blocked on a slow portfolio is alive, and /healthz must not say otherwise."""
        timer = self._heartbeat_timer
        now = time.monotonic()
        if timer is not None and now >= timer.due:
            timer.due = max(timer.due + timer.interval, now)
            self._guarded(self._heartbeat)

    def _heartbeat(self) -> None:
        self._report_refused_clients()
        if self.publisher is None:
            return
        body = {
            "service": self.name,
            "pid": os.getpid(),
            "started_ms": self.started_ms,
            "uptime_s": round((wall_ms() - self.started_ms) / 1000, 1),
            "bus": self.stats.to_dict(),
            "errors": self.errors,
            "problems": [f"{name}: {reason}" for name, reason in sorted(self.problems.items())],
        }
        body.update(self._heartbeat_extra())
        self.publisher.publish(f"heartbeat.{self.name}", "heartbeat", body)

    # --- loop ----------------------------------------------------------------------------
    def _guarded(self, callback: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return callback()
        except Exception as exc:
            self.errors += 1
            self.log.error("callback_failed", callback=getattr(callback, "__name__", "?"),
                           error=f"{type(exc).__name__}: {exc}")
        finally:
            took = time.monotonic() - started
            if took > SLOW_CALLBACK_SECONDS:  # everything else on this loop waited that long
                self.log.warning("slow_callback", callback=getattr(callback, "__name__", "?"),
                                 took_ms=round(took * 1000))

    def set_problem(self, name: str, reason: str) -> None:
        """Flag what keeps this service from its job (``problems``); logged once per outage."""
        if name not in self.problems:
            self.log.error("problem", name=name, reason=reason)
        self.problems[name] = reason

    def clear_problem(self, name: str) -> None:
        if self.problems.pop(name, None) is not None:
            self.log.info("problem_cleared", name=name)

    def request_stop(self, *_args: Any) -> None:
        self.stopping = True

    def run(self, on_stop: Callable[[], None] | None = None) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        # Armed here, not in __init__: only a process that runs as a service dies with its parent
        # (a test or `make once` building a runtime in-process is left alone). The check against
        # the parent seen at import still catches a supervisord that died while we started up.
        self.dies_with_parent = die_with_parent(_libc, _PARENT_PID)
        self.log.info("started", pid=os.getpid(), parent=_PARENT_PID, dies_with_parent=self.dies_with_parent)
        self._looping = True
        try:
            while not self.stopping:
                now = time.monotonic()
                next_due = now + 0.1
                for timer in self._timers:
                    if now >= timer.due:
                        if timer.housekeeping and now - timer.due < HOUSEKEEPING_MAX_DELAY_SECONDS \
                                and self._held(timer):
                            next_due = min(next_due, now + HOLD_RECHECK_SECONDS)
                            continue
                        timer.due = max(timer.due + timer.interval, now)
                        started = time.monotonic()
                        wait = self._guarded(timer.callback)
                        timer.took = time.monotonic() - started
                        if timer.self_timed:
                            timer.due = time.monotonic() + (wait if isinstance(wait, (int, float)) else 0.05)
                    next_due = min(next_due, timer.due)
                next_due = min([next_due, *(due for due, _ in self._after_turn)])
                # Rounded up: rounded down, the last fraction of a ms before each due timer was a
                # busy loop of poll(0), on the CPU a bar close's fills need.
                timeout_ms = max(0, min(100, math.ceil((next_due - time.monotonic()) * 1000)))
                ready = dict(self._poller.poll(0 if self._busy else timeout_ms))
                for sock, callback in self._readers:
                    if sock in ready:
                        self._guarded(callback)
                self._run_after_turn()
                self._busy = False
                for step in self._steps:
                    self._busy |= bool(self._guarded(step))
        finally:
            self._looping = False
            self._run_after_turn(everything=True)
            if on_stop is not None:
                try:
                    on_stop()
                except Exception as exc:
                    self.log.error("stop_failed", error=f"{type(exc).__name__}: {exc}")
            self.close()
            self.log.info("stopped")

    def _held(self, timer: _Timer) -> bool:
        """The hold check for a due housekeeping timer, looking as far ahead as its last run took."""
        ahead_ms = min(timer.took, HOLD_LOOKAHEAD_MAX_SECONDS) * 1000
        return bool(self._guarded(lambda: self._hold(ahead_ms)))

    def _run_after_turn(self, everything: bool = False) -> None:
        """The ``after_turn`` callbacks that are due (all of them when ``everything``), in order."""
        if not self._after_turn:
            return
        now = time.monotonic()
        due: list[Callable[[], Any]] = []
        waiting = []
        for at, callback in self._after_turn:
            if everything or at <= now:
                due.append(callback)
            else:
                waiting.append((at, callback))
        self._after_turn = waiting
        for callback in due:
            self._guarded(callback)

    def close(self) -> None:
        for closable in self._closables:
            closable.close()
        stop_zap(self.ctx)
        self.ctx.term()


DEFAULT_CONFIG = "config/default.json"


def config_path(argv: list[str] | None = None) -> str:
    """``--config PATH`` if given, else $GO_TRADER_CONFIG, else config/default.json."""
    import argparse

    parser = argparse.ArgumentParser(add_help=True)
    parser.add_argument("--config", default=os.environ.get("GO_TRADER_CONFIG") or DEFAULT_CONFIG)
    args, _unknown = parser.parse_known_args(argv)
    return args.config
