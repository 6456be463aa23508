"""portfolio: the only writer of state.json; fills paper orders and enforces risk.

Subscribes  tick.* from marketdata (the prices orders fill at; marks, risk, kill-switch
            liquidation, option expiry); clock from marketdata (when the bars close in wall
            time: housekeeping waits out each close's burst of orders)
Answers     order, option_order (both idempotent by order id), orders (a cycle's orders in one
            request, group committed), positions {strategy_id}, snapshot (every strategy's view),
            book_snapshot (every book record, for a clone), status, equity,
            reset_risk {strategy_id} (an operator re-arms its risk limits)
Requests    prices from marketdata (late joiner); chain from the pricer (each option order's
            contracts, listed and priced); mark from the pricer (open option positions)
Publishes   fill.<strategy_id>, portfolio.delta (numbered: the marks and the changed books),
            portfolio.totals (per category, for the engines' cycle line), heartbeat.portfolio
Calls       trading.portfolio.Portfolio (pure books, risk and order checks), trading.option_order_checks,
            common.state_store

No order is taken at its word: spot fills at this portfolio's own tick, options at the
pricer's listed marks; an answer with status "retry" (no tick of the order's time yet, the
pricer not answering) books nothing and records nothing, so the engine's resend is decided
afresh. A book that cannot be marked is named in ``problems["marking"]`` (so /healthz is 503)
until a mark values it again; the other books are marked regardless.

Order of work for a fill: decide (pure) -> append to the journal and fsync -> book it ->
acknowledge. The orders of one request share one append and one fsync (group commit,
``answer_orders``); none of them is acknowledged before it. state.json is saved atomically
every SAVE_SECONDS and on stop, off the order path: marks, saves, snapshots and option marks
are housekeeping, held from CLOSE_BEFORE_MS before each bar close (the clock's mapping) to
CLOSE_AFTER_MS after it (common.clock), so the orders a close brings never wait behind an
fsync. A crash at any point loses nothing that was acknowledged: on start the journal tail
past state.json's ``journal_seq`` is replayed, into books created from the config first, and
only after the journal has been checked to be this state's history (``start_from_disk``).

Readers clone the books (the ZeroMQ guide's clone pattern): each DELTA_SECONDS a
``portfolio.delta`` numbered ``seq`` (one ``stream`` per process start) carries the marks and
only the books whose record changed, so its size follows the trading, not the number of
strategies; a reader that joins late, or sees a seq missing or a new stream, asks
``book_snapshot`` (every book, with the seq it is current to) and applies the deltas after it.

One writer: the service locks ``portfolio.lock`` in the state directory before it reads a file
there, and writes only while it still holds that lock. When a write fails (disk full,
read-only, permissions, lock lost) ``problems["persist"]`` makes /healthz 503 until a write
succeeds again; an order whose fill cannot be journaled is answered ``retry``, never acked.
"""
from __future__ import annotations

import errno
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from common.bus import Envelope, RemoteError, RequestError, RequestFailed, Subscriber
from common.dir_lock import DirLock, LockHeld, StateDirMissing, prepare_state_dir
from common.model import MAX_ORDERS_PER_REQUEST, ORDER_ERROR, ORDER_RETRY, Fill, RecordError, SpotOrder
from common.state_store import (
    EquityLog,
    Journal,
    JournalError,
    StateFileError,
    load_state,
    remove_stale_temp_files,
    save_state,
)
from common.timeframes import HOUR_MS
from common.wall import wall_ms
from config.settings import Config, load_config
from services.runtime import CloseWatch, ServiceRuntime, config_path, service_cores
from trading.ledger import OrderDecision
from trading.option_book import OptionOrder, OptionOrderDecision
from trading.option_order_checks import (
    ChainQuoteError,
    OptionMarket,
    OptionQuote,
    chain_horizon_days,
    quotes_from_chain,
)
from trading.portfolio import SEED_RENAMES, Portfolio, strategy_metas

MARK_SECONDS = 0.1
DELTA_SECONDS = 1.0
SAVE_SECONDS = 2.0
EQUITY_STEP_MS = HOUR_MS  # one equity point per market hour
MAX_POSITIONS_BATCH = 10_000  # one options engine's strategies in one request
OPTION_MARK_SECONDS = 1.0  # option positions are repriced at most this often (wall), not every tick
PRICER_BACKOFF_SECONDS = 5.0  # after the pricer failed to answer (marks wait, option orders get "retry")
LOCK_NAME = "portfolio.lock"
# Fills are published (to the gateway, the engines' cycle lines) this long after their answer:
# published at once, they woke four subscribers on two cores while the answer was on its way
# back to the engine.
FILL_REPORT_DELAY_SECONDS = 0.002
# An order can come in a moment before the tick of its bar: they travel on two sockets from two
# processes. The portfolio reads its tick subscription this long for it before it answers
# "retry" (which costs the order a round trip and the engine's backoff, 5 ms at least).
TICK_WAIT_SECONDS = 0.003
# Wall seconds an order may spend between its decision and the portfolio: a busy engine, a
# portfolio restart, the engine's backoff (at most 10 s). At the feed's speed that is market
# time an order may be dated before the portfolio's market time, on top of one bar of its
# strategy: 30 s live, 30 market hours at the default sim speed; a clock rewound by days is
# still refused.
ORDER_TRANSIT_SECONDS = 30.0


class PersistFailed(RuntimeError):
    """A fill could not be journaled: the order gets a ``retry`` answer, never an ack."""


def order_transit_ms(cfg: Config) -> int:
    """Market ms that pass in ``ORDER_TRANSIT_SECONDS`` of wall time (live runs at speed 1)."""
    speed = 1.0 if cfg.feed.mode == "live" else cfg.feed.speed
    return int(ORDER_TRANSIT_SECONDS * speed * 1000)


class PortfolioService:
    def __init__(self, cfg: Config, runtime: ServiceRuntime) -> None:
        self.cfg = cfg
        self.rt = runtime
        self.state_path = Path(cfg.state_file)
        state_dir = prepare_state_dir(self.state_path.parent, cfg.create_state_dir)
        self.lock = DirLock(state_dir / LOCK_NAME).acquire()  # LockHeld: another writer is here
        self.portfolio = Portfolio(strategy_metas(cfg), fee_rate=cfg.fee_pct / 100.0,
                                   slippage_rate=cfg.slippage_pct / 100.0,
                                   underlying_quote=cfg.options.underlying_quote,
                                   price_band_pct=cfg.price_band_pct,
                                   order_transit_ms=order_transit_ms(cfg))
        try:
            self.start_from_disk()
        except BaseException:
            self.lock.release()  # refused to start: the next attempt (or a test in-process) may lock
            raise
        self.pending_ticks: dict[str, float] = {}
        self.tick_feed: Subscriber | None = None  # marketdata's ticks (main): read for an order ahead of its tick
        self.orders_ahead_of_tick = 0  # requests that waited for a tick (status)
        self.marketdata = runtime.requester(cfg.endpoints["marketdata"].rep)
        self.pricer = runtime.requester(cfg.endpoints["pricer"].rep, timeout_ms=300, retries=1)
        self.pricer_retry_at = 0.0  # monotonic seconds: a pricer that failed is left alone until then
        self.option_marks = 0
        self.last_equity_step = self.portfolio.market_ts // EQUITY_STEP_MS
        self.dirty = True
        self.orders_seen = 0
        self.fills_made = 0
        self.stream = os.urandom(6).hex()  # a restart starts a new numbering: readers resnapshot
        self.delta_seq = 0
        self.closes = CloseWatch.of_strategies(cfg.strategies, runtime.stats)  # marketdata's clock
        self.save()

    # --- persistence -------------------------------------------------------------------
    def start_from_disk(self) -> None:
        """Load state.json, create the books the config adds, check that the journal is this
        state's history, then book the journal's tail. Any doubt stops the service with a
        StateFileError or JournalError naming the file, the line or seq, and the fix: a
        state that is saved never drops or repeats a journaled fill."""
        stale = remove_stale_temp_files(self.state_path)
        if stale:
            self.rt.log.warning("stale_temp_files_removed", files=stale)
        state = load_state(self.state_path)  # StateFileError stops the service: never overwrite
        if state is not None:
            try:
                self.portfolio.load_state(state)
            except RecordError as exc:
                raise StateFileError(self.state_path, str(exc)) from None
        renamed, skipped = self.portfolio.rename_books(SEED_RENAMES)  # before reconcile: never pruned
        for old, new in renamed:
            self.rt.log.warning("strategy_renamed", old_id=old, new_id=new)
        for old, new in skipped:
            self.rt.log.warning("strategy_rename_skipped", old_id=old, new_id=new,
                                reason="a book of the new id exists too; both are kept")
        rec = self.portfolio.reconcile(self.portfolio.market_ts)  # books exist before the replay
        self.journal = Journal(self.state_path.parent / "journal.jsonl")
        seen = self.portfolio.last_seen_fill()
        tail = self.journal.read(after_seq=seen["seq"] - 1 if seen else self.portfolio.journal_seq)
        replayed = sum(1 for r in tail if r["seq"] > self.portfolio.journal_seq)
        problem = self.portfolio.journal_disagreement(self.journal.last_seq, tail)
        if problem is None:
            try:
                for event in self.portfolio.replay(tail):
                    self.rt.log.warning("risk_event", detail=event)
            except ValueError as exc:  # a record that does not parse or does not fit its book
                problem = str(exc)
        if problem is not None:
            self.journal.close()
            raise JournalError(f"{self.journal.path}: {problem}")
        try:
            self.journal_risk()  # the renames done above, so the journal alone rebuilds them too
        except PersistFailed:
            pass  # flagged as a persist problem; the next mark journals them
        self.equity = EquityLog(self.state_path.parent / "equity.jsonl")
        for damage in self.equity.damaged_lines:
            self.rt.log.warning("equity_line_skipped", detail=damage)
        self.rt.log.info("state_loaded", existed=state is not None, journal_replayed=replayed,
                         journal_seq=self.portfolio.journal_seq, created=list(rec.created),
                         retired=list(rec.retired), kept=len(rec.kept))

    def save(self) -> None:
        """Save state.json if it changed; a failed save is a persist problem, retried next time."""
        if not self.dirty:
            return
        try:
            self.check_lock()
            save_state(self.state_path, self.portfolio.to_state())
        except (OSError, LockHeld, RecordError) as exc:  # RecordError: a state that would not load back
            self.persist_failed("state.json", exc)
            return
        self.dirty = False
        self.rt.clear_problem("persist")

    def check_lock(self) -> None:
        """Write only while holding the lock: if its file was deleted or replaced under us, take
        the new one; LockHeld when another process got there first."""
        if not self.lock.still_held():
            self.lock.release()
            self.lock = DirLock(self.lock.path).acquire()

    def persist_failed(self, what: str, exc: Exception) -> None:
        """Flag the outage (problems -> /healthz 503, logged once); the next save probes the disk
        again, and only a good save of state.json clears the flag."""
        code = errno.errorcode.get(exc.errno, "") if isinstance(exc, OSError) and exc.errno else ""
        self.rt.set_problem("persist", f"cannot write {what}: {code + ': ' if code else ''}"
                                       f"{getattr(exc, 'strerror', None) or exc}")
        self.dirty = True

    def book_fills(self, fills: list[Fill]) -> None:
        """Journal (fsync) first, then book: the ack follows only after this. The fills are
        published and logged FILL_REPORT_DELAY_SECONDS after the loop turn's answer is sent
        (``after_turn``): neither is on the ack's path, there or back. PersistFailed when the
        journal cannot be written: nothing is booked."""
        if not fills:
            return
        self.journal_append([f.to_dict() for f in fills])
        for event in self.portfolio.commit(fills):
            self.rt.log.warning("risk_event", detail=event)
        self.fills_made += len(fills)
        self.dirty = True
        self.rt.after_turn(lambda: self.report_fills(fills), FILL_REPORT_DELAY_SECONDS)

    def report_fills(self, fills: list[Fill]) -> None:
        """Publish ``fill.<strategy_id>`` and log each fill."""
        for fill in fills:
            self.rt.publisher.publish(f"fill.{fill.strategy_id}", "fill", fill.to_dict())
        for fill in fills:
            self.rt.log.info("fill", seq=fill.seq, strategy=fill.strategy_id, kind=fill.kind,
                             side=fill.side, instrument=fill.instrument, quantity=fill.quantity,
                             price=fill.price, fee=fill.fee, realized_pnl=fill.realized_pnl)

    def journal_append(self, records: list[dict[str, Any]]) -> None:
        """Append and fsync while holding the lock; PersistFailed (nothing written that counts)
        when the disk or the lock says no."""
        try:
            self.check_lock()
            self.journal.append(records)
        except (OSError, LockHeld) as exc:
            self.persist_failed("journal.jsonl", exc)
            raise PersistFailed(str(exc)) from None

    def journal_risk(self) -> None:
        """Journal the renames done on start (``RenameRecord``) and the risk state of books whose
        kill switch or daily loss flag changed, before the next save, so the journal alone
        rebuilds them (``RiskRecord``)."""
        records: list[Any] = self.portfolio.rename_records(self.portfolio.journal_seq + 1)
        records += self.portfolio.risk_records(self.portfolio.journal_seq + 1 + len(records))
        if records:
            self.journal_append([r.to_dict() for r in records])
            self.portfolio.commit(records)
            self.dirty = True

    # --- orders: decide, journal (one fsync per round), book, answer ---------------------------
    def read_order(self, kind: str, body: Any) -> SpotOrder | OptionOrder:
        """The order of an ``order`` or ``option_order`` body, for a book of its kind here;
        RequestError naming what is wrong."""
        try:
            order = SpotOrder.from_dict(body) if kind == "order" else OptionOrder.from_dict(body)
        except RecordError as exc:
            raise RequestError("bad_order", str(exc)) from None
        book = self.portfolio.books.get(order.strategy_id)
        if book is None:
            raise RequestError("unknown_strategy",
                               f"{kind}.strategy_id: no strategy {order.strategy_id!r} in this portfolio")
        if kind == "option_order" and book.kind != "options":
            raise RequestError("unknown_strategy",
                               f"option_order.strategy_id: no options strategy {order.strategy_id!r} in this portfolio")
        return order

    def decide_order(self, order: SpotOrder | OptionOrder, seq: int) -> OrderDecision | OptionOrderDecision:
        """What the books say to one order (nothing written yet); its fills numbered from
        ``seq``. The one decision every order handler uses."""
        self.orders_seen += 1
        if isinstance(order, OptionOrder):
            refusal = self.portfolio.option_order_refusal(order)
            return refusal if refusal is not None else self.decide_option_order(order, seq)
        return self.portfolio.decide_spot(order, seq)

    def decide_option_order(self, order: OptionOrder, seq: int) -> OptionOrderDecision:
        """Price the order's contracts with the pricer's chains, then decide at those prices;
        "retry" when the pricer cannot answer: never fill blind."""
        if time.monotonic() < self.pricer_retry_at:
            return OptionOrderDecision(ORDER_RETRY, "pricer unavailable: waiting before asking again")
        contracts = [leg.contract for leg in order.legs]
        spot: dict[str, float] = {}
        quotes: dict[str, OptionQuote] = {}
        ts = 0
        try:
            for underlying, venue in sorted({(c.underlying, c.venue) for c in contracts}):
                wanted = [c for c in contracts if (c.underlying, c.venue) == (underlying, venue)]
                horizon = chain_horizon_days(wanted, self.portfolio.market_ts)
                reply = self.pricer.request("chain", {"underlying": underlying, "venue": venue,
                                                      "horizon_days": horizon})
                spot[underlying], found = quotes_from_chain(reply, wanted)
                quotes.update(found)
                ts = max(ts, reply["ts"]) if isinstance(reply.get("ts"), int) else ts
        except RequestFailed as exc:
            self.pricer_retry_at = time.monotonic() + PRICER_BACKOFF_SECONDS
            return OptionOrderDecision(ORDER_RETRY, f"pricer unavailable: {exc}")
        except RemoteError as exc:
            return OptionOrderDecision(ORDER_RETRY, f"pricer refused: {exc.code}: {exc.message}")
        except ChainQuoteError as exc:
            self.rt.log.error("pricer_bad_chain", order_id=order.order_id, error=str(exc))
            return OptionOrderDecision(ORDER_RETRY, f"pricer sent a bad chain: {exc}")
        return self.portfolio.decide_options_at_market(order, OptionMarket(ts, spot, quotes), seq)

    def answer_orders(self, orders: Sequence[SpotOrder | OptionOrder]) -> list[dict[str, Any]]:
        """Group commit: decide a round of orders, journal all their fills with one fsync, book
        them, and only then answer, in the orders' order. A round holds one order per strategy
        (an order is decided on its book as the fills before it left it), so a cycle's orders
        usually take one fsync. A round that cannot be journaled books nothing: it and every
        order after it are answered ``retry`` and stay with the sender."""
        self.await_ticks(orders)
        answers: list[dict[str, Any]] = []
        start = 0
        while start < len(orders):
            end, strategies = start, set()
            while end < len(orders) and orders[end].strategy_id not in strategies:
                strategies.add(orders[end].strategy_id)
                end += 1
            try:
                answers += self.commit_round(orders[start:end])
            except PersistFailed as exc:
                return answers + [{"order_id": o.order_id, "status": ORDER_RETRY, "reason": f"not journaled: {exc}",
                                   "fill": None, "fills": []} for o in orders[start:]]
            start = end
        return answers

    def await_ticks(self, orders: Sequence[SpotOrder | OptionOrder]) -> None:
        """Read the tick subscription, for up to TICK_WAIT_SECONDS, while a spot order is dated
        after the newest tick of its symbol: its bar's tick is on its way. What is read is
        handled as the loop would (``on_message``)."""
        tape = self.portfolio.tape
        waiting = [o for o in orders if isinstance(o, SpotOrder) and tape.behind(o.symbol, o.ts_event)]
        if not waiting or self.tick_feed is None:
            return
        self.orders_ahead_of_tick += 1
        deadline = time.monotonic() + TICK_WAIT_SECONDS
        while waiting and (remaining_ms := math.ceil((deadline - time.monotonic()) * 1000)) > 0:
            got = self.tick_feed.receive(remaining_ms)
            if got is None:
                return
            self.on_message(*got)
            waiting = [o for o in waiting if tape.behind(o.symbol, o.ts_event)]

    def commit_round(self, orders: Sequence[SpotOrder | OptionOrder]) -> list[dict[str, Any]]:
        """Orders of distinct strategies: their fills numbered one after another and journaled
        together (PersistFailed: nothing booked, nothing answered)."""
        seq = self.portfolio.journal_seq + 1
        decided: list[tuple[SpotOrder | OptionOrder, Any, list[Fill]]] = []
        for order in orders:
            decision = self.decide_order(order, seq)
            if isinstance(decision, OptionOrderDecision):
                fills = list(decision.fills)
            else:
                fills = [decision.fill] if decision.fill is not None else []
            seq += len(fills)
            decided.append((order, decision, fills))
        self.book_fills([fill for _, _, fills in decided for fill in fills])
        answers = []
        for order, decision, fills in decided:
            if not fills and decision.status not in ("duplicate", ORDER_RETRY):  # a retry's resend must fill
                self.portfolio.record_no_fill(order.strategy_id, order.order_id)
                self.dirty = True
            answer = {"order_id": order.order_id, "status": decision.status, "reason": decision.reason}
            if isinstance(order, OptionOrder):
                if not fills and decision.status != "duplicate":
                    self.rt.log.info("option_order_refused", order_id=order.order_id, reason=decision.reason)
                answers.append({**answer, "fills": [f.to_dict() for f in fills]})
            else:
                answers.append({**answer, "fill": fills[0].to_dict() if fills else None})
        return answers

    # --- requests --------------------------------------------------------------------------
    def on_order(self, body: Any) -> dict[str, Any]:
        return self.answer_orders([self.read_order("order", body)])[0]

    def on_option_order(self, body: Any) -> dict[str, Any]:
        return self.answer_orders([self.read_order("option_order", body)])[0]

    def on_orders(self, body: Any) -> dict[str, Any]:
        """A cycle's orders in one request, ``{"orders": [{"type": "order" | "option_order",
        "order": {...}}]}``, answered ``{"acks": [...]}`` in the same order and group committed.
        An item that is not a valid order is answered ``{"status": "error", "code", "reason"}``
        in its place; the others go ahead."""
        items = body.get("orders") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ORDERS_PER_REQUEST:
            got = len(items) if isinstance(items, list) else type(items).__name__
            raise RequestError("bad_request", f"orders.orders: expected a list of 1..{MAX_ORDERS_PER_REQUEST} "
                                              f"orders, got {got}")
        acks: list[dict[str, Any] | None] = [None] * len(items)
        valid: list[tuple[int, SpotOrder | OptionOrder]] = []
        for i, item in enumerate(items):
            kind = item.get("type") if isinstance(item, dict) else None
            try:
                if kind not in ("order", "option_order"):
                    raise RequestError("bad_order", f"type: expected 'order' or 'option_order', got {kind!r}")
                valid.append((i, self.read_order(kind, item.get("order"))))
            except RequestError as exc:
                inner = item.get("order") if isinstance(item, dict) else None
                acks[i] = {"order_id": inner.get("order_id") if isinstance(inner, dict) else None,
                           "status": ORDER_ERROR, "code": exc.code, "reason": f"orders[{i}].{exc}"}
        for (i, _), ack in zip(valid, self.answer_orders([order for _, order in valid])):
            acks[i] = ack
        return {"acks": acks}

    def on_reset_risk(self, body: Any) -> dict[str, Any]:
        """An operator re-arms a strategy (``go-trader reset-risk``): decide, journal (a risk
        record, so a rebuild keeps the reset), book, answer, as for a fill."""
        sid = body.get("strategy_id") if isinstance(body, dict) else None
        if not isinstance(sid, str) or sid not in self.portfolio.books or sid not in self.portfolio.metas:
            raise RequestError("unknown_strategy", f"reset_risk.strategy_id: no configured strategy {sid!r} "
                                                   f"in this portfolio")
        record, cleared = self.portfolio.decide_risk_reset(sid)
        if record is not None:
            try:
                self.journal_append([record.to_dict()])
            except PersistFailed as exc:
                raise RequestError("not_journaled", f"reset of {sid} not journaled, nothing changed ({exc}); "
                                                    f"try again once the state directory is writable") from None
            self.portfolio.commit([record])
            self.dirty = True
            self.rt.log.warning("risk_reset", strategy=sid, seq=record.seq, cleared=cleared)
        return {"strategy_id": sid, "reset": record is not None, "cleared": cleared,
                "risk_state": self.portfolio.strategy_view(sid)["risk_state"]}

    def on_positions(self, body: Any) -> dict[str, Any]:
        sid = body.get("strategy_id") if isinstance(body, dict) else None
        if not isinstance(sid, str) or sid not in self.portfolio.books:
            raise RequestError("unknown_strategy", f"positions.strategy_id: no strategy {sid!r} in this portfolio")
        symbols = {sc.id: sc.symbol for sc in self.cfg.strategies}
        return self.portfolio.positions_view(sid, symbols.get(sid, "")).to_dict()

    def on_positions_batch(self, body: Any) -> dict[str, Any]:
        """Books of many strategies in one reply (an options engine's whole batch): a read."""
        sids = body.get("strategy_ids") if isinstance(body, dict) else None
        if not isinstance(sids, list) or not 1 <= len(sids) <= MAX_POSITIONS_BATCH:
            raise RequestError("bad_request", f"positions_batch.strategy_ids: expected a list of "
                                              f"1..{MAX_POSITIONS_BATCH} strategy ids, got {type(sids).__name__}")
        unknown = [sid for sid in sids if not isinstance(sid, str) or sid not in self.portfolio.books]
        if unknown:
            raise RequestError("unknown_strategy", f"positions_batch.strategy_ids: no strategy {unknown[0]!r} "
                                                   f"in this portfolio")
        symbols = {sc.id: sc.symbol for sc in self.cfg.strategies}
        return {"books": {sid: self.portfolio.positions_view(sid, symbols.get(sid, "")).to_dict() for sid in sids}}

    def on_snapshot(self, _body: Any = None) -> dict[str, Any]:
        return self.portfolio.snapshot()

    def on_book_snapshot(self, _body: Any = None) -> dict[str, Any]:
        """Every book for a clone, current to delta ``seq``: the reader applies deltas after it
        (the changes not yet published are in it already, and re-applying a record is harmless)."""
        return {"stream": self.stream, "seq": self.delta_seq, **self.portfolio.records_message(self.portfolio.books)}

    def on_status(self, _body: Any = None) -> dict[str, Any]:
        return {"market_ts": self.portfolio.market_ts, "journal_seq": self.portfolio.journal_seq,
                "strategies": len(self.portfolio.books), "orders": self.orders_seen, "fills": self.fills_made,
                "option_marks": self.option_marks, "orders_ahead_of_tick": self.orders_ahead_of_tick}

    def on_equity(self, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        since_ts, max_points = body.get("since_ts"), body.get("max_points", 500)
        for name, value in (("since_ts", since_ts), ("max_points", max_points)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise RequestError("bad_request", f"equity.{name}: expected a positive integer, got {value!r}")
        return {"points": self.equity.read(since_ts=since_ts, max_points=max_points)}

    # --- market -----------------------------------------------------------------------------
    def near_close(self, ahead_ms: float = 0.0) -> bool:
        """True within a bar close's burst of orders: housekeeping waits (ServiceRuntime)."""
        return self.closes.holds(wall_ms(), ahead_ms)

    def on_message(self, topic: str, env: Envelope) -> None:
        body = env.body
        if env.type == "clock":
            self.closes.follow(body)
        elif env.type == "tick" and isinstance(body, dict):
            symbol, price, ts = body.get("symbol"), body.get("price"), body.get("ts")
            if isinstance(symbol, str) and isinstance(price, (int, float)) and not isinstance(price, bool) \
                    and math.isfinite(price) and price > 0 and isinstance(ts, int) and not isinstance(ts, bool):
                if self.portfolio.record_tick(symbol, float(price), ts):  # orders of this time fill at it
                    self.pending_ticks[symbol] = float(price)
                else:  # older than the last tick of the symbol: market time never goes back
                    self.rt.stats.count_drop("stale_tick")
            else:
                self.rt.stats.count_drop("bad_tick")

    def mark(self) -> None:
        if not self.pending_ticks:
            return
        ticks, self.pending_ticks = self.pending_ticks, {}
        events, liquidations = self.portfolio.mark(ticks, self.portfolio.market_ts)
        self.report_marking()
        for event in events:
            self.rt.log.warning("risk_event", detail=event)
        if events:
            self.dirty = True
        try:
            self.book_fills(liquidations)
            self.journal_risk()
        except PersistFailed:
            return  # not booked: the next mark decides these fills (and risk records) again
        step = self.portfolio.market_ts // EQUITY_STEP_MS
        if step > self.last_equity_step:
            self.last_equity_step = step
            try:
                self.equity.append(step * EQUITY_STEP_MS, self.portfolio.equity_point())
            except OSError as exc:
                self.persist_failed("equity.jsonl", exc)

    def mark_options(self) -> None:
        """Reprice every open option position through the pricer (at most once a second)."""
        contracts = self.portfolio.open_option_contracts()
        if not contracts:
            return
        if time.monotonic() < self.pricer_retry_at:
            return
        try:
            reply = self.pricer.request("mark", {"positions": contracts})
        except (RequestFailed, RemoteError) as exc:
            self.pricer_retry_at = time.monotonic() + PRICER_BACKOFF_SECONDS
            self.rt.log.warning("option_marks_unavailable", error=str(exc), positions=len(contracts))
            return
        reply = reply if isinstance(reply, dict) else {}
        marks, ts = reply.get("marks"), reply.get("ts")
        if not isinstance(marks, dict) or not isinstance(ts, int):
            self.rt.log.error("pricer_bad_marks", detail="mark reply: expected {marks: {...}, ts: int}")
            return
        self.portfolio.mark_options(marks, ts)
        self.report_marking()
        self.option_marks += 1
        self.dirty = True

    def report_marking(self) -> None:
        """``problems["marking"]`` names every book the last marks could not value; cleared
        (and logged once) when they all value again."""
        problems = self.portfolio.marking_problems
        if problems:
            reason = "; ".join(f"{sid}: {why}" for sid, why in sorted(problems.items()))
            if self.rt.problems.get("marking") != reason:
                self.rt.log.error("marking_failed", books=len(problems), detail=reason)
            self.rt.problems["marking"] = reason
        elif self.rt.problems.pop("marking", None) is not None:
            self.rt.log.info("marking_recovered")

    def fetch_prices(self) -> None:
        """Late joiner: until every feed symbol has a mark, ask marketdata for its snapshot."""
        missing = [s for s in self.cfg.feed.symbols if s not in self.portfolio.prices]
        if not missing:
            return
        try:
            reply = self.marketdata.request("prices", timeout_ms=300, retries=1)
        except (RequestFailed, RemoteError):
            return
        ticks = {s: q["price"] for s, q in reply.get("prices", {}).items() if s not in self.pending_ticks}
        self.pending_ticks.update(ticks)
        for symbol, quote in reply.get("prices", {}).items():
            if isinstance(quote.get("ts"), int) and isinstance(quote.get("price"), (int, float)):
                self.portfolio.record_tick(symbol, float(quote["price"]), quote["ts"])
        if isinstance(reply.get("ts"), int):
            self.portfolio.market_ts = max(self.portfolio.market_ts, reply["ts"])
        self.mark()

    def publish_delta(self) -> None:
        """The next numbered delta (marks, changed books), and the totals the engines log."""
        self.delta_seq += 1
        changed = self.portfolio.take_changed()
        self.rt.publisher.publish("portfolio.delta", "book_delta", {
            "stream": self.stream, "seq": self.delta_seq, **self.portfolio.records_message(changed)})
        self.rt.publisher.publish("portfolio.totals", "totals", {
            "market_ts": self.portfolio.market_ts, "journal_seq": self.portfolio.journal_seq,
            "totals": self.portfolio.totals()})

    def stop(self) -> None:
        self.dirty = True
        self.save()
        self.journal.close()
        self.equity.close()
        self.lock.release()


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(config_path(argv))
    rt = ServiceRuntime("portfolio", cores=service_cores(cfg.cpu, fill_path=True))
    try:
        svc = PortfolioService(cfg, rt)
    except (StateDirMissing, LockHeld) as exc:
        rt.log.error("state_dir_unusable", detail=str(exc))
        print(f"portfolio: {exc}", file=sys.stderr)
        rt.close()
        return 2
    except (StateFileError, JournalError) as exc:
        rt.log.error("state_unreadable", detail=str(exc))
        print(f"portfolio: {exc}", file=sys.stderr)
        rt.close()
        return 2
    ep = cfg.endpoints["portfolio"]
    rt.bind_publisher(ep.pub)
    # Ticks first: in each loop turn they are read before the orders, so an order finds the
    # tick of its own bar when both are waiting.
    svc.tick_feed = rt.subscribe([cfg.endpoints["marketdata"].pub], ["tick.", "clock"], svc.on_message)
    rt.bind_replier(ep.rep, {"order": svc.on_order, "option_order": svc.on_option_order, "orders": svc.on_orders,
                             "positions": svc.on_positions, "positions_batch": svc.on_positions_batch,
                             "snapshot": svc.on_snapshot, "book_snapshot": svc.on_book_snapshot,
                             "status": svc.on_status, "equity": svc.on_equity, "reset_risk": svc.on_reset_risk})
    rt.heartbeat_status(svc.on_status)
    rt.hold_housekeeping(svc.near_close)
    rt.every(MARK_SECONDS, svc.mark, housekeeping=True)
    rt.every(1.0, svc.fetch_prices, housekeeping=True)
    rt.every(OPTION_MARK_SECONDS, svc.mark_options, housekeeping=True)
    rt.every(DELTA_SECONDS, svc.publish_delta, housekeeping=True)
    rt.every(SAVE_SECONDS, svc.save, housekeeping=True)
    rt.run(on_stop=svc.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
