"""What the gateway's HTTP thread reads: the zmq loop's caches (the clone of the portfolio's
books, heartbeats, equity), replaced whole and never mutated, with the documents built from them
memoized."""
from __future__ import annotations

from typing import Any, Callable

from common.wall import wall_ms
from services.views.metrics import MetricsInputs, metric_families, render
from services.views.status import (
    SERVICES,
    BookClone,
    build_health,
    build_status,
    encode_json,
    engine_decisions,
    equity_curves,
)

# /status is rebuilt when its inputs change (and for health ages every STATUS_TTL_MS), but at
# most once per STATUS_TTL_MS: heartbeats arrive several times a second, and a 150 kB document
# rebuilt for each (4-20 ms) would hold the HTTP loop most of the time.
STATUS_TTL_MS = 250


class GatewayCache:
    """What the HTTP thread reads. Each attribute is replaced, never mutated; views built from
    them are memoized on the identity of their inputs, so a burst of requests builds once, and
    the status (and what derives from it) at most once per STATUS_TTL_MS."""

    def __init__(self, clock_ms: Callable[[], float] = wall_ms) -> None:
        self.clock_ms = clock_ms
        self.clone: BookClone | None = None  # the portfolio's books, marks and clock (clone pattern)
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.cycle_count = 0  # cycles of every engine together
        self.engine_cycles: dict[str, int] = {}
        self.services: tuple[str, ...] = SERVICES  # what /healthz expects: one entry per engine
        self.cycles: dict[str, float] = {"count": 0, "timed": 0, "duration_sum_s": 0.0}
        self.last_tick_ms: int | None = None
        self.equity_points: list[dict[str, Any]] = []
        self.gateway_bus: dict[str, Any] = {}
        self.discord: Callable[[], dict[str, int]] | None = None
        self.http: Callable[[], dict[str, int]] | None = None
        self._memo: dict[str, tuple[tuple[Any, ...], Any, float]] = {}

    def _memoized(self, name: str, key: tuple[Any, ...], build: Callable[[], Any], min_interval_ms: int = 0) -> Any:
        """``build()``'s value, kept while ``key`` holds the same objects (or equal ints and
        tuples), and in any case for ``min_interval_ms`` after it was built."""
        held = self._memo.get(name)
        now_ms = self.clock_ms()
        if held is not None:
            held_key, value, built_ms = held
            if (now_ms - built_ms < min_interval_ms
                    or all(a is b or (type(a) in (int, tuple) and a == b) for a, b in zip(held_key, key))):
                return value
        value = build()
        self._memo = {**self._memo, name: (key, value, now_ms)}
        return value

    def health(self) -> dict[str, Any]:
        return build_health(self.heartbeats, self.clock_ms(), self.last_tick_ms, self.services)

    def _status_key(self) -> tuple[Any, ...]:
        return (self.clone, self.heartbeats, self.cycle_count, int(self.clock_ms() // STATUS_TTL_MS))

    def status(self) -> dict[str, Any]:
        return self._memoized("status", self._status_key(), lambda: build_status(
            self.clone, self.cycle_count, self.health(),
            engine_decisions(self.heartbeats)), STATUS_TTL_MS)

    def status_json(self) -> bytes:
        status = self.status()
        return self._memoized("status_json", (status,), lambda: encode_json(status))

    def equity(self) -> dict[str, Any]:
        status = self.status()
        return self._memoized("equity", (self.equity_points, status["strategies"]), lambda: equity_curves(
            self.equity_points, status["strategies"], status.get("market_ts")))

    def metrics_text(self) -> bytes:
        discord = self.discord() if self.discord else None
        http = self.http() if self.http else None
        status = self.status()
        key = (status, self.cycles, self.gateway_bus, discord, tuple(sorted((http or {}).items())))
        return self._memoized("metrics", key, lambda: render(metric_families(MetricsInputs(
            status=status, heartbeats=self.heartbeats, gateway_bus=self.gateway_bus, cycles=self.cycles,
            discord=discord, http=http))), STATUS_TTL_MS)
