"""The gateway's documents (/status, /healthz, equity curves), built from its clone of the
portfolio's books and the services' heartbeats. Pure: the gateway passes its caches and the wall
time in.

/status values every book with the portfolio's own function (``trading.portfolio.book_view``)
at the portfolio's own marks, which travel with its deltas: it shows exactly the values, P&L
and drawdown the kill switch acts on, as of the portfolio's last delta (at most a second old),
never a re-mark at the gateway's own ticks.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from common.messages import HEARTBEAT_LOST_MS
from common.model import RecordError, read_int, read_object, read_str
from trading.ledger import MAX_USD, StrategyBook
from trading.portfolio import CATEGORIES, book_view, category_totals, read_book_record

ENGINE_PREFIX = "signals-"  # every signal engine's service name: signals-<engine> (config `engines`)
DEFAULT_ENGINES = ("signals-spot", "signals-options")


def services_of(engines: Sequence[str]) -> tuple[str, ...]:
    """The services /healthz expects, with one entry per signal engine (service names)."""
    return ("marketdata", *engines, "portfolio", "pricer")


SERVICES = services_of(DEFAULT_ENGINES)


class StatusInputError(ValueError):
    """An equity point that cannot be shown; the message names the bad field."""


class CloneGap(Exception):
    """A delta that does not follow the clone (a seq missed, a new stream, a record that does
    not read): the clone must be rebuilt from a ``book_snapshot``."""


@dataclass(frozen=True, slots=True)
class BookClone:
    """The gateway's copy of the portfolio's books (the clone pattern): current to delta ``seq``
    of ``stream``, with the marks and the market time the portfolio values them at."""

    stream: str
    seq: int
    market_ts: int
    journal_seq: int
    prices: Mapping[str, float]
    books: Mapping[str, tuple[StrategyBook, str]]  # id -> (book, category)


def _read_prices(body: Mapping[str, Any], where: str) -> dict[str, float]:
    prices = {}
    for symbol, price in read_object(body.get("prices"), f"{where}.prices").items():
        if isinstance(price, bool) or not isinstance(price, (int, float)) \
                or not (math.isfinite(price) and 0 < price <= MAX_USD):
            raise RecordError(f"{where}.prices.{symbol}: expected a price in (0, {MAX_USD:g}], got {price!r}")
        prices[symbol] = float(price)
    return prices


def _read_state(body: Any, where: str, books: Mapping[str, tuple[StrategyBook, str]]) -> BookClone:
    """``books`` updated by ``body``'s records and less its ``removed`` ids, with its marks and seq."""
    read_object(body, where)
    merged = dict(books)
    removed = body.get("removed")
    if not isinstance(removed, list) or not all(isinstance(sid, str) for sid in removed):
        raise RecordError(f"{where}.removed: expected a list of strategy ids, got {removed!r:.80}")
    for sid in removed:
        merged.pop(sid, None)
    for sid, record in read_object(body.get("books"), f"{where}.books").items():
        book, category = read_book_record(record, f"{where}.books.{sid}")
        if book.strategy_id != sid:
            raise RecordError(f"{where}.books.{sid}.strategy_id: {book.strategy_id!r} does not match its key")
        merged[sid] = (book, category)
    return BookClone(read_str(body, "stream", where), read_int(body, "seq", where, minimum=0),
                     read_int(body, "market_ts", where, minimum=0), read_int(body, "journal_seq", where, minimum=0),
                     _read_prices(body, where), merged)


def clone_from_snapshot(body: Any) -> BookClone:
    """A fresh clone from the portfolio's ``book_snapshot`` reply; RecordError names the bad key."""
    return _read_state(body, "book_snapshot", {})


def apply_delta(clone: BookClone, body: Any) -> BookClone:
    """``clone`` with one ``book_delta`` applied: the same clone for a delta it already holds
    (seq at or before its own), CloneGap for one it cannot follow."""
    where = f"book_delta {body.get('seq') if isinstance(body, Mapping) else '?'}"
    try:
        stream, seq = read_str(read_object(body, where), "stream", where), read_int(body, "seq", where, minimum=1)
        if stream != clone.stream:
            raise CloneGap(f"{where}: a new stream {stream!r} (the portfolio restarted), clone of {clone.stream!r}")
        if seq <= clone.seq:
            return clone
        if seq > clone.seq + 1:
            raise CloneGap(f"{where}: deltas {clone.seq + 1}..{seq - 1} missed")
        return _read_state(body, where, clone.books)
    except RecordError as exc:
        raise CloneGap(str(exc)) from None


def clone_views(clone: BookClone) -> dict[str, dict[str, Any]]:
    """Every strategy's view, valued by the portfolio's own ``book_view`` at its marks."""
    return {sid: book_view(book, category, clone.prices, clone.market_ts)
            for sid, (book, category) in clone.books.items()}


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


def build_status(clone: BookClone | None, cycle_count: int, health: Mapping[str, Any],
                 decisions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The seed's /status document: cycle count, the portfolio's marks (``prices``), and every
    strategy as the portfolio values it (``clone_views``), each with its ``last_decision``
    (``decisions``: the signal engine's heartbeat ``strategies``), so a strategy that does
    nothing always says why."""
    if clone is None:
        return {"cycle_count": cycle_count, "market_ts": None, "prices": {}, "strategies": {},
                "totals": {}, "health": health, "note": "waiting for the portfolio's first snapshot"}
    known = decisions if isinstance(decisions, Mapping) else {}
    strategies = {sid: view | {"last_decision": last_decision(known.get(sid))}
                  for sid, view in clone_views(clone).items()}
    return {
        "cycle_count": cycle_count,
        "market_ts": clone.market_ts,
        "prices": dict(clone.prices),
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
                 "finished": feed.get("finished"), "last_tick_age_s": tick_age,
                 "clock_slips": feed.get("clock_slips")},
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
