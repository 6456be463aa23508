"""marketdata: owns the market feed and the market clock.

Publishes  bar.<symbol>.<tf> (closed bars, at their close: ``ts_close`` and ``wall_due_ms`` in the
           body), tick.<symbol> (last price), clock (market time and the wall/market mapping:
           market_origin, wall_origin, speed), heartbeat.marketdata
Answers    history {symbol, timeframe, limit} -> rows; prices -> {symbol: {price, ts}}; status
Calls      services.feeds.market (sim / replay / live), common.clock.MarketClock

The market time it has reached is saved beside the state file, so a restarted feed resumes
where it stopped instead of replaying days the portfolio has already traded. Market time never
moves backwards across restarts: the clock file is written atomically with a ``.bak``, an
unreadable file falls back to the ``.bak`` (logged), and with neither usable the service
refuses to start rather than rewind the market to the feed's start. One writer: the clock
file is only touched under ``marketdata.lock`` in the same directory.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from common.bus import RequestError
from common.clock import MarketClock, next_close
from common.dir_lock import DirLock, LockHeld, StateDirMissing, prepare_state_dir
from common.state_store import StateFileError, load_state, save_state
from common.timeframes import timeframe_ms
from common.wall import wall_ms
from config.settings import Config, load_config
from services.feeds.feed import MarketFeed
from services.feeds.market import build_feed_from_config
from services.runtime import CloseWatch, ServiceRuntime, config_path, precise_wakeups, service_cores

TICK_SECONDS = 0.05  # ticks and the clock at least this often (wall); bars at their close
# A close's bars are made this long (wall) before it and published at it: making them took
# 0.5 ms at the median (aggregating the minute steps of three symbols), on the bar's path.
PREPARE_SECONDS = 0.003
# The last stretch before a close is waited out awake, reading the clock: a sleeper on an idle
# core was woken 0.17-0.20 ms late at the median and 0.39 ms at p99 (two runs of 300 closes
# 100 ms apart, timer slack 1 ns), and every bar of the close carried that lateness to the
# fills; awake for the last 0.5 ms, 0.01 ms at the median and 0.02-0.18 ms at p99. At most
# this much CPU per close.
CLOSE_SPIN_SECONDS = 0.0005
CLOCK_SAVE_SECONDS = 0.25
MAX_HISTORY = 5000
SLIP_LOG_SECONDS = 10.0  # a machine that cannot keep up slips at every close: one line per this, with totals
LOCK_NAME = "marketdata.lock"



class ClockFileError(RuntimeError):
    """The clock file and its .bak are both unusable; starting would rewind the market."""


class MarketDataService:
    def __init__(self, cfg: Config, runtime: ServiceRuntime) -> None:
        self.cfg = cfg
        self.rt = runtime
        self.clock_file = Path(cfg.state_file).parent / "marketdata.clock.json"
        self.lock: DirLock | None = None
        if cfg.feed.mode != "live":  # live market time is the wall clock: no file to own
            state_dir = prepare_state_dir(self.clock_file.parent, cfg.create_state_dir)
            self.lock = DirLock(state_dir / LOCK_NAME).acquire()  # LockHeld: another marketdata is here
        self.feed: MarketFeed = build_feed_from_config(cfg, log=runtime.log)
        resume_ts = self._resume_ts()
        if cfg.feed.mode == "live":  # live market time is the wall clock (speed 1)
            self.feed.start(int(wall_ms()))
        elif resume_ts is not None:
            self.feed.start(resume_ts)
        elif cfg.feed.mode == "sim":
            self.feed.start(cfg.feed.start_ms)
        else:  # replay starts after its warm-up bars
            self.feed.start()
        self.clock = MarketClock(self.feed.now_ts, int(wall_ms()), cfg.feed.speed)
        self.rt.log.info("feed_started", mode=cfg.feed.mode, market_ts=self.feed.now_ts,
                         resumed=resume_ts is not None, speed=cfg.feed.speed)
        self.bars_published = 0
        self.clock_slips = 0  # stalls after which the clock was moved on (status)
        self.market_ms_slipped = 0
        self.slip_logged_at = -SLIP_LOG_SECONDS  # monotonic s
        self.bar_periods_ms = sorted({timeframe_ms(tf) for tf in self.feed.timeframes})
        self.closes = CloseWatch(self.bar_periods_ms, self.rt.stats)
        self.closes.use(self.clock)
        self.next_close = self.close_after(self.feed.now_ts)  # the market time of the next bar close

    def schedule(self) -> None:
        """The feed's timers: ``advance`` wakes at each close and tick; the clock save and the
        runtime's own housekeeping (heartbeat, heap trims) wait while ``near_close``."""
        self.rt.hold_housekeeping(self.near_close)
        self.rt.wake(self.advance)
        self.rt.every(CLOCK_SAVE_SECONDS, self.save_clock, housekeeping=True)

    def near_close(self, ahead_ms: float = 0.0) -> bool:
        """True within a bar close's burst: the heartbeat and heap trims wait (ServiceRuntime),
        leaving the close's CPU to the bar, the decisions and the orders."""
        return self.cfg.feed.mode != "live" and self.closes.holds(wall_ms(), ahead_ms)

    def _identity(self) -> dict[str, Any]:
        replay = {s: str(p) for s, p in self.cfg.feed.replay.files.items()} if self.cfg.feed.mode == "replay" else {}
        return {"mode": self.cfg.feed.mode, "seed": self.cfg.feed.seed, "start_ts": self.cfg.feed.start_ms,
                "replay": replay}

    def _resume_ts(self) -> int | None:
        """Where the saved clock stopped, None on a first start or a different feed; the .bak
        when the file is unusable; ClockFileError when neither is. Never before the market time
        the portfolio has already seen (the clock is saved every CLOCK_SAVE_SECONDS, so a killed
        feed's file may lag the ticks it published)."""
        if self.cfg.feed.mode == "live":
            return None
        backup = self.clock_file.with_name(self.clock_file.name + ".bak")
        passed_over: list[str] = []
        damaged = False
        for path in (self.clock_file, backup):
            try:
                saved = load_state(path)
                if saved is None:
                    passed_over.append(f"{path}: missing")
                    continue
                market_ts = saved.get("market_ts")
                if isinstance(market_ts, bool) or not isinstance(market_ts, int) or market_ts < 0:
                    raise StateFileError(path, f"'market_ts' must be an integer >= 0, got {market_ts!r}")
            except StateFileError as exc:
                passed_over.append(str(exc))
                damaged = True
                continue
            if passed_over:
                self.rt.log.warning("clock_file_restored_from_bak", detail=passed_over[0], market_ts=market_ts)
            if saved.get("feed") != self._identity():
                return None  # another feed (seed, start or files changed in config): its own clock
            return max(market_ts, self._portfolio_market_ts())
        if damaged:
            raise ClockFileError(
                f"{self.clock_file}: no usable market clock ({'; '.join(passed_over)}). Starting would rewind "
                f"the market to the feed's start. Restore the file (or its .bak) from a backup, or delete "
                f"both to start the simulated market from the beginning on purpose."
            )
        return None

    def _portfolio_market_ts(self) -> int:
        """The portfolio's market time from its state file (read only), 0 when unknown."""
        try:
            state = load_state(self.cfg.state_file)
        except (StateFileError, OSError):
            return 0
        market_ts = state.get("market_ts") if state else None
        return market_ts if isinstance(market_ts, int) and not isinstance(market_ts, bool) else 0

    def save_clock(self) -> None:
        """Write the clock atomically (the previous file kept as .bak); a failure is a persist
        problem, retried on the next save. Run as housekeeping (``schedule``): a save (two
        fsyncs and a rename, 1-7 ms, more on a busy disk) waits out each close's burst, so
        neither the close's bars nor the portfolio's journal fsync, which its acks wait for,
        share the disk with it."""
        if self.cfg.feed.mode == "live":
            return
        try:
            save_state(self.clock_file, {"feed": self._identity(), "market_ts": self.feed.now_ts})
        except OSError as exc:
            self.rt.set_problem("persist", f"cannot write {self.clock_file.name}: {exc.strerror or exc}")
            return
        self.rt.clear_problem("persist")

    def close_after(self, market_ts: int | None) -> int | None:
        """The first bar close after ``market_ts``; None for a live feed (its bars are ready when
        the poller has them: picked up each tick) or one that has finished."""
        if self.cfg.feed.mode == "live" or self.feed.finished or market_ts is None:
            return None
        return next_close(market_ts, self.bar_periods_ms)

    def advance(self) -> float:
        """Publish the latest ticks, the bars that closed and the clock; return the seconds until
        the next wake-up: PREPARE_SECONDS before the next bar's close (market time mapped to wall
        time through the clock), or the next tick, whichever comes first. Woken that close to a
        close, it makes the close's bars and ticks (the feed never reads the clock, so they are the
        bars of that market time whenever they are made), waits for the close in wall time, and
        publishes them then: at their close, never before it, and not after the feed's work.
        Each bar carries ``ts_close`` (market ms) and ``wall_due_ms``, the wall time its close
        maps to, so a subscriber can measure lateness. The ticks go out first: the portfolio
        fills the close's orders at them, and an engine that takes the core as soon as a bar
        reaches it (on a host's fill-path core it does) would otherwise hold them back until its
        orders were sent, leaving the portfolio to wait for its ticks (0.4-0.6 ms of a close
        with 18 orders, traced).

        A simulated or replayed market never skips a close. Woken so late that the close after
        the due one has passed too (the process or the machine stalled), it publishes the due
        close alone, with its lateness, and then moves the clock on (``slip_clock``): the market
        resumes from that close instead of jumping over closes whose bars would reach the
        engines together, to be decided on as one."""
        pub = self.rt.publisher
        now = wall_ms()
        target = self.clock.market_ms(now)
        close = self.next_close
        stalled = False
        if close is not None and now >= self.clock.wall_ms_at(close) - PREPARE_SECONDS * 1000:
            following = self.close_after(close)
            stalled = following is not None and target >= following
            target = close if stalled else max(target, close)  # float rounding must not hold back a due bar
        due = None if close is None else self.clock.wall_ms_at(close)
        update = self.feed.advance_to(target)
        if update.bars and due is not None:
            wait_until(due)  # made ahead: out at the close
        for symbol, (price, ts) in update.ticks.items():  # first: the close's orders fill at them
            pub.publish(f"tick.{symbol}", "tick", {"symbol": symbol, "price": price, "ts": ts})
        for bar in update.bars:
            pub.publish(f"bar.{bar.symbol}.{bar.timeframe}", "bar",
                        {**bar.to_dict(), "ts_close": bar.ts_close, "wall_due_ms": self.clock.wall_ms_at(bar.ts_close)})
            self.bars_published += 1
        if stalled:
            self.slip_clock()
        pub.publish("clock", "clock", {"ts": self.feed.now_ts, "finished": self.feed.finished, **self.clock.to_dict()})
        self.next_close = self.close_after(self.feed.now_ts)
        if self.next_close is None:
            return TICK_SECONDS
        until_close = (self.clock.wall_ms_at(self.next_close) - wall_ms()) / 1000 - PREPARE_SECONDS
        return min(TICK_SECONDS, max(0.0, until_close))

    def slip_clock(self) -> None:
        """Map the wall time now to the market time reached, so the next close is a whole bar
        period away: the market time a stall cost is given up, not caught up. The clock message
        after it carries the new mapping to every subscriber."""
        now = wall_ms()
        behind_ms = self.clock.market_ms(now) - self.feed.now_ts
        self.clock = MarketClock(self.feed.now_ts, now, self.cfg.feed.speed)
        self.closes.use(self.clock)
        self.clock_slips += 1
        self.market_ms_slipped += behind_ms
        if time.monotonic() - self.slip_logged_at >= SLIP_LOG_SECONDS:
            self.slip_logged_at = time.monotonic()
            self.rt.log.warning("market_clock_slipped", market_ts=self.feed.now_ts, behind_ms=behind_ms,
                                wall_ms_lost=round(behind_ms / self.cfg.feed.speed, 1), slips=self.clock_slips,
                                market_ms_slipped=self.market_ms_slipped)

    # --- requests --------------------------------------------------------------------
    def history(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RequestError("bad_request", "history needs {symbol, timeframe, limit}")
        symbol, timeframe = body.get("symbol"), body.get("timeframe")
        limit = body.get("limit", 1000)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_HISTORY:
            raise RequestError("bad_request", f"history.limit must be an integer 1..{MAX_HISTORY}, got {limit!r}")
        try:
            bars = self.feed.history(symbol, timeframe, limit)
        except ValueError as exc:
            raise RequestError("bad_request", str(exc)) from None
        return {"symbol": symbol, "timeframe": timeframe, "rows": bars.rows(), "now_ts": self.feed.now_ts}

    def prices(self, _body: Any) -> dict[str, Any]:
        return {"ts": self.feed.now_ts,
                "prices": {s: {"price": p, "ts": t} for s, (p, t) in self.feed.prices().items()}}

    def status(self, _body: Any = None) -> dict[str, Any]:
        stale_reasons = getattr(self.feed, "stale_reasons", lambda: [])()
        return {"mode": self.cfg.feed.mode, "market_ts": self.feed.now_ts, "speed": self.cfg.feed.speed,
                "finished": self.feed.finished, "bars_published": self.bars_published,
                "clock_slips": self.clock_slips, "market_ms_slipped": self.market_ms_slipped,
                "stale": bool(stale_reasons), "stale_reasons": stale_reasons[:10]}

    def stop(self) -> None:
        """Save the clock and stop a live feed's poller thread."""
        self.save_clock()
        getattr(self.feed, "stop", lambda: None)()
        if self.lock is not None:
            self.lock.release()


def wait_until(due_ms: float) -> None:
    """Return at wall time ``due_ms``, not before: asleep until CLOSE_SPIN_SECONDS ahead of it,
    then awake, reading the clock and yielding the core to any thread ready to run there
    (``time.sleep(0)`` would sleep: 40 us a call here, and 1 ms late at p99). The wall clock is
    read once and the wait kept on the monotonic one: a step of the wall clock (NTP) while it
    waits can neither keep it spinning nor end it early."""
    deadline = time.monotonic() + (due_ms - wall_ms()) / 1000
    if (asleep_s := deadline - CLOSE_SPIN_SECONDS - time.monotonic()) > 0:
        time.sleep(asleep_s)
    while time.monotonic() < deadline:
        os.sched_yield()


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(config_path(argv))
    precise = precise_wakeups()  # before the runtime's threads start, which inherit it
    rt = ServiceRuntime("marketdata", cores=service_cores(cfg.cpu, fill_path=True))
    rt.log.info("timer_slack", precise=precise)
    try:
        svc = MarketDataService(cfg, rt)
    except (ClockFileError, StateDirMissing, LockHeld) as exc:
        rt.log.error("clock_unusable", detail=str(exc))
        print(f"marketdata: {exc}", file=sys.stderr)
        rt.close()
        return 2
    ep = cfg.endpoints["marketdata"]
    rt.bind_publisher(ep.pub)
    rt.bind_replier(ep.rep, {"history": svc.history, "prices": svc.prices, "status": svc.status})
    rt.heartbeat_status(svc.status)
    svc.schedule()
    rt.run(on_stop=svc.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
