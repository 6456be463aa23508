"""How many strategies one signal engine can run on this machine, and why a config exceeds it.

The engine runs in rounds: every strategy that is due is decided, one after the other, in one
process. ``common.engine.Schedule`` never builds a backlog: a strategy whose due time passed
during a long round runs once, at the next round, and its missed grid points are dropped. So a
strategy polled more often than its bars close (interval 300 s on 1h bars) loses nothing while
each of its bars is still decided before the next one closes; a bar it never sees is a
signal lost, since signals are events on the newest bar. A strategy's deadline is therefore
the longer of its interval and its bar timeframe, in market time; at ``speed`` market seconds
per wall second that leaves ``deadline / speed`` wall seconds. In the worst round every
strategy is due at once (all intervals meet on the hour), so a round of all of them must fit
within the tightest deadline. Independently of speed, the spot part of a round runs in one
blocking call (options are stepped between messages), and the gateway declares a service lost
after ``HEARTBEAT_LOST_MS`` without a heartbeat: that part must also end well within it.

Pure and numpy-free: the config check (every service, the gateway included) calls it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from common.status import HEARTBEAT_LOST_MS
from common.timeframes import TIMEFRAME_MS

# Per-decision costs, measured with ``python -m bench.bench_decision`` on the project machine
# (2 shared cores, Python 3.11, 2026-12-02; three runs, the highest mean taken): spot
# ``evaluate_spot`` on 1,000 bars, mean of the 14 default spot strategies, 0.35-0.71 ms;
# options, one ``positions`` REQ/REP round trip to the portfolio plus ``evaluate_options``,
# mean of the 20 default options strategies, 0.42-0.56 ms; a chain REQ/REP round trip, asked
# once per (underlying, venue) and round, 0.13-0.27 ms. Doubled so that a machine twice as slow
# still keeps up with a config this check accepts.
SLOWER_MACHINE_FACTOR = 2.0
SPOT_DECISION_S = 0.71e-3 * SLOWER_MACHINE_FACTOR
OPTIONS_DECISION_S = 0.56e-3 * SLOWER_MACHINE_FACTOR
CHAIN_REQUEST_S = 0.27e-3 * SLOWER_MACHINE_FACTOR
HEARTBEAT_SECONDS = 1.0  # services/runtime.py beats this often (a test pins the two together)
BLOCKING_LIMIT_S = HEARTBEAT_LOST_MS / 1000 - HEARTBEAT_SECONDS  # a round longer than this misses two beats


@dataclass(frozen=True, slots=True)
class Demand:
    """What one strategy asks of the engine: how often, on which bars, and which chain (options)."""

    strategy_id: str
    is_options: bool
    interval_s: float
    timeframe: str
    chain: tuple[str, str] | None = None  # (underlying, venue) for options

    @property
    def deadline_s(self) -> float:
        """Market seconds within which its decision must run: a bar undecided when the next
        one closes is lost, and a slower poll than the interval is the user's own choice."""
        return max(self.interval_s, TIMEFRAME_MS[self.timeframe] / 1000)

    @property
    def cost_s(self) -> float:
        return OPTIONS_DECISION_S if self.is_options else SPOT_DECISION_S


def round_seconds(demands: Sequence[Demand]) -> float:
    """Estimated wall seconds of a round in which every strategy of one engine is due."""
    chains = {d.chain for d in demands if d.chain is not None}
    return sum(d.cost_s for d in demands) + len(chains) * CHAIN_REQUEST_S


def _span(seconds: float) -> str:
    """600 -> '10m', 3600 -> '1h', 86400 -> '1d', 90 -> '90 s'."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g} s"


def _wall(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 0.95 else f"{seconds * 1000:.0f} ms"


def capacity_problems(engine: str, demands: Sequence[Demand], speed: float) -> list[str]:
    """Why ``engine`` cannot run ``demands`` at ``speed`` on this machine (empty if it can).

    Per engine: with several engines, each is checked with its own strategies.
    """
    if not demands:
        return []
    problems = []
    need = round_seconds(demands)
    tightest = min(demands, key=lambda d: d.deadline_s)
    budget = tightest.deadline_s / speed
    advice = "lower feed.speed, use longer intervals or timeframes, or split strategies across engines"
    if need > budget:
        per_strategy = need / len(demands)
        ceiling = math.floor(budget / per_strategy)
        why = (f"{tightest.strategy_id} decides {tightest.timeframe} bars every {_span(tightest.interval_s)}, and a "
               f"bar not decided before the next one closes is skipped")
        problems.append(f"{engine}: {len(demands)} strategies need ~{_wall(need)} per round, but the "
                        f"{_span(tightest.deadline_s)} deadline at {speed:g}x leaves {_wall(budget)} ({why}); "
                        f"the ceiling at this speed is {ceiling} strategies like these; {advice}")
    spot = [d for d in demands if not d.is_options]
    blocking = round_seconds(spot)
    if blocking > BLOCKING_LIMIT_S:
        ceiling = math.floor(BLOCKING_LIMIT_S / SPOT_DECISION_S)
        problems.append(f"{engine}: {len(spot)} spot strategies run ~{_wall(blocking)} in one blocking round, "
                        f"longer than the {_wall(BLOCKING_LIMIT_S)} after which a missed heartbeat makes /healthz "
                        f"declare the engine lost; the ceiling is {ceiling} spot strategies per engine at any "
                        f"speed; split strategies across engines")
    return problems

