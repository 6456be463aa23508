"""Prometheus metrics for the gateway's /metrics, built at scrape time from its caches.

Nothing in the message path updates gauges: the zmq loop only replaces its caches, and a
scrape turns them into families and writes the text exposition format 0.0.4 (what every
scraper reads). Written here rather than through prometheus-client, whose import costs the
gateway several MB of RSS for a format this small; tests parse the output with
prometheus-client's own parser.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

PREFIX = "gotrader"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class MetricsInputs:
    """One scrape's view: the /status document (strategies marked now, health), the raw
    heartbeats (bus counters per service), the gateway's own bus counters, cycles, Discord, and
    the gateway's HTTP counters (connections, stream subscribers, what the limits cut off)."""

    status: Mapping[str, Any]
    heartbeats: Mapping[str, Mapping[str, Any]]
    gateway_bus: Mapping[str, Any]
    cycles: Mapping[str, float] = field(default_factory=dict)
    discord: Mapping[str, int] | None = None
    http: Mapping[str, int] | None = None


@dataclass
class Metric:
    """One metric family: its samples are (name suffix, label values, value).

    A counter is exposed as ``<name>_total`` and a summary's samples as ``<name>_count`` and
    ``<name>_sum``, as the format requires."""

    name: str
    doc: str
    kind: str
    labels: tuple[str, ...] = ()
    samples: list[tuple[str, tuple[str, ...], float]] = field(default_factory=list)

    def add_metric(self, values: Iterable[str], value: float) -> None:
        values = tuple(values)
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name}: {len(values)} label values for labels {self.labels}")
        self.samples.append(("", values, float(value)))


def summary(name: str, doc: str, count: int, total: float) -> Metric:
    return Metric(f"{PREFIX}_{name}", doc, "summary", (),
                  [("_count", (), float(count)), ("_sum", (), float(total))])


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Metric:
    return Metric(f"{PREFIX}_{name}", doc, "gauge", tuple(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> Metric:
    return Metric(f"{PREFIX}_{name}", doc, "counter", tuple(labels))


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def strategy_families(strategies: Mapping[str, Mapping[str, Any]]) -> list[Metric]:
    labels = ("strategy", "category")
    equity = _gauge("strategy_equity_usd", "Portfolio value of a strategy at the latest marks.", labels)
    pnl = _gauge("strategy_pnl_usd", "Profit and loss of a strategy since its start.", labels)
    pnl_pct = _gauge("strategy_pnl_percent", "Profit and loss in percent of the initial capital.", labels)
    trades = _counter("strategy_trades", "Trades a strategy has made.", labels)
    positions = _gauge("strategy_positions", "Open positions of a strategy.", (*labels, "kind"))
    kill = _gauge("strategy_kill_switch", "1 when the strategy's drawdown kill switch has tripped.", labels)
    breaker = _gauge("strategy_circuit_breaker", "1 while the strategy's circuit breaker is open.", labels)
    for sid, view in sorted(strategies.items()):
        values = [sid, str(view.get("category", ""))]
        for family, key in ((equity, "portfolio_value"), (pnl, "pnl"), (pnl_pct, "pnl_pct")):
            number = _num(view.get(key))
            if number is not None:
                family.add_metric(values, number)
        trades.add_metric(values, _num(view.get("trade_count")) or 0.0)
        positions.add_metric([*values, "spot"], float(len(view.get("positions") or {})))
        positions.add_metric([*values, "option"], float(len(view.get("option_positions") or {})))
        risk = view.get("risk_state") or {}
        kill.add_metric(values, 1.0 if risk.get("kill_switch") else 0.0)
        breaker.add_metric(values, 1.0 if risk.get("circuit_breaker") else 0.0)
    return [equity, pnl, pnl_pct, trades, positions, kill, breaker]


def category_families(totals: Mapping[str, Mapping[str, Any]]) -> list[Metric]:
    equity = _gauge("category_equity_usd", "Sum of the strategies' values per category (and total).", ["category"])
    initial = _gauge("category_initial_usd", "Sum of the strategies' starting capital per category.", ["category"])
    for category, bucket in sorted(totals.items()):
        if bucket.get("strategies"):
            equity.add_metric([category], _num(bucket.get("value")) or 0.0)
            initial.add_metric([category], _num(bucket.get("initial")) or 0.0)
    return [equity, initial]


def service_families(health: Mapping[str, Any], heartbeats: Mapping[str, Mapping[str, Any]],
                     gateway_bus: Mapping[str, Any]) -> list[Metric]:
    up = _gauge("service_up", "1 while the service's heartbeats arrive.", ["service"])
    age = _gauge("service_heartbeat_age_seconds", "Seconds since the service's last heartbeat.", ["service"])
    errors = _counter("service_errors", "Callback errors the service has logged.", ["service"])
    problems = _gauge("service_problems", "Problems the service reports in its heartbeat (non-zero: /healthz is 503).",
                      ["service"])
    problem = _gauge("service_problem", "1 for each problem a service reports, by its name (the text before ':').",
                     ["service", "problem"])
    for name, svc in sorted((health.get("services") or {}).items()):
        up.add_metric([name], 1.0 if svc.get("alive") else 0.0)
        reported = svc.get("problems") or []
        problems.add_metric([name], float(len(reported)))
        for key in sorted({str(p).split(":", 1)[0].strip() for p in reported}):
            problem.add_metric([name, key], 1.0)
        if _num(svc.get("last_heartbeat_age_s")) is not None:
            age.add_metric([name], float(svc["last_heartbeat_age_s"]))
        if _num(svc.get("errors")) is not None:
            errors.add_metric([name], float(svc["errors"]))
    sent = _counter("bus_messages_sent", "Messages a service has sent on the bus.", ["service"])
    received = _counter("bus_messages_received", "Messages a service has received from the bus.", ["service"])
    dropped = _counter("bus_dropped", "Bad or unroutable frames a service has dropped, by reason.",
                       ["service", "reason"])
    missed = _counter("bus_missed", "Messages lost to sequence gaps, by publisher.", ["service", "source"])
    buses = {name: beat.get("bus") for name, beat in heartbeats.items()}
    buses["gateway"] = gateway_bus
    for name, bus in sorted(buses.items()):
        if not isinstance(bus, Mapping):
            continue
        sent.add_metric([name], _num(bus.get("sent")) or 0.0)
        received.add_metric([name], _num(bus.get("received")) or 0.0)
        for reason, count in sorted((bus.get("dropped") or {}).items()):
            dropped.add_metric([name, str(reason)], _num(count) or 0.0)
        for source, count in sorted((bus.get("missed") or {}).items()):
            missed.add_metric([name, str(source)], _num(count) or 0.0)
    return [up, age, errors, problems, problem, sent, received, dropped, missed]


def feed_families(feed: Mapping[str, Any]) -> list[Metric]:
    stale = _gauge("feed_stale", "1 when the market feed reports stale data.")
    stale.add_metric([], 1.0 if feed.get("stale") else 0.0)
    out: list[Metric] = [stale]
    tick_age = _num(feed.get("last_tick_age_s"))
    if tick_age is not None:
        age = _gauge("feed_last_tick_age_seconds", "Wall seconds since the gateway's last tick.")
        age.add_metric([], tick_age)
        out.append(age)
    slips = _num(feed.get("clock_slips"))
    if slips is not None:
        slipped = _counter("feed_clock_slips", "Stalls after which the sim or replay clock was moved on.")
        slipped.add_metric([], slips)
        out.append(slipped)
    market_ts = _num(feed.get("market_ts"))
    if market_ts is not None:
        clock = _gauge("feed_market_time_seconds", "The feed's market clock, Unix seconds.")
        clock.add_metric([], market_ts / 1000.0)
        out.append(clock)
    return out


def cycle_families(cycles: Mapping[str, float]) -> list[Metric]:
    count = _counter("cycles", "Strategy cycles the signal engine has run.")
    count.add_metric([], float(cycles.get("count", 0)))
    duration = summary("cycle_duration_seconds", "Wall time of the signal engine's cycles seen by the gateway.",
                       int(cycles.get("timed", 0)), float(cycles.get("duration_sum_s", 0.0)))
    out: list[Metric] = [count, duration]
    if _num(cycles.get("last_duration_s")) is not None:
        last = _gauge("cycle_last_duration_seconds", "Wall time of the latest cycle.")
        last.add_metric([], float(cycles["last_duration_s"]))
        out.append(last)
    return out


def discord_families(discord: Mapping[str, int] | None) -> list[Metric]:
    if discord is None:
        return []
    posts = _counter("discord_messages", "Discord messages by outcome (posted, failed, dropped, rate_limited).",
                     ["result"])
    for result, count in sorted(discord.items()):
        posts.add_metric([result], float(count))
    return [posts]


HTTP_COUNTERS = {  # gateway_http's count -> (family, help)
    "evicted": ("http_connections_evicted", "Idle connections closed to admit a new one at the connection limit."),
    "refused": ("http_connections_refused", "Connections answered 503 at the limit (every one mid-request)."),
    "internal_errors": ("http_internal_errors", "Connections closed by an unexpected error in the HTTP server."),
    "stream_refused": ("stream_subscribers_refused", "Stream requests answered 503: every subscriber slot taken."),
    "events": ("stream_events", "Server-sent events published (each to every subscriber)."),
    "coalesced": ("stream_events_coalesced", "Events a subscriber never got because a newer one replaced them."),
    "dropped_slow": ("stream_subscribers_dropped", "Stream subscribers disconnected for not taking their events."),
}
HTTP_GAUGES = {
    "connections": ("http_connections", "Open HTTP connections."),
    "subscribers": ("stream_subscribers", "Open server-sent event streams."),
}


def http_families(http: Mapping[str, int] | None) -> list[Metric]:
    if http is None:
        return []
    out = []
    for table, make in ((HTTP_GAUGES, _gauge), (HTTP_COUNTERS, _counter)):
        for key, (name, doc) in table.items():
            if _num(http.get(key)) is not None:
                family = make(name, doc)
                family.add_metric([], float(http[key]))
                out.append(family)
    return out


def metric_families(inputs: MetricsInputs) -> list[Metric]:
    """Every family of one scrape, in a stable order."""
    status = inputs.status
    health = status.get("health") or {}
    return [
        *strategy_families(status.get("strategies") or {}),
        *category_families(status.get("totals") or {}),
        *service_families(health, inputs.heartbeats, inputs.gateway_bus),
        *feed_families(health.get("feed") or {}),
        *cycle_families(inputs.cycles),
        *discord_families(inputs.discord),
        *http_families(inputs.http),
    ]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def render(families: Iterable[Metric]) -> bytes:
    """The families in the text exposition format 0.0.4."""
    lines: list[str] = []
    for family in families:
        name = f"{family.name}_total" if family.kind == "counter" else family.name
        doc = family.doc.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {family.kind}"]
        for suffix, values, value in family.samples:
            labels = ",".join(f'{key}="{_escape_label(v)}"' for key, v in zip(family.labels, values))
            lines.append(f"{name}{suffix}{{{labels}}} {_format_value(value)}" if labels
                         else f"{name}{suffix} {_format_value(value)}")
    return ("\n".join(lines) + "\n").encode()
