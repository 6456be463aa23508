"""The gateway's documents (/status, /healthz, equity curves), built from the cached portfolio
snapshot, the feed's latest prices and the services' heartbeats. Pure: the gateway passes its
caches and the wall time in, so a request only re-marks a snapshot and never recomputes books.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Sequence

from common.messages import HEARTBEAT_LOST_MS
from trading.portfolio import CATEGORIES, category_totals

ENGINE_PREFIX = "signals-"  # every signal engine's service name: signals-<engine> (config `engines`)
DEFAULT_ENGINES = ("signals-spot", "signals-options")


def services_of(engines: Sequence[str]) -> tuple[str, ...]:
    """The services /healthz expects, with one entry per signal engine (service names)."""
    return ("marketdata", *engines, "portfolio", "pricer")


SERVICES = services_of(DEFAULT_ENGINES)


class StatusInputError(ValueError):
    """A snapshot or equity point that cannot be shown; the message names the bad field."""


def revalue(view: Mapping[str, Any], prices: Mapping[str, float]) -> dict[str, Any]:
    """A strategy view re-marked at ``prices``: spot positions at the live price, options at
    the value the pricer last gave them (``current_value_usd``)."""
    for key in ("cash", "initial_capital", "positions"):
        if key not in view:
            raise StatusInputError(f"strategy {view.get('id', '?')!r}: view lacks {key!r}")
    out = dict(view)
    positions = {}
    value = float(view["cash"])
    for symbol, pos in view["positions"].items():
        price = prices.get(symbol) or pos.get("current_price")
        p = dict(pos)
        if price:
            p["current_price"] = price
            p["value"] = pos["quantity"] * price
            p["unrealized_pnl"] = pos["quantity"] * (price - pos["avg_price"])
            value += p["value"]
        else:  # never priced yet: carry it at cost rather than show a hole
            value += pos["quantity"] * pos["avg_price"]
        positions[symbol] = p
    option_value = sum((o.get("current_value_usd") or 0.0) for o in view.get("option_positions", {}).values())
    initial = float(view["initial_capital"])
    out["positions"] = positions
    out["portfolio_value"] = value + option_value
    out["pnl"] = out["portfolio_value"] - initial
    out["pnl_pct"] = out["pnl"] / initial * 100.0 if initial else 0.0
    return out


NO_DECISION = {"decision": "none yet", "reason": "the signal engine has not run this strategy yet", "ts": None}


def last_decision(entry: Any) -> dict[str, Any]:
    """A strategy's last decision from the signal engine's heartbeat entry: what it decided
    (trade, no trade, buy, sell, hold, skipped, error), at what market time, and why; with
    ``failures`` when the strategy has failed (a user strategy's errors, counted since start)."""
    if not isinstance(entry, Mapping):
        return dict(NO_DECISION)
    ts = entry.get("ts")
    failures = entry.get("failures")
    counted = {"failures": failures} if isinstance(failures, int) and not isinstance(failures, bool) else {}
    return {"decision": str(entry.get("decision") or entry.get("status") or "unknown"),
            "reason": str(entry.get("reason") or entry.get("status") or ""),
            "ts": ts if isinstance(ts, int) and not isinstance(ts, bool) else None, **counted}


def build_status(snapshot: Mapping[str, Any] | None, prices: Mapping[str, float], cycle_count: int,
                 health: Mapping[str, Any], decisions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The seed's /status document: cycle count, live prices, and every strategy marked now,
    each with its ``last_decision`` (``decisions``: the signal engine's heartbeat ``strategies``),
    so a strategy that does nothing always says why."""
    if not snapshot:
        return {"cycle_count": cycle_count, "market_ts": None, "prices": dict(prices), "strategies": {},
                "totals": {}, "health": health, "note": "waiting for the portfolio's first snapshot"}
    if not isinstance(snapshot.get("strategies"), Mapping):
        raise StatusInputError("snapshot.strategies: expected an object of strategy views")
    live = {**snapshot.get("prices", {}), **prices}
    known = decisions if isinstance(decisions, Mapping) else {}
    strategies = {sid: revalue(view, live) | {"last_decision": last_decision(known.get(sid))}
                  for sid, view in snapshot["strategies"].items()}
    return {
        "cycle_count": cycle_count,
        "market_ts": snapshot.get("market_ts"),
        "prices": live,
        "strategies": strategies,
        "totals": category_totals(strategies.values()),
        "health": health,
    }


def engine_cycles(heartbeats: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Cycles run by each signal engine, from its heartbeat, by service name."""
    return {name: beat["cycle_count"] for name, beat in heartbeats.items()
            if name.startswith(ENGINE_PREFIX) and isinstance(beat.get("cycle_count"), int)
            and not isinstance(beat.get("cycle_count"), bool)}


def engine_decisions(heartbeats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Every strategy's last decision, merged from the engines' heartbeats (each strategy runs
    in exactly one engine)."""
    merged: dict[str, Any] = {}
    for name, beat in heartbeats.items():
        if name.startswith(ENGINE_PREFIX) and isinstance(beat.get("strategies"), Mapping):
            merged.update(beat["strategies"])
    return merged


def build_health(heartbeats: Mapping[str, Mapping[str, Any]], now_wall_ms: float,
                 last_tick_ms: int | None = None, services_expected: Sequence[str] = SERVICES) -> dict[str, Any]:
    """Each service's last heartbeat and whether it is alive (lost after two missed beats);
    the feed is stale when marketdata says so. A live service that reports problems (it cannot
    persist, cannot mark, has no real data) is not healthy either: alive is not the same as working.
    ``services_expected`` lists every signal engine (``services_of``); each engine's entry also
    carries its ``cycle_count``."""
    services = {}
    for name in services_expected:
        beat = heartbeats.get(name)
        if beat is None:
            services[name] = {"alive": False, "last_heartbeat_age_s": None}
            continue
        age = now_wall_ms - beat["received_ms"]
        problems = beat.get("problems")
        services[name] = {"alive": age < HEARTBEAT_LOST_MS, "last_heartbeat_age_s": round(age / 1000, 2),
                          "pid": beat.get("pid"), "uptime_s": beat.get("uptime_s"), "errors": beat.get("errors"),
                          "problems": [str(p) for p in problems] if isinstance(problems, list) else []}
        if name.startswith(ENGINE_PREFIX):
            services[name]["cycle_count"] = beat.get("cycle_count")
    feed = heartbeats.get("marketdata", {})
    tick_age = None if last_tick_ms is None else round((now_wall_ms - last_tick_ms) / 1000, 2)
    return {
        "ok": (all(s["alive"] and not s.get("problems") for s in services.values())
               and not feed.get("stale", False)),
        "services": services,
        "feed": {"mode": feed.get("mode"), "market_ts": feed.get("market_ts"), "stale": feed.get("stale"),
                 "finished": feed.get("finished"), "last_tick_age_s": tick_age},
    }


def equity_curves(points: Iterable[Mapping[str, Any]], views: Mapping[str, Mapping[str, Any]],
                  live_ts: int | None = None) -> dict[str, Any]:
    """Equity over time per strategy, per category (Spot, Deribit, IBKR) and in total.

    ``points`` are the portfolio's equity log ``{ts, values: {sid: value}}``; ``views`` are the
    current strategy views (category, initial capital, and the live value appended at
    ``live_ts``). A strategy without a value yet at some point counts at its last known value,
    or its initial capital, so category sums never jump when a strategy first appears.
    """
    rows: list[tuple[int, Mapping[str, Any]]] = []
    for i, point in enumerate(points):
        ts, values = point.get("ts"), point.get("values")
        if isinstance(ts, bool) or not isinstance(ts, int) or not isinstance(values, Mapping):
            raise StatusInputError(f"equity point [{i}]: expected {{ts: int, values: object}}, got {point!r:.80}")
        rows.append((ts, values))
    rows.sort(key=lambda row: row[0])
    if live_ts is not None and (not rows or live_ts > rows[-1][0]):
        rows.append((live_ts, {sid: v.get("portfolio_value") for sid, v in views.items()}))
    sids = sorted(views)
    category_of = {sid: str(views[sid].get("category", "spot")) for sid in sids}
    present = set(category_of.values())
    groups = (*[c for c in CATEGORIES if c in present], *sorted(present - set(CATEGORIES)), "total")
    last = {sid: float(views[sid]["initial_capital"]) for sid in sids}
    strategies: dict[str, list[float | None]] = {sid: [] for sid in sids}
    categories: dict[str, list[float]] = {group: [] for group in groups}
    for _ts, values in rows:
        sums = dict.fromkeys(groups, 0.0)
        for sid in sids:
            value = values.get(sid)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                last[sid] = float(value)
                strategies[sid].append(float(value))
            else:
                strategies[sid].append(None)
            sums[category_of[sid]] += last[sid]
            sums["total"] += last[sid]
        for group in groups:
            categories[group].append(sums[group])
    return {"ts": [ts for ts, _values in rows], "strategies": strategies, "categories": categories}


def json_safe(doc: Any) -> Any:
    """Copy of ``doc`` with NaN and infinities as null, so every reply is strict JSON."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, Mapping):
        return {str(k): json_safe(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [json_safe(v) for v in doc]
    return doc


def encode_json(doc: Any) -> bytes:
    try:
        return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
    except (ValueError, TypeError):  # a NaN or an odd type slipped in: strict JSON all the same
        return json.dumps(json_safe(doc), separators=(",", ":"), default=str).encode()
