"""The /status and /healthz documents, built from the cached portfolio snapshot and the
feed's latest prices. Pure: the gateway passes its caches and the wall time in.
"""
from __future__ import annotations

from typing import Any, Mapping

from common.portfolio import category_totals

SERVICES = ("marketdata", "signals", "portfolio", "pricer")
HEARTBEAT_LOST_MS = 3_000  # two missed 1 s heartbeats and a margin


def revalue(view: Mapping[str, Any], prices: Mapping[str, float]) -> dict[str, Any]:
    """A strategy view re-marked at ``prices``: spot positions at the live price."""
    out = dict(view)
    positions = {}
    value = view["cash"]
    for symbol, pos in view["positions"].items():
        price = prices.get(symbol, pos.get("current_price"))
        p = dict(pos)
        if price:
            p["current_price"] = price
            p["value"] = pos["quantity"] * price
            p["unrealized_pnl"] = pos["quantity"] * (price - pos["avg_price"])
            value += p["value"]
        else:
            value = None if value is None else value + pos["quantity"] * pos["avg_price"]
        positions[symbol] = p
    option_value = sum((o.get("current_value_usd") or 0.0) for o in view.get("option_positions", {}).values())
    out["positions"] = positions
    out["portfolio_value"] = value + option_value
    out["pnl"] = out["portfolio_value"] - view["initial_capital"]
    out["pnl_pct"] = out["pnl"] / view["initial_capital"] * 100.0
    return out


def build_status(snapshot: Mapping[str, Any] | None, prices: Mapping[str, float], cycle_count: int,
                 health: Mapping[str, Any]) -> dict[str, Any]:
    """The seed's /status document: cycle count, live prices, and every strategy marked now."""
    if not snapshot:
        return {"cycle_count": cycle_count, "prices": dict(prices), "strategies": {}, "totals": {},
                "market_ts": None, "health": health, "note": "waiting for the portfolio's first snapshot"}
    live = {**snapshot.get("prices", {}), **prices}
    strategies = {sid: revalue(view, live) for sid, view in snapshot["strategies"].items()}
    return {
        "cycle_count": cycle_count,
        "market_ts": snapshot.get("market_ts"),
        "prices": live,
        "strategies": strategies,
        "totals": category_totals(strategies.values()),
        "health": health,
    }


def build_health(heartbeats: Mapping[str, Mapping[str, Any]], now_wall_ms: int) -> dict[str, Any]:
    """Each service's last heartbeat and whether it is alive (lost after two missed beats)."""
    services = {}
    for name in SERVICES:
        beat = heartbeats.get(name)
        if beat is None:
            services[name] = {"alive": False, "last_heartbeat_age_s": None}
            continue
        age = now_wall_ms - beat["received_ms"]
        services[name] = {"alive": age < HEARTBEAT_LOST_MS, "last_heartbeat_age_s": round(age / 1000, 2),
                          "pid": beat.get("pid"), "uptime_s": beat.get("uptime_s")}
    feed = heartbeats.get("marketdata", {})
    return {
        "ok": all(s["alive"] for s in services.values()) and not feed.get("stale", False),
        "services": services,
        "feed": {"mode": feed.get("mode"), "market_ts": feed.get("market_ts"), "stale": feed.get("stale"),
                 "finished": feed.get("finished")},
    }
