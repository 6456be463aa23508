"""The capacity ceiling: what the engine does in a loop turn must fit the tightest deadline and the heartbeat."""
from __future__ import annotations

import pytest

from config.capacity import (
    BLOCKING_LIMIT_S,
    CHAIN_REQUEST_S,
    HEARTBEAT_SECONDS,
    OPTIONS_DECISION_S,
    SPOT_DECISION_S,
    Demand,
    EngineLoad,
    capacity_problems,
)
from trading.engine import Schedule


def spot(i: int = 0, interval: float = 300, timeframe: str = "1h") -> Demand:
    return Demand(f"s{i}", False, interval, timeframe)


def option(i: int = 0, underlying: str = "BTC", venue: str = "deribit") -> Demand:
    return Demand(f"o{i}", True, 1200, "1d", (underlying, venue))


def test_measured_costs_carry_the_factor_for_a_machine_twice_as_slow():
    assert (SPOT_DECISION_S, OPTIONS_DECISION_S, CHAIN_REQUEST_S) == pytest.approx((1.52e-3, 1.72e-3, 0.62e-3))


def test_a_turn_may_block_for_the_heartbeat_margin_only():
    assert HEARTBEAT_SECONDS == 1.0 and BLOCKING_LIMIT_S == 2.0  # lost after 3 s: two missed beats


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


def test_the_load_of_an_engine_from_the_measured_costs():
    load = EngineLoad.of([spot(0), spot(1), option(0), option(1), option(2, "ETH")])
    assert (load.spot, load.options, load.chains) == (2, 3, 2)
    assert load.spot_round_s == pytest.approx(2 * 1.52e-3)  # 3.04 ms
    assert load.options_step_s == pytest.approx(1.72e-3 + 2 * 0.62e-3)  # 2.96 ms: the batch's first step
    assert load.turn_s == pytest.approx(6.0e-3)
    assert load.options_batch_s == pytest.approx(3 * (1.72e-3 + 3.04e-3) + 2 * 0.62e-3)  # 15.52 ms
    assert EngineLoad.of([spot()]).options_step_s == 0.0


def test_spot_beyond_its_budget_names_the_round_the_deadline_and_the_ceiling():
    # 700 x 1.52 ms = 1.064 s; the 1h bars at 3600x leave 1 s; 1 s / 1.52 ms = 657.
    assert capacity_problems("signals", [spot(i) for i in range(700)], 3600) == [
        "signals: 700 spot strategies need ~1.1 s per round, but the 1h deadline at 3600x leaves 1.0 s (s0 decides "
        "1h bars every 5m, and a bar not decided before the next one closes is skipped); the ceiling at this speed "
        "is 657 spot strategies; lower feed.speed, use longer intervals or timeframes, or split strategies across "
        "engines"]


def test_options_wait_a_spot_round_per_step_so_many_spot_strategies_starve_them():
    demands = [spot(i, timeframe="1d") for i in range(600)] + [option(i) for i in range(30)]
    # spot round 600 x 1.52 = 912 ms (fits 1d bars); batch 30 x (1.72 + 912) + 0.62 ms = 27.4 s
    # > 24 s at 3600x; (24 s - 0.62 ms) / 913.72 ms = 26.3 -> 26.
    assert capacity_problems("signals", demands, 3600) == [
        "signals: 30 options strategies need ~27.4 s per batch (one per loop turn, each turn behind a spot round "
        "of ~912 ms), but the 1d deadline at 3600x leaves 24.0 s (o0 decides 1d bars every 20m, and a bar not "
        "decided before the next one closes is skipped); the ceiling at this speed is 26 options strategies beside "
        "600 spot; lower feed.speed, use longer intervals or timeframes, or split strategies across engines"]
    assert capacity_problems("signals", demands[:626], 3600) == []


def test_only_a_loop_turn_blocks_the_heartbeat_and_options_are_one_step_of_it():
    assert capacity_problems("signals", [option(i) for i in range(3_000)], 1.0) == []
    [problem] = capacity_problems("signals", [spot(i, timeframe="1d") for i in range(1_316)], 1.0)
    assert problem == ("signals: 1316 spot strategies run ~2.0 s in one blocking loop turn, longer than the 2.0 s "
                       "after which a missed heartbeat makes /healthz declare the engine lost; the ceiling is 1315 "
                       "spot strategies per engine at any speed; split strategies across engines")
    assert capacity_problems("signals", [spot(i, timeframe="1d") for i in range(1_315)], 1.0) == []


def test_each_engine_is_judged_on_its_own_strategies():
    demands = [spot(i) for i in range(1_000)]
    assert capacity_problems("signals", demands, 3600) != []
    halves = (demands[:500], demands[500:])
    assert [capacity_problems(f"signals-{i}", half, 3600) for i, half in enumerate(halves)] == [[], []]
    assert capacity_problems("signals", [], 1e6) == []
