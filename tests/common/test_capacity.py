"""The capacity ceiling: a round of every strategy must fit the tightest deadline and the heartbeat."""
from __future__ import annotations

import pytest

from common.capacity import (
    BLOCKING_LIMIT_S,
    CHAIN_REQUEST_S,
    HEARTBEAT_SECONDS,
    OPTIONS_DECISION_S,
    SPOT_DECISION_S,
    Demand,
    capacity_problems,
    round_seconds,
)
from common.engine import Schedule


def spot(i: int = 0, interval: float = 300, timeframe: str = "1h") -> Demand:
    return Demand(f"s{i}", False, interval, timeframe)


def option(i: int = 0, underlying: str = "BTC", venue: str = "deribit") -> Demand:
    return Demand(f"o{i}", True, 1200, "1d", (underlying, venue))


def test_measured_costs_carry_the_factor_for_a_machine_twice_as_slow():
    assert (SPOT_DECISION_S, OPTIONS_DECISION_S, CHAIN_REQUEST_S) == pytest.approx((1.42e-3, 1.12e-3, 0.54e-3))


def test_the_heartbeat_period_is_the_runtimes():
    from services.runtime import HEARTBEAT_SECONDS as RUNTIME_HEARTBEAT_SECONDS

    assert HEARTBEAT_SECONDS == RUNTIME_HEARTBEAT_SECONDS and BLOCKING_LIMIT_S == 2.0


@pytest.mark.parametrize(("demand", "deadline"), [
    (spot(interval=300, timeframe="1h"), 3_600),  # polled 12 times a bar: a late poll still sees the bar
    (spot(interval=2 * 86_400, timeframe="1h"), 172_800),  # checked every 2 days by choice
    (spot(interval=60, timeframe="1m"), 60),
    (option(), 86_400),
])
def test_a_deadline_is_the_longer_of_interval_and_timeframe(demand, deadline):
    assert demand.deadline_s == deadline


def test_the_schedule_drops_missed_grid_points_so_a_late_engine_builds_no_backlog():
    schedule = Schedule({"a": 300})
    assert schedule.due(0) == ["a"]
    assert schedule.due(10 * 300_000 + 1) == ["a"]  # ten intervals late: runs once
    assert schedule.due(10 * 300_000 + 2) == []


def test_a_round_costs_every_decision_plus_one_chain_per_underlying_and_venue():
    demands = [spot(0), spot(1), option(0), option(1), option(2, "ETH")]
    assert round_seconds(demands) == pytest.approx(2 * 1.42e-3 + 3 * 1.12e-3 + 2 * 0.54e-3)  # 7.28 ms


def test_a_mixed_config_beyond_its_budget_names_everything_needed_to_fix_it():
    demands = [spot(i) for i in range(400)] + [option(i) for i in range(400)]
    # 400 x 1.42 + 400 x 1.12 + 0.54 = 1016.5 ms > 1 s; 1 s / (1016.5 ms / 800) = 786.
    assert capacity_problems("signals", demands, 3600) == [
        "signals: 800 strategies need ~1.0 s per round, but the 1h deadline at 3600x leaves 1.0 s (s0 decides 1h "
        "bars every 5m, and a bar not decided before the next one closes is skipped); the ceiling at this speed is "
        "786 strategies like these; lower feed.speed, use longer intervals or timeframes, or split strategies "
        "across engines"]


def test_options_are_stepped_between_messages_so_only_spot_blocks_the_heartbeat():
    assert capacity_problems("signals", [option(i) for i in range(3_000)], 1.0) == []
    [problem] = capacity_problems("signals", [spot(i, timeframe="1d") for i in range(1_409)], 1.0)
    assert problem.startswith("signals: 1409 spot strategies run ~2.0 s in one blocking round")
    assert capacity_problems("signals", [spot(i, timeframe="1d") for i in range(1_408)], 1.0) == []


def test_each_engine_is_judged_on_its_own_strategies():
    demands = [spot(i) for i in range(1_000)]
    assert capacity_problems("signals", demands, 3600) != []
    halves = (demands[:500], demands[500:])
    assert [capacity_problems(f"signals-{i}", half, 3600) for i, half in enumerate(halves)] == [[], []]
    assert capacity_problems("signals", [], 1e6) == []
