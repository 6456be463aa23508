"""marketdata publishes a bar at its close in market time (mapped to wall time through the sim
clock), not on the next tick: it wakes up at the close, the bar carries ``ts_close`` and the wall
time it was due, and the bars published never depend on when the wake-ups happened."""
from __future__ import annotations

from typing import Any

import pytest

import services.marketdata as marketdata
from common.clock import MarketClock
from config.settings import parse_config
from services.marketdata import CLOSE_SPIN_SECONDS, PREPARE_SECONDS, TICK_SECONDS, MarketDataService, wait_until
from services.runtime import ServiceRuntime
from tests.support.stack import stack_config

HOUR = 3_600_000
WALL0 = 1_700_000_000_000.0  # wall ms at the clock's origin


class Recorder:
    """Stands in for the publisher: what was published, in order, and when (wall ms)."""

    def __init__(self, wall: "WallClock") -> None:
        self.wall = wall
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.sent_at: list[float] = []

    def publish(self, topic: str, kind: str, body: dict[str, Any]) -> None:
        self.sent.append((topic, kind, body))
        self.sent_at.append(self.wall.now_ms)

    def bars(self) -> list[dict[str, Any]]:
        return [body for _, kind, body in self.sent if kind == "bar"]


class WallClock:
    """The clocks of the service under test: ``wall_ms`` reads ``now_ms`` (plus the steps
    ``step_wall`` gave it, as NTP may), ``monotonic`` follows ``now_ms``; a ``sched_yield`` (the
    wait before a close, awake) takes a microsecond (to float rounding at 1.7e12 ms: a few percent)."""

    def __init__(self) -> None:
        self.now_ms = WALL0
        self.slept: list[float] = []
        self.yields = 0
        self.wall_offset_ms = 0.0  # the wall clock's steps, which monotonic does not see
        self.step_at_yield_ms = 0.0

    def sched_yield(self) -> None:
        self.yields += 1
        self.now_ms += 0.001
        self.wall_offset_ms += self.step_at_yield_ms
        self.step_at_yield_ms = 0.0

    def step_wall(self, ms: float) -> None:
        """The wall clock jumps by ``ms`` at the next yield."""
        self.step_at_yield_ms = ms

    def wall_ms(self) -> float:
        return self.now_ms + self.wall_offset_ms

    def monotonic(self) -> float:
        return (self.now_ms - WALL0) / 1000  # from the test's start: seconds to the microsecond

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_ms += seconds * 1000


@pytest.fixture
def service(tmp_path, monkeypatch):
    wall = WallClock()
    monkeypatch.setattr(marketdata, "time", wall)
    monkeypatch.setattr(marketdata, "os", wall)
    monkeypatch.setattr(marketdata, "wall_ms", wall.wall_ms)

    def start(name: str = "a", speed: int = 3600) -> tuple[MarketDataService, Recorder]:
        raw = stack_config(speed=speed)
        (tmp_path / name).mkdir()
        raw["state_file"] = str(tmp_path / name / "state.json")
        cfg = parse_config(raw)
        rt = ServiceRuntime("marketdata-test")
        runtimes.append(rt)
        svc = MarketDataService(cfg, rt)
        services.append(svc)
        svc.clock = MarketClock(svc.feed.now_ts, int(WALL0), speed)
        rt.publisher = Recorder(wall)
        return svc, rt.publisher

    runtimes: list[ServiceRuntime] = []
    services: list[MarketDataService] = []
    yield start, wall
    for svc in services:
        svc.stop()
    for rt in runtimes:
        rt.close()


def test_it_wakes_at_the_next_close_and_publishes_the_bar_then(service) -> None:
    start, wall = service
    svc, pub = start()
    origin = svc.feed.now_ts
    assert origin % HOUR == 0  # the config starts at 00:00 UTC: the next close is one market hour on
    close = origin + HOUR
    wall.now_ms = svc.clock.wall_ms_at(close) - 10.0  # 10 wall ms before the close
    # sleeps until just before the close (to make its bars then), not a tick period
    assert svc.advance() == pytest.approx(0.010 - PREPARE_SECONDS, abs=1e-6)
    assert pub.bars() == []
    wall.now_ms = svc.clock.wall_ms_at(close)
    svc.advance()
    bars = pub.bars()
    assert {(b["symbol"], b["timeframe"]) for b in bars} == {(s, "1h") for s in svc.feed.symbols}
    assert all(b["ts_close"] == close and b["ts_open"] == origin for b in bars)
    assert all(b["wall_due_ms"] == WALL0 + 1_000.0 for b in bars)  # one market hour = 1 wall s at 3,600x
    clock = [body for _, kind, body in pub.sent if kind == "clock"][-1]
    assert clock == {"ts": close, "finished": False, "market_origin": origin, "wall_origin": int(WALL0),
                     "speed": 3600}


def test_a_close_s_bars_are_made_just_before_it_and_published_at_it_never_before(service) -> None:
    start, wall = service
    svc, pub = start()
    close = svc.feed.now_ts + HOUR
    due = svc.clock.wall_ms_at(close)
    wall.now_ms = due - 50.0
    svc.advance()  # learns the next close
    wall.now_ms = due - 1000 * PREPARE_SECONDS  # woken when asked: PREPARE_SECONDS ahead
    assert pub.bars() == []
    svc.advance()
    # waited for the close with the bars made: asleep, then awake for the last CLOSE_SPIN_SECONDS
    assert wall.slept == [pytest.approx(PREPARE_SECONDS - CLOSE_SPIN_SECONDS)]
    assert wall.yields == pytest.approx(CLOSE_SPIN_SECONDS * 1e6, rel=0.05, abs=2)
    published = [at for (_, kind, _), at in zip(pub.sent, pub.sent_at) if kind in ("bar", "tick", "clock")]
    # three bars, three ticks and the clock: all at the close (to the fake clock's microsecond step)
    assert due <= min(published[-7:]) <= max(published[-7:]) < due + 0.002
    assert {b["ts_close"] for b in pub.bars()} == {close}
    tick_ts = [body["ts"] for _, kind, body in pub.sent if kind == "tick"][-3:]
    assert max(tick_ts) <= close  # no tick from after the close either


def test_a_close_s_ticks_go_out_before_its_bars_and_the_clock_last(service) -> None:
    """The portfolio fills the close's orders at its ticks: they must not queue behind the bars
    whose decisions make those orders."""
    start, wall = service
    svc, pub = start()
    close = svc.feed.now_ts + HOUR
    wall.now_ms = svc.clock.wall_ms_at(close)
    svc.advance()
    kinds = [kind for _, kind, _ in pub.sent]
    symbols = sorted(svc.feed.symbols)
    assert kinds == ["tick"] * len(symbols) + ["bar"] * len(symbols) + ["clock"]
    ticks = {body["symbol"]: body for _, kind, body in pub.sent if kind == "tick"}
    assert sorted(ticks) == symbols
    for bar in pub.bars():  # the tick is the close's price: what its orders fill at
        assert (ticks[bar["symbol"]]["price"], ticks[bar["symbol"]]["ts"]) == (bar["close"], close)


def test_a_late_wake_up_publishes_at_once(service) -> None:
    start, wall = service
    svc, pub = start()
    close = svc.feed.now_ts + HOUR
    wall.now_ms = svc.clock.wall_ms_at(close) - 50.0
    svc.advance()
    wall.now_ms = svc.clock.wall_ms_at(close) + 5.0  # a loaded machine woke it late
    svc.advance()
    assert wall.slept == [] and wall.yields == 0
    assert {b["ts_close"] for b in pub.bars()} == {close}
    assert svc.status()["clock_slips"] == 0  # late by less than a bar: the clock stands


@pytest.mark.parametrize("ahead_ms, sleeps", [(10.0, [0.0095]), (0.2, []), (0.0, []), (-3.0, [])])
def test_wait_until_sleeps_to_the_last_stretch_then_waits_awake(service, ahead_ms, sleeps) -> None:
    _start, wall = service
    due = wall.now_ms + ahead_ms
    wait_until(due)
    assert wall.slept == [pytest.approx(s) for s in sleeps]
    awake_ms = min(ahead_ms, 1000 * CLOSE_SPIN_SECONDS) if ahead_ms > 0 else 0.0
    assert wall.yields == pytest.approx(awake_ms * 1000, rel=0.05, abs=2)  # about a microsecond per yield
    assert wall.now_ms >= due  # never before the close
    assert wall.now_ms < max(due, WALL0) + 0.002


@pytest.mark.parametrize("step_ms", [-1000.0, 1000.0])
def test_a_wall_clock_step_while_waiting_awake_neither_prolongs_nor_ends_the_wait(service, step_ms) -> None:
    _start, wall = service
    wall.step_wall(step_ms)  # at the first yield, 0.5 ms before the close
    wait_until(wall.now_ms + 10.0)
    assert wall.slept == [pytest.approx(0.0095)]
    assert wall.yields == pytest.approx(CLOSE_SPIN_SECONDS * 1e6, rel=0.05)  # awake 0.5 ms, as without the step


def test_far_from_a_close_ticks_keep_their_period(service) -> None:
    start, wall = service
    svc, _ = start()
    wall.now_ms = WALL0 + 100.0  # 0.9 wall s before the first close
    assert svc.advance() == TICK_SECONDS


def test_a_due_close_is_published_even_when_float_rounding_lags(service) -> None:
    start, wall = service
    svc, pub = start(speed=36_001)  # wall ms per market ms is not a round number
    close = svc.feed.now_ts + HOUR
    wall.now_ms = svc.clock.wall_ms_at(close) - 50.0
    svc.advance()  # learns the next close
    wall.now_ms = svc.clock.wall_ms_at(close)
    svc.advance()
    assert {b["ts_close"] for b in pub.bars()} == {close}


def bar_of(body: dict[str, Any]) -> dict[str, Any]:
    """A published bar without the wall time it was due."""
    return {k: v for k, v in body.items() if k != "wall_due_ms"}


def run_until(svc: MarketDataService, wall: WallClock, end_ms: float) -> None:
    """Wake ``svc`` when it asks, until wall time ``end_ms``."""
    while wall.now_ms < end_ms:
        wall.now_ms = min(end_ms, wall.now_ms + 1000 * svc.advance() + 0.001)
    svc.advance()


def test_the_bars_published_do_not_depend_on_when_it_woke_up(service) -> None:
    start, wall = service
    steady, steady_pub = start("steady")
    jumpy, jumpy_pub = start("jumpy")
    end = WALL0 + 6_000.0  # six market hours at 3,600x
    wall.now_ms = WALL0
    run_until(steady, wall, end)
    for late in (1_500.0, 2_600.0, 3_050.0, 4_000.0, 4_999.0, 5_990.0, 6_000.0):  # late, irregular, < a bar
        wall.now_ms = WALL0 + late
        jumpy.advance()
    assert steady_pub.bars() == jumpy_pub.bars()
    assert [b["ts_close"] for b in steady_pub.bars()][::3] == [steady.feed.now_ts - 6 * HOUR + h * HOUR
                                                               for h in range(1, 7)]
    assert jumpy.status()["clock_slips"] == 0


def test_a_stall_never_skips_a_close_the_clock_moves_on_from_the_due_one(service) -> None:
    start, wall = service
    steady, steady_pub = start("steady")
    stalled, stalled_pub = start("stalled")
    origin = stalled.feed.now_ts
    wall.now_ms = WALL0
    run_until(steady, wall, WALL0 + 6_000.0)
    wall.now_ms = WALL0 + 3_500.0  # woken 2.5 s after the first close: three closes are past
    stalled.advance()
    assert {b["ts_close"] for b in stalled_pub.bars()} == {origin + HOUR}  # the due close alone
    assert {b["wall_due_ms"] for b in stalled_pub.bars()} == {WALL0 + 1_000.0}  # late, and it says so
    assert max(body["ts"] for _, kind, body in stalled_pub.sent if kind == "tick") <= origin + HOUR
    clock = [body for _, kind, body in stalled_pub.sent if kind == "clock"][-1]
    assert (clock["ts"], clock["market_origin"], clock["wall_origin"]) == (origin + HOUR, origin + HOUR,
                                                                            WALL0 + 3_500.0)
    assert stalled.status()["clock_slips"] == 1 and stalled.status()["market_ms_slipped"] == 2.5 * HOUR
    run_until(stalled, wall, WALL0 + 3_500.0 + 5_000.0)  # from there, a close each wall second again
    assert [bar_of(b) for b in stalled_pub.bars()] == [bar_of(b) for b in steady_pub.bars()]
    assert {b["wall_due_ms"] - WALL0 for b in stalled_pub.bars()} == {1_000.0, 4_500.0, 5_500.0, 6_500.0,
                                                                       7_500.0, 8_500.0}
    assert stalled.status()["clock_slips"] == 1
    between_clocks: list[set[int]] = [set()]  # the closes of the bars between two clock messages
    for _, kind, body in stalled_pub.sent:
        if kind == "bar":
            between_clocks[-1].add(body["ts_close"])
        elif kind == "clock":
            between_clocks.append(set())
    assert max(len(closes) for closes in between_clocks) == 1  # each close's bars, then a clock


def test_a_machine_that_cannot_keep_up_slips_at_each_close_and_says_so_every_10_s(service, capsys) -> None:
    start, wall = service
    svc, pub = start()
    origin = svc.feed.now_ts
    for n in range(1, 21):  # woken 2.5 s apart at 3,600x: 2.5 bar periods each time, for 50 s
        wall.now_ms = WALL0 + 2_500.0 * n
        svc.advance()
    assert [b["ts_close"] for b in pub.bars()][::3] == [origin + h * HOUR for h in range(1, 21)]  # none skipped
    assert svc.status()["clock_slips"] == 20
    lines = [line for line in capsys.readouterr().out.splitlines() if "market_clock_slipped" in line]
    assert len(lines) == 5 and '"slips":20' not in lines[-1] and '"slips":17' in lines[-1]


def test_the_clock_save_is_housekeeping_held_through_each_close(service, monkeypatch) -> None:
    """The save runs on the runtime's housekeeping timer, which waits while ``near_close`` holds
    (from 30 ms before a close to 150 ms after it, and as far ahead as the last save took), as
    the heartbeat does: its fsyncs never share the disk with the close's journal fsync."""
    start, wall = service
    svc, _ = start()
    saves: list[float] = []
    monkeypatch.setattr(marketdata, "save_state", lambda _path, state: saves.append(wall.now_ms))
    svc.schedule()
    [timer] = [t for t in svc.rt._timers if t.callback == svc.save_clock]
    assert timer.housekeeping and timer.interval == marketdata.CLOCK_SAVE_SECONDS
    close_wall = svc.clock.wall_ms_at(svc.feed.now_ts + HOUR)
    timer.took = 0.005  # the last save took 5 ms
    for offset_ms, held in ((-500.0, False), (-36.0, False), (-34.0, True), (0.0, True), (149.0, True),
                            (151.0, False)):
        wall.now_ms = close_wall + offset_ms
        assert svc.rt._held(timer) is held, offset_ms
    svc.save_clock()
    assert saves == [close_wall + 151.0]  # once let through, it saves


def test_housekeeping_is_held_around_each_close(service) -> None:
    """The heartbeat and heap trims wait from 30 ms before a close to 150 ms after it."""
    start, wall = service
    svc, _ = start()
    close = svc.feed.now_ts + HOUR
    for offset_ms, held in ((-500.0, False), (-29.0, True), (0.0, True), (149.0, True), (151.0, False)):
        wall.now_ms = svc.clock.wall_ms_at(close) + offset_ms
        assert svc.near_close() is held, offset_ms
    wall.now_ms = svc.clock.wall_ms_at(close) - 100.0
    assert not svc.near_close(ahead_ms=60.0)  # a 60 ms save 100 ms before the close ends in time
    assert svc.near_close(ahead_ms=80.0)  # an 80 ms one would still run 20 ms before it: held
