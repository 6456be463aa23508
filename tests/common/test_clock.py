"""The market clock maps wall time to market time and back, exactly, so a bar is due at one
wall instant that every process can compute from the clock message."""
from __future__ import annotations

import pytest

from common.clock import CloseWindow, MarketClock, align_down, clock_from_message, next_due

HOUR = 3_600_000


def test_market_time_runs_at_speed_from_the_origin() -> None:
    clock = MarketClock(market_origin=10 * HOUR, wall_origin=1_000, speed=3600)
    assert clock.market_ms(1_000) == 10 * HOUR
    assert clock.market_ms(2_000) == 11 * HOUR  # one wall second is one market hour
    assert clock.market_ms(1_000.5) == 10 * HOUR + 1_800  # sub-ms wall time is not truncated first


def test_wall_ms_at_is_the_inverse_and_reaches_the_market_time() -> None:
    clock = MarketClock(market_origin=10 * HOUR, wall_origin=1_000, speed=3600)
    assert clock.wall_ms_at(11 * HOUR) == 2_000.0
    assert clock.wall_ms_at(10 * HOUR + 36_000) == 1_010.0  # 36 market seconds = 10 wall ms
    odd = MarketClock(market_origin=7, wall_origin=123, speed=36_000.7)
    for ts in range(7, 7 + 50 * HOUR, 997 * 1_013):
        assert odd.market_ms(odd.wall_ms_at(ts)) >= ts - 1  # at worst one float ulp short, never a tick


def test_the_clock_travels_as_its_mapping() -> None:
    clock = MarketClock(market_origin=5, wall_origin=6, speed=36_000)
    assert clock.to_dict() == {"market_origin": 5, "wall_origin": 6, "speed": 36_000}
    assert MarketClock(**clock.to_dict()) == clock


@pytest.mark.parametrize("speed", [0, -1.0, float("nan")])
def test_a_clock_that_does_not_move_forward_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match="clock speed must be > 0"):
        MarketClock(0, 0, speed)


def test_next_due_is_the_next_grid_point_strictly_after() -> None:
    assert next_due(HOUR, HOUR) == 2 * HOUR
    assert next_due(HOUR + 1, HOUR) == 2 * HOUR
    assert align_down(HOUR + 59, 60) == HOUR


def test_the_close_window_holds_just_before_and_after_each_close() -> None:
    # 3,600x: an hour bar closes every wall second, at wall 1_000, 2_000, ...
    clock = MarketClock(market_origin=10 * HOUR, wall_origin=1_000, speed=3600)
    window = CloseWindow(clock, (HOUR, 24 * HOUR), before_ms=30, after_ms=100)
    assert window.holds(1_000) and window.holds(1_099.9)  # the close and its burst
    assert not window.holds(1_100.5) and not window.holds(1_500) and not window.holds(1_969.5)
    assert window.holds(1_970.5) and window.holds(1_999.9)  # the next close is near


def test_the_close_window_leaves_room_on_a_fast_clock() -> None:
    # 36,000x: a close every 100 wall ms; margins capped at 20 ms before and 40 ms after
    clock = MarketClock(market_origin=0, wall_origin=0, speed=36_000)
    window = CloseWindow(clock, (HOUR,), before_ms=30, after_ms=100)
    assert window.holds(139.5) and not window.holds(140.5)
    assert not window.holds(179.5) and window.holds(180.5)


def test_a_close_window_without_bar_periods_is_refused() -> None:
    clock = MarketClock(market_origin=0, wall_origin=0, speed=3600)
    with pytest.raises(ValueError, match="bar periods"):
        CloseWindow(clock, (), before_ms=30, after_ms=100)
    with pytest.raises(ValueError, match="margins"):
        CloseWindow(clock, (HOUR,), before_ms=-1, after_ms=100)


def test_a_clock_message_gives_back_its_mapping() -> None:
    clock = MarketClock(market_origin=5, wall_origin=6.5, speed=36_000)
    assert clock_from_message({"ts": 9, **clock.to_dict()}) == clock


@pytest.mark.parametrize("body, what", [(None, "expected an object"), ({"wall_origin": 0, "speed": 1}, "market_origin"),
                                        ({"market_origin": 0, "wall_origin": True, "speed": 1}, "wall_origin"),
                                        ({"market_origin": 0, "wall_origin": 0, "speed": float("nan")}, "speed"),
                                        ({"market_origin": 0, "wall_origin": 0, "speed": 0}, "speed")])
def test_a_bad_clock_message_is_refused_naming_the_field(body, what) -> None:
    with pytest.raises(ValueError, match=what):
        clock_from_message(body)
