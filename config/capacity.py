"""How many strategies one signal engine can run on this machine, and why a config exceeds it.

What the engine really does (services/signals.py, services/runtime.py): each loop turn runs the
timers (a heartbeat every second; ``run_due``, which decides every spot strategy that is due in
one blocking ``run_cycle``), reads the sockets, then takes one step of the options batch (one
options strategy; the first step of a batch reads the pricer's published chains, asking only
for one that is not recent, and the whole batch's books in one ``positions_batch``). Each engine
(config ``engines``) is its own process, checked with its own strategies. So a spot bar
waits at most one turn, an options batch takes one turn per options strategy, and a heartbeat
waits at most one turn. ``trading.engine.Schedule`` builds no backlog: a strategy that comes due
while the engine is busy runs once, when it gets the chance, and its missed grid points are
dropped. A strategy polled more often than its bars close (interval 300 s on 1h bars) thus
loses nothing while each bar is decided before the next one closes; a bar never decided is a
signal lost (signals are events on the newest bar). A strategy's deadline is therefore the
longer of its interval and its bar timeframe, in market time, and ``deadline / speed`` in wall
time. The estimates assume the worst: every spot strategy due at every turn.

Pure and numpy-free: the config check (every service, the gateway included) calls it, once per
engine with that engine's strategies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from common.messages import HEARTBEAT_LOST_MS, HEARTBEAT_SECONDS
from common.timeframes import TIMEFRAME_MS

# Per-strategy costs of the signal service's own SignalEngine, measured with
# ``python -m bench.bench_decision`` (config/default.json, 1,000 bars a series, a stand-in
# portfolio and pricer in another process) on the project machine (2 cores, Python 3.11,
# 2026-12-02) while it was otherwise quiet: a spot decision (decide, publish, send orders)
# 0.76 ms, an options decision (positions request, decide, score, risk, publish, send orders)
# 0.86 ms, a chain request 0.31 ms; medians of 21 rounds. The factor leaves room for a machine
# twice as slow, or this one shared with as much other work again. The options figures predate
# published chains and positions_batch (a chain request per chain and batch, a positions request
# per decision), so they overstate today's cost: the check stays on the safe side.
SLOWER_MACHINE_FACTOR = 2.0
SPOT_DECISION_S = 0.76e-3 * SLOWER_MACHINE_FACTOR
OPTIONS_DECISION_S = 0.86e-3 * SLOWER_MACHINE_FACTOR
CHAIN_REQUEST_S = 0.31e-3 * SLOWER_MACHINE_FACTOR
BLOCKING_LIMIT_S = HEARTBEAT_LOST_MS / 1000 - HEARTBEAT_SECONDS  # a longer turn misses two beats
ADVICE = "lower feed.speed, use longer intervals or timeframes, or split strategies across engines"


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


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """Estimated wall seconds of one engine's work, from the measured costs above."""

    spot: int
    options: int
    chains: int

    @classmethod
    def of(cls, demands: Sequence[Demand]) -> "EngineLoad":
        options = [d for d in demands if d.is_options]
        return cls(len(demands) - len(options), len(options), len({d.chain for d in options}))

    @property
    def spot_round_s(self) -> float:
        return self.spot * SPOT_DECISION_S

    @property
    def options_step_s(self) -> float:
        """The longest options step: the first of a batch, which also fetches every chain."""
        return OPTIONS_DECISION_S + self.chains * CHAIN_REQUEST_S if self.options else 0.0

    @property
    def turn_s(self) -> float:
        """The longest loop turn: what a closed bar or a heartbeat may wait behind."""
        return self.spot_round_s + self.options_step_s

    @property
    def options_batch_s(self) -> float:
        """Every options strategy once, one per turn, each turn also running a spot round."""
        return self.options * (OPTIONS_DECISION_S + self.spot_round_s) + self.chains * CHAIN_REQUEST_S


def _span(seconds: float) -> str:
    """600 -> '10m', 3600 -> '1h', 86400 -> '1d', 90 -> '90 s'."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g} s"


def _wall(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 0.95 else f"{seconds * 1000:.0f} ms"


def _tightest(demands: Sequence[Demand], speed: float) -> tuple[float, str]:
    """The shortest deadline's wall budget, and the words that name it and its strategy."""
    tight = min(demands, key=lambda d: d.deadline_s)
    budget = tight.deadline_s / speed
    words = (f"the {_span(tight.deadline_s)} deadline at {speed:g}x leaves {_wall(budget)} ({tight.strategy_id} "
             f"decides {tight.timeframe} bars every {_span(tight.interval_s)}, and a bar not decided before the "
             f"next one closes is skipped)")
    return budget, words


def capacity_problems(engine: str, demands: Sequence[Demand], speed: float) -> list[str]:
    """Why ``engine`` cannot run ``demands`` at ``speed`` on this machine (empty if it can)."""
    load = EngineLoad.of(demands)
    spot = [d for d in demands if not d.is_options]
    options = [d for d in demands if d.is_options]
    problems = []
    if spot:
        budget, words = _tightest(spot, speed)
        if load.turn_s > budget:
            ceiling = max(0, math.floor((budget - load.options_step_s) / SPOT_DECISION_S))
            during = f" (~{_wall(load.turn_s)} with an options decision in progress)" if options else ""
            problems.append(f"{engine}: {load.spot} spot strategies need ~{_wall(load.spot_round_s)} per round"
                            f"{during}, but {words}; the ceiling at this speed is {ceiling} spot strategies; {ADVICE}")
    if options:
        budget, words = _tightest(options, speed)
        if load.options_batch_s > budget:
            per_option = OPTIONS_DECISION_S + load.spot_round_s
            ceiling = max(0, math.floor((budget - load.chains * CHAIN_REQUEST_S) / per_option))
            beside = f", each turn behind a spot round of ~{_wall(load.spot_round_s)}" if spot else ""
            problems.append(f"{engine}: {load.options} options strategies need ~{_wall(load.options_batch_s)} per "
                            f"batch (one per loop turn{beside}), but {words}; the ceiling at this speed is "
                            f"{ceiling} options strategies beside {load.spot} spot; {ADVICE}")
    if load.turn_s > BLOCKING_LIMIT_S:
        ceiling = max(0, math.floor((BLOCKING_LIMIT_S - load.options_step_s) / SPOT_DECISION_S))
        problems.append(f"{engine}: {load.spot} spot strategies run ~{_wall(load.turn_s)} in one blocking loop turn, "
                        f"longer than the {_wall(BLOCKING_LIMIT_S)} after which a missed heartbeat makes /healthz "
                        f"declare the engine lost; the ceiling is {ceiling} spot strategies per engine at any "
                        f"speed; split strategies across engines")
    return problems
