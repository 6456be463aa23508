"""signals: one signal engine, running its strategies when they are due, in market time.

``python -m services.signals --engine NAME`` runs the strategies the config's ``engines`` section
gives NAME (by default ``spot`` and ``options``: config/engines.py), publishes on that engine's own
PUB, answers on its own REP and keeps its own outbox, as the service ``signals-NAME``; restarting
one engine touches only its strategies. Without ``--engine`` a config with one engine runs it.

Subscribes  bar.* and clock from marketdata; chain.* and iv.* from the pricer (options engines);
            portfolio.totals and fill.* from the portfolio (the values per category and the trades
            in each cycle's log line)
Requests    history from marketdata (warm-up, and again after a gap); chain + iv from the pricer only
            when no fresh published one is at hand; positions_batch (one per options batch) and
            orders (a cycle's spot and option orders in one request) to portfolio
Publishes   signal.<strategy_id>, ack.<strategy_id> (the portfolio's final answer to each order, with
            the wall times it was sent and answered), cycle, heartbeat.signals-<engine> (with each strategy's last
            decision, its market time and its reason: the gateway's /status shows them). A
            spot cycle's signals go out after its orders were sent and answered: the bar's
            close -> fill path waits for nothing but the decisions; the heartbeat waits out
            each close's burst (common.clock.CloseWindow)
Calls       trading.engine (schedule, evaluate_spot, evaluate_options), strategies.incremental (spot
            strategies kept bar by bar, rebuilt from a refetched history)

Orders travel over REQ/REP and stay in the outbox until the portfolio answers them for good
(a fill or a final refusal: risk, duplicate, bad order); their id (strategy + bar time, or
strategy + chain time + structure) makes a resend harmless. An order that goes unanswered or
is refused for a transient reason (status ``retry``, error ``unavailable``: the portfolio
cannot journal it, or cannot price it yet) stays first in line and is sent again with
exponential backoff, so the orders behind it keep their order.
Options strategies never trade without a fresh chain: a pricer that does not answer makes
them skip (and is not asked again for a few seconds) while spot keeps trading.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import OrderedDict
from typing import Any, Callable

from common.bars import Bar, BarStore
from common.bus import Envelope, RemoteError, RequestFailed
from common.model import (
    MAX_ORDERS_PER_REQUEST,
    ORDER_ERROR,
    ORDER_RETRY,
    TRANSIENT_ERRORS,
    RecordError,
    Signal,
    SpotOrder,
)
from common.ohlcv import OHLCV
from common.timeframes import timeframe_ms
from common.wall import wall_ms
from config.schema import SCRIPT_TIMEOUT_SECONDS
from config.settings import Config, load_config, use_strategies_dir, user_strategy_problems
from options.chain import ChainReplyError, chain_from_dict
from options.chain_wire import OPTIONS_HORIZON_DAYS
from options.risk import OptionsRiskLimits
from services.feeds.exchange_client import backoff_seconds
from services.runtime import CloseWatch, ServiceRuntime, bus_security, config_path, service_cores
from services.script_runner import ScriptRunner
from services.views.summary import cycle_log_fields
from strategies.incremental import SignalCache
from strategies.script import ScriptError
from trading.book_view import BookView
from trading.engine import (
    HISTORY_BARS,
    OptionsDecision,
    OptionsStrategy,
    Schedule,
    SpotDecision,
    evaluate_options,
    evaluate_spot,
    options_strategy,
    script_decision,
    spot_summary,
)
from trading.option_book import OptionOrder
from trading.option_inputs import OptionsMarket

WARMUP_BACKOFF_SECONDS = 2.0
PORTFOLIO_BACKOFF_SECONDS = 1.0  # first wait after an unanswered order (the request itself timed out)
# First wait after a transient refusal ('retry': mostly the order's tick, which the portfolio
# waited for a few ms and did not get, or a journal it could not write); ``resend_when_due``,
# brought forward by ``resend_within``, keeps it to the ms.
ORDER_RETRY_SECONDS = 0.005
PORTFOLIO_BACKOFF_CAP_SECONDS = 10.0
RESEND_CHECK_SECONDS = 0.05  # how often an empty outbox looks again (run_due's beat)
PRICER_BACKOFF_SECONDS = 5.0
PUBLISHED_CHAIN_INTERVALS = 2  # a published chain older than this many options intervals is asked for instead

__all__ = ["SignalEngine", "main"]


class SignalEngine:
    """The strategies of one engine (``engine``: a name in ``cfg.engines``; None: every strategy)."""

    def __init__(self, cfg: Config, runtime: ServiceRuntime, engine: str | None = None) -> None:
        self.cfg = cfg
        self.rt = runtime
        self.engine = engine
        mine = cfg.engine_strategies(engine) if engine is not None else cfg.strategies
        self.marketdata = runtime.requester(cfg.endpoints["marketdata"].rep, timeout_ms=1000, retries=2)
        self.warmup_retry_at = 0.0
        self.portfolio_retry_at = 0.0
        # Brings resend_when_due forward (main: the runtime's wake); an order held back while
        # a clock message was handled is resent when its wait is over, not at the next check.
        self.resend_within: Callable[[float], None] = lambda _seconds: None
        self.portfolio_failures = 0  # transient failures in a row: the backoff grows with them
        self.portfolio = runtime.requester(cfg.endpoints["portfolio"].rep, timeout_ms=3000, retries=1)
        self.pricer = runtime.requester(cfg.endpoints["pricer"].rep, timeout_ms=1000, retries=1)
        self.pricer_retry_at = 0.0  # monotonic seconds: a pricer that failed is left alone until then
        self.market_ts = 0
        self.strategy_status: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, int] = {}  # strategy id -> runs that failed (a user strategy's error)
        self.failure_causes: set[tuple[str, str]] = set()  # logged once each
        use_strategies_dir(cfg)
        mine_ids = {sc.id for sc in mine}
        broken = {sid: why for sid, why in user_strategy_problems(cfg).items() if sid in mine_ids}
        for sid, why in broken.items():  # user functions that cannot run are left out, never the engine
            self.fail(sid, why)
        self.spot = [sc for sc in mine if sc.is_spot and sc.id not in broken]
        self.scripts = ScriptRunner(SCRIPT_TIMEOUT_SECONDS)
        self.options = [sc for sc in mine if sc.is_options]
        self.options_strategies: dict[str, OptionsStrategy] = {}  # options_strategy_of
        self.published: dict[Any, tuple[int, Any]] = {}  # (underlying, venue) or underlying -> (ts, body)
        self.published_max_age_ms = PUBLISHED_CHAIN_INTERVALS * 1000 * max(
            (sc.interval_seconds for sc in self.options), default=0)
        self.options_books: dict[str, Any] = {}  # this batch's books, from one positions_batch request
        self.options_books_problem: str | None = None
        self.acked_in_batch: set[str] = set()  # strategies whose orders were answered after the books were read
        self.options_pending: list[str] = []  # due options strategies, decided one per loop turn
        self.options_market: OptionsMarket | None = None  # this batch's chains and IV
        self.options_unavailable: str | None = None
        self.schedule = Schedule({sc.id: sc.interval_seconds for sc in self.spot + self.options})
        self.stores: dict[tuple[str, str], BarStore] = {}
        # The close the bars come in for, and the series still to bring theirs (close_complete).
        self.close_waiting: tuple[int, set[tuple[str, str]]] | None = None
        # The newest bars asked for since the last append (``bars`` with a limit): a close's
        # spot strategies mostly share a few series, and a copy per strategy was half their cost.
        self.tails: dict[tuple[str, str, int], OHLCV] = {}
        self.spot_signals = SignalCache()  # incremental spot strategies, fed from the stores
        self.needs_warmup: set[tuple[str, str]] = set()
        for sc in self.spot + self.options:
            for symbol in filter(None, (sc.symbol, sc.pair)):
                self.needs_warmup.add((symbol, sc.timeframe))
        self.outbox: OrderedDict[str, SpotOrder | OptionOrder] = OrderedDict()
        self.answered: list[tuple[SpotOrder | OptionOrder, dict[str, Any], float, float]] = []  # settle_answers
        self.last_ordered_bar: dict[str, int] = {}
        self.cycle_count = 0
        self.orders_acked = 0
        self.portfolio_totals: dict[str, Any] | None = None  # the portfolio's latest snapshot, for the cycle line
        self.fills_since_cycle = 0
        self.unpublished: list[Signal] = []  # signals decided, out once their orders are sent
        # Every strategy's bar closes, not only this engine's: an engine of options alone waits out
        # the spot engines' closes too (options_step), and its batches are due at them.
        self.closes = CloseWatch.of_strategies(cfg.strategies, runtime.stats)  # marketdata's clock

    # --- bars --------------------------------------------------------------------------
    def bars(self, symbol: str, timeframe: str, limit: int | None = None) -> OHLCV:
        """The last ``limit`` bars (all when None). A tail is kept until the series' next bar and
        handed out read-only; the whole history is copied for each caller (a user function may
        write to what it is given)."""
        if limit is None:
            store = self.stores.get((symbol, timeframe))
            return store.history(symbol, timeframe) if store is not None else OHLCV.empty()
        key = (symbol, timeframe, limit)
        tail = self.tails.get(key)
        if tail is None:
            store = self.stores.get((symbol, timeframe))
            tail = store.history(symbol, timeframe, limit) if store is not None else OHLCV.empty()
            for column in (tail.ts, tail.open, tail.high, tail.low, tail.close, tail.volume):
                column.flags.writeable = False
            self.tails[key] = tail
        return tail

    def stored(self, key: tuple[str, str], bars: OHLCV) -> None:
        """The series ``key`` from now on: ``bars`` (a fetched history, checked); its kept tails go."""
        store = self.stores[key] = BarStore(capacity=HISTORY_BARS)
        store.append(*key, bars)
        self.drop_tails(key)
        self.close_waiting = None  # counted afresh at the next bar

    def drop_tails(self, key: tuple[str, str]) -> None:
        """Forget the tails kept of the series ``key``: it has changed."""
        self.tails = {k: v for k, v in self.tails.items() if k[:2] != key}

    def warm_up(self) -> None:
        if time.monotonic() < self.warmup_retry_at:
            return  # marketdata did not answer a moment ago: don't stall the loop asking again
        for key in sorted(self.needs_warmup):
            symbol, timeframe = key
            try:
                reply = self.marketdata.request("history", {"symbol": symbol, "timeframe": timeframe,
                                                            "limit": HISTORY_BARS})
            except (RequestFailed, RemoteError, ValueError) as exc:
                self.rt.log.warning("warmup_failed", symbol=symbol, timeframe=timeframe, error=str(exc))
                self.warmup_retry_at = time.monotonic() + WARMUP_BACKOFF_SECONDS
                return
            self.stored(key, OHLCV.from_rows(reply["rows"]).validate(f"{symbol} {timeframe} history"))
            self.spot_signals.invalidate(symbol, timeframe)  # a new history: rebuilt from it when next due
            self.needs_warmup.discard(key)
            self.rt.log.info("warmed_up", symbol=symbol, timeframe=timeframe, bars=len(reply["rows"]))

    def on_bar(self, body: Any) -> None:
        """A bar from marketdata: kept (``keep_bar``), and the close decided if it was the last
        of its close's bars (``close_complete``)."""
        bar = self.keep_bar(body)
        if bar is not None and self.close_complete((bar.symbol, bar.timeframe), bar.ts_close):
            self.market_ts = max(self.market_ts, bar.ts_close)
            self.run_due()

    def keep_bar(self, body: Any) -> Bar | None:
        """A bar into its series and the incremental cache, deciding nothing; the bar, or None
        when it is not kept: bad (counted, logged), not traded here or still warming up, a
        duplicate, or after a gap (the series is refetched rather than traded across a hole)."""
        try:
            bar = Bar.from_dict(body)
        except (RecordError, ValueError) as exc:
            self.rt.stats.count_drop("bad_bar")
            self.rt.log.warning("bad_bar_dropped", error=str(exc))
            return None
        key = (bar.symbol, bar.timeframe)
        if key not in self.stores:
            return None
        store = self.stores[key]
        last = store.last_ts(*key)
        if last is not None and bar.ts_open <= last:
            return None
        if last is not None and bar.ts_open != last + timeframe_ms(bar.timeframe):
            self.rt.log.warning("bar_gap", symbol=bar.symbol, timeframe=bar.timeframe, last=last, got=bar.ts_open)
            self.needs_warmup.add(key)
            return None
        store.append_bar(bar)
        self.drop_tails(key)
        self.spot_signals.push(bar.symbol, bar.timeframe, bar.ts_open, bar.high, bar.low, bar.close,
                               bar.volume)  # decided on at the close: a lookup
        return bar

    def close_complete(self, key: tuple[str, str], ts_close: int) -> bool:
        """True once every series kept here whose bar closes at ``ts_close`` has that bar (the one
        of ``key`` just came): the close is decided at its last bar, not at the clock message
        marketdata sends after the close's ticks (which can come a wake-up later). A series left
        behind (refetching after a gap) holds the close back until the clock; one not kept yet
        (warming up) does not. The series are listed once per close, then ticked off per bar."""
        if self.close_waiting is None or self.close_waiting[0] != ts_close:
            self.close_waiting = (ts_close, {
                (symbol, timeframe) for (symbol, timeframe), store in self.stores.items()
                if ts_close % (period := timeframe_ms(timeframe)) == 0
                and store.last_ts(symbol, timeframe) != ts_close - period})
        self.close_waiting[1].discard(key)
        return not self.close_waiting[1]

    def on_published(self, env: Envelope) -> None:
        """The pricer's latest chain or IV, kept as sent (decoded when a batch uses it)."""
        body = env.body
        if not isinstance(body, dict) or not isinstance(body.get("ts"), int) or isinstance(body.get("ts"), bool):
            self.rt.stats.count_drop(f"bad_{env.type}")
            return
        key = (body.get("underlying"), body.get("venue")) if env.type == "chain" else body.get("underlying")
        if key not in self.published or body["ts"] >= self.published[key][0]:
            self.published[key] = (body["ts"], body)

    def on_message(self, topic: str, env: Envelope) -> None:
        if env.type in ("chain", "iv"):
            self.on_published(env)
        elif env.type == "bar":
            self.on_bar(env.body)
        elif env.type == "fill":
            self.fills_since_cycle += 1
        elif env.type == "totals" and isinstance(env.body, dict) and isinstance(env.body.get("totals"), dict):
            self.portfolio_totals = env.body["totals"]
        elif env.type == "clock" and isinstance(env.body, dict) and isinstance(env.body.get("ts"), int):
            self.market_ts = max(self.market_ts, env.body["ts"])
            self.run_due()  # what a close's last bar did not decide (close_complete), or a tick's schedule
            self.closes.follow(env.body)

    def near_close(self, ahead_ms: float = 0.0) -> bool:
        """True within a bar close's burst: the heartbeat and heap trims wait (ServiceRuntime)."""
        return self.closes.holds(wall_ms(), ahead_ms)

    # --- cycle -----------------------------------------------------------------------------
    def run_due(self) -> None:
        if not self.market_ts:
            return
        if self.needs_warmup:
            self.warm_up()
        due = self.schedule.due(self.market_ts)
        if due:
            self.run_cycle(due)
        self.collect_scripts()
        self.flush_outbox()
        self.publish_signals()

    def publish_signals(self) -> None:
        """The signals decided since the last call, in the order they were decided."""
        pending, self.unpublished = self.unpublished, []
        for signal in pending:
            self.rt.publisher.publish(f"signal.{signal.strategy_id}", "signal", signal.to_dict())

    def run_spot(self, sc: Any) -> SpotDecision | None:
        """Decide and queue its order (``queue_order``); the caller queues its signal
        (``queue_signal``) and notes it for /status (``note_spot``). None: it failed (``fail``)."""
        try:
            decision = evaluate_spot(sc.id, sc.strategy, sc.symbol, sc.timeframe, dict(sc.params),
                                     self.bars, self.market_ts, sc.pair, self.spot_signals)
        except Exception as exc:  # one broken strategy is logged and skipped, never the engine
            self.fail(sc.id, str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")
            return None
        return self.queue_order(sc, decision)

    def holds(self, sc: Any) -> bool:
        """True when ``sc`` certainly holds on the newest bar: a built-in strategy on one series
        whose state already stands at that bar (fed as it arrived) with no signal. Its decision
        can wait until the close's orders are answered; anything else is decided before."""
        if sc.pair is not None:
            return False
        newest = self.bars(sc.symbol, sc.timeframe, 1)
        return bool(len(newest)) and self.spot_signals.holds(sc.strategy, sc.symbol, sc.timeframe, sc.params,
                                                              int(newest.ts[-1]), float(newest.close[-1]))

    def take_spot(self, sc: Any, decision: SpotDecision) -> SpotDecision:
        """Queue a spot decision (its order and its signal) and note it for /status."""
        self.note_spot(sc, self.queue_signal(self.queue_order(sc, decision)))
        return decision

    def queue_order(self, sc: Any, decision: SpotDecision) -> SpotDecision:
        """A spot decision's order into the outbox (sent with the cycle's other orders, in one
        request), once per strategy and bar."""
        order = decision.order
        if order is not None and decision.signal is not None \
                and decision.signal.ts_bar > self.last_ordered_bar.get(sc.id, -1):
            self.last_ordered_bar[sc.id] = decision.signal.ts_bar
            self.outbox[order.order_id] = order
        return decision

    def queue_signal(self, decision: SpotDecision) -> SpotDecision:
        """A spot decision's signal in line for ``publish_signals``."""
        if decision.signal is not None:
            self.unpublished.append(decision.signal)
        return decision

    def note_spot(self, sc: Any, decision: SpotDecision) -> None:
        """A spot decision as the strategy's last, for the heartbeat and /status."""
        summary = spot_summary(decision)
        if decision.signal is None:
            self.note(sc.id, f"skipped: {decision.skipped}", summary)
        else:
            self.note(sc.id, "ok", summary, signal=decision.signal.signal)

    def run_cycle(self, due: list[str]) -> list[SpotDecision]:
        """Spot in two passes around its orders: every strategy that may trade is decided and its
        order sent at once (latency); the strategies that certainly hold (``holds``) are decided
        once the orders are answered. Then the signals, in the order of ``due``, and the
        cycle's line; options queued, one per loop turn."""
        started = time.perf_counter()
        by_id = {sc.id: sc for sc in self.spot}
        for sid in due:
            if sid in by_id and by_id[sid].script is not None:
                self.start_script(by_id[sid])
        spot = [by_id[sid] for sid in due if sid in by_id and by_id[sid].script is None]
        first = {sc.id: self.run_spot(sc) for sc in spot if not self.holds(sc)}
        self.queue_options([sid for sid in due if sid not in by_id])  # stepped between messages
        deciding = time.perf_counter() - started
        queued = len(self.outbox)
        try:
            self.send_outbox()
        finally:  # the rest, then the notes, then the answers (a refusal after the decision it refuses)
            rest_started = time.perf_counter()
            decided = [(sc, first[sc.id] if sc.id in first else self.run_spot(sc)) for sc in spot]
            for sc, decision in decided:
                if decision is not None:
                    self.note_spot(sc, self.queue_signal(decision))
            deciding += time.perf_counter() - rest_started
            self.settle_answers()
        duration_ms = round(deciding * 1000, 3)  # both passes, not the orders' round trip: as the gateway shows it
        decisions = [d for _, d in decided if d is not None]
        self.publish_signals()
        sent_ms = round((time.perf_counter() - started) * 1000, 3)  # and the orders answered
        self.cycle_count += 1
        signals = [d.signal.signal for d in decisions if d.signal is not None]
        self.rt.publisher.publish("cycle", "cycle", {"cycle": self.cycle_count, "market_ts": self.market_ts,
                                                      "ran": len(due), "orders": queued,
                                                      "duration_ms": duration_ms})
        self.rt.log.info("cycle", cycle=self.cycle_count, market_ts=self.market_ts, ran=len(due),
                         buys=signals.count(1), sells=signals.count(-1), skipped=len(decisions) - len(signals),
                         outbox=queued, duration_ms=duration_ms, with_orders_ms=sent_ms,
                         **cycle_log_fields(self.portfolio_totals, self.fills_since_cycle))
        self.fills_since_cycle = 0
        return decisions

    # --- options ---------------------------------------------------------------------------
    def latest(self, key: Any) -> Any | None:
        """The pricer's last published chain or IV for ``key`` if it is recent in market time."""
        got = self.published.get(key)
        if got is None or got[0] < self.market_ts - self.published_max_age_ms:
            return None
        return got[1]

    def _options_market(self, needs: set[tuple[str, str]]) -> tuple[OptionsMarket, str | None]:
        """Chains per (underlying, venue) and IV per underlying: the pricer's latest published
        ones, asked for only when none is recent (a pricer just started), or why there are none."""
        chains, iv = {}, {}
        none = OptionsMarket({}, {})
        try:
            for underlying, venue in sorted(needs):
                reply = self.latest((underlying, venue)) or self.ask_pricer("chain", {
                    "underlying": underlying, "venue": venue, "horizon_days": OPTIONS_HORIZON_DAYS})
                chains[(underlying, venue)] = chain_from_dict(reply)
                if underlying not in iv:
                    iv[underlying] = self.latest(underlying) or self.ask_pricer("iv", {
                        "underlying": underlying, "days": self.cfg.options.iv_rank_days})
            return OptionsMarket.from_replies(chains, iv), None
        except RequestFailed as exc:
            if time.monotonic() >= self.pricer_retry_at:  # it failed just now, not while we waited
                self.pricer_retry_at = time.monotonic() + PRICER_BACKOFF_SECONDS
            return none, f"pricer unavailable: {exc}"
        except RemoteError as exc:
            return none, f"pricer refused: {exc.code}: {exc.message}"
        except ChainReplyError as exc:
            return none, f"pricer sent a bad chain: {exc}"
        except RecordError as exc:
            return none, f"pricer sent a bad reply: {exc}"

    def ask_pricer(self, kind: str, body: dict[str, Any]) -> Any:
        if time.monotonic() < self.pricer_retry_at:
            raise RequestFailed("waiting before asking again")
        return self.pricer.request(kind, body)

    def read_books(self, sids: list[str]) -> None:
        """Every pending options strategy's book in one request (``positions_batch``)."""
        self.options_books, self.options_books_problem, self.acked_in_batch = {}, None, set()
        try:
            self.options_books = self.portfolio.request("positions_batch", {"strategy_ids": sids})["books"]
        except (RequestFailed, RemoteError, KeyError, TypeError) as exc:
            self.options_books_problem = f"portfolio unavailable: {exc}"

    def decide_pending_options(self) -> list[OptionsDecision]:
        """Every queued options strategy now (``make once``); the service steps through them."""
        decisions: list[OptionsDecision] = []
        while self.options_pending:
            decision = self.options_step_one()
            if decision is not None:
                decisions.append(decision)
        return decisions

    def queue_options(self, due: list[str]) -> None:
        for sid in due:
            if sid not in self.options_pending:
                self.options_pending.append(sid)

    def options_step(self) -> bool:
        """One options strategy per loop turn, so bars never wait behind all twenty. An engine
        of options alone waits out each close's burst (``near_close``): on two cores its batch
        beside the spot engine's decisions and orders made every spot fill ~9 ms later. It
        goes on at the first loop turn after the burst (a message, or ``run_due``'s timer)."""
        if not self.options_pending or (not self.spot and self.near_close()):
            return False
        self.options_step_one()
        self.flush_outbox()
        return bool(self.options_pending)

    def options_step_one(self) -> OptionsDecision | None:
        if self.options_market is None:  # a new batch: one chain per (underlying, venue), asked once
            by_id = {sc.id: sc for sc in self.options}
            needs = {(by_id[sid].underlying, by_id[sid].venue) for sid in self.options_pending}
            self.options_market, self.options_unavailable = self._options_market(needs)
            if self.options_unavailable is not None:
                self.rt.log.warning("options_skipped", reason=self.options_unavailable,
                                    strategies=len(self.options_pending))
            else:
                self.read_books(list(self.options_pending))
        sc = next(o for o in self.options if o.id == self.options_pending[0])
        del self.options_pending[0]
        decision = self.decide_option_strategy(sc, self.options_market, self.options_unavailable)
        if not self.options_pending:
            self.options_market, self.options_unavailable = None, None
        return decision

    def decide_option_strategy(self, sc: Any, market: OptionsMarket,
                               unavailable: str | None) -> OptionsDecision | None:
        if unavailable is not None:
            decision = OptionsDecision(sc.id, skipped=unavailable)
        elif any(o.strategy_id == sc.id for o in self.outbox.values()):
            decision = OptionsDecision(sc.id, skipped="orders still waiting for the portfolio")
        else:
            try:
                decision = self.evaluate_option_strategy(sc, market)
            except Exception as exc:  # one broken strategy is logged and skipped, never the engine
                self.fail(sc.id, f"{type(exc).__name__}: {exc}")
                return None
        summary = decision.summary()
        if decision.skipped is not None:
            self.note(sc.id, f"skipped: {decision.skipped}", summary)
            return decision
        for why in decision.refused:
            self.rt.log.info("option_trade_refused", strategy=sc.id, reason=why)
        self.rt.publisher.publish(f"signal.{sc.id}", "options_signal", {
            "strategy_id": sc.id, "strategy": sc.strategy, "venue": sc.venue, "underlying": sc.underlying,
            "ts_event": self.market_ts, "actions": decision.actions, "refused": decision.refused,
            "reasons": decision.reasons, **summary})
        self.note(sc.id, "ok", summary, actions=len(decision.actions))
        for order in decision.orders:
            self.outbox[order.order_id] = order
        return decision

    def note(self, sid: str, status: str, summary: dict[str, str], **extra: Any) -> None:
        """A strategy's last decision (what, when in market time, why) for the heartbeat and /status."""
        failed = {"failures": self.failures[sid]} if sid in self.failures else {}
        self.strategy_status[sid] = {"status": status, "ts": self.market_ts, **summary, **failed, **extra}

    def fail(self, sid: str, cause: str) -> None:
        """Count a failed run and show it in /status; log it once per strategy and cause (numbers
        aside: "failed on 512 bars" and "on 513 bars" are one cause), not on every cycle."""
        self.failures[sid] = self.failures.get(sid, 0) + 1
        key = (sid, re.sub(r"\d+(\.\d+)?", "#", cause))
        if key not in self.failure_causes:
            self.failure_causes.add(key)
            self.rt.log.error("strategy_failed", strategy=sid, error=cause, failures=self.failures[sid])
        self.note(sid, f"error: {cause}", {"decision": "error", "reason": cause})

    # --- user scripts ----------------------------------------------------------------------
    def start_script(self, sc: Any) -> None:
        """Start a due script off the loop; its answer is taken by ``collect_scripts``."""
        newest = self.bars(sc.symbol, sc.timeframe, 1)
        if not self.scripts.submit(sc.id, sc.script, sc.args, sc.symbol, (sc, newest)):
            self.rt.log.info("script_still_running", strategy=sc.id)

    def collect_scripts(self) -> None:
        for sid, (sc, newest), answer in self.scripts.finished():
            if isinstance(answer, ScriptError):
                self.fail(sid, str(answer))
            else:
                self.take_spot(sc, script_decision(sid, sc.strategy, sc.symbol, sc.timeframe, answer, newest,
                                                   self.market_ts))

    def book_of(self, sid: str) -> Any:
        """The batch's book of ``sid``; asked again alone if an order of it was answered since."""
        if sid in self.options_books and sid not in self.acked_in_batch:
            return self.options_books[sid]
        if self.options_books_problem is not None and sid not in self.acked_in_batch:
            raise RequestFailed(self.options_books_problem)
        return self.portfolio.request("positions", {"strategy_id": sid})

    def evaluate_option_strategy(self, sc: Any, market: OptionsMarket) -> OptionsDecision:
        """One strategy on the batch's market and its book (a RecordError names a bad field of
        the portfolio's reply)."""
        try:
            book = BookView.from_dict(self.book_of(sc.id), f"positions reply ({sc.id})")
        except (RequestFailed, RemoteError) as exc:
            return OptionsDecision(sc.id, skipped=f"portfolio unavailable: {exc}")
        return evaluate_options(self.options_strategy_of(sc), market, book,
                                self.bars(sc.symbol, sc.timeframe, HISTORY_BARS),
                                self.market_ts)  # every bar kept, read-only: one copy for the batch

    def options_strategy_of(self, sc: Any) -> OptionsStrategy:
        """What ``evaluate_options`` runs for ``sc``: its config, built at its first decision
        (a bad one fails that strategy, not the engine) and kept, as the config is."""
        strategy = self.options_strategies.get(sc.id)
        if strategy is None:
            venue = self.cfg.venue_options(sc.venue)
            strategy = self.options_strategies[sc.id] = options_strategy(
                sc.id, sc.strategy, sc.venue, sc.underlying, sc.timeframe, sc.params,
                min_score=venue.min_score, max_positions=venue.max_positions,
                limits=OptionsRiskLimits(max_drawdown_pct=sc.max_drawdown_pct), theta_harvest=sc.theta_harvest)
        return strategy

    def flush_outbox(self) -> list[dict[str, Any]]:
        """``send_outbox``, then ``settle_answers``."""
        try:
            return self.send_outbox()
        finally:
            self.settle_answers()

    def send_outbox(self) -> list[dict[str, Any]]:
        """Send the queued orders in one ``orders`` request (the portfolio journals their fills
        with one fsync: group commit), oldest first, up to MAX_ORDERS_PER_REQUEST at a time.
        Orders answered for good leave the outbox; unanswered ones, and ones answered ``retry``,
        stay in line and are resent after a backoff. Returns the final answers."""
        acks: list[dict[str, Any]] = []
        while self.outbox and time.monotonic() >= self.portfolio_retry_at:
            batch = list(self.outbox.items())[:MAX_ORDERS_PER_REQUEST]
            items = [{"type": "option_order" if isinstance(order, OptionOrder) else "order", "order": order.to_dict()}
                     for _, order in batch]
            try:
                sent_ms = wall_ms()
                reply = self.portfolio.request("orders", {"orders": items})
                acked_ms = wall_ms()
                answers = reply["acks"] if isinstance(reply, dict) else None
                if not isinstance(answers, list) or len(answers) != len(batch) \
                        or not all(isinstance(a, dict) for a in answers):
                    raise RemoteError("bad_reply", f"expected {len(batch)} acks, got {str(reply)[:200]}")
            except RequestFailed as exc:
                self.hold_outbox(batch[0][0], f"unanswered: {exc}", PORTFOLIO_BACKOFF_SECONDS)
                return acks
            except RemoteError as exc:  # the request as a whole: no order was decided, all stay
                transient = exc.code in TRANSIENT_ERRORS
                self.hold_outbox(batch[0][0], f"{exc.code}: {exc.message}",
                                 ORDER_RETRY_SECONDS if transient else PORTFOLIO_BACKOFF_SECONDS)
                return acks
            retry = [(order_id, ack) for (order_id, _), ack in zip(batch, answers) if ack.get("status") == ORDER_RETRY]
            for (order_id, order), ack in zip(batch, answers):
                if ack.get("status") != ORDER_RETRY:
                    del self.outbox[order_id]
                    acks.append(ack)
                    self.note_ack(order, ack)
                    self.answered.append((order, ack, sent_ms, acked_ms))
            if retry:
                self.hold_outbox(retry[0][0], f"retry: {retry[0][1].get('reason')}", ORDER_RETRY_SECONDS)
                return acks
            self.portfolio_failures = 0
        return acks

    def settle_answers(self) -> None:
        """The final answers since the last call: a refusal becomes its strategy's last decision
        in /status (after the decision itself), and each is published on ``ack.<strategy_id>``
        with the wall times its request went out and the answer came in, for a tap that times
        or audits the orders (the engine's own clock)."""
        answered, self.answered = self.answered, []
        for order, ack, sent_ms, acked_ms in answered:
            if ack.get("status") == "rejected":  # the strategy decided, the portfolio said no: /status says why
                self.note(order.strategy_id, "ok", {"decision": "refused by portfolio",
                                                    "reason": f"{order.order_id}: {ack.get('reason')}"})
            self.rt.publisher.publish(f"ack.{order.strategy_id}", "ack", {
                "order_id": order.order_id, "strategy_id": order.strategy_id, "status": str(ack.get("status")),
                "reason": str(ack.get("reason") or ""), "sent_ms": sent_ms, "acked_ms": acked_ms})

    def resend_when_due(self) -> float:
        """Send what waits in the outbox once its backoff is over (a 'retry' waits ms, not until
        the next clock message); the seconds until it is due again (a self-timed wake)."""
        if self.outbox and time.monotonic() >= self.portfolio_retry_at:
            self.flush_outbox()
        return max(0.0, self.portfolio_retry_at - time.monotonic()) if self.outbox else RESEND_CHECK_SECONDS

    def note_ack(self, order: SpotOrder | OptionOrder, ack: dict[str, Any]) -> None:
        """Log a final answer and count it (a refusal shows in /status: ``settle_answers``)."""
        if ack.get("status") == ORDER_ERROR:
            self.rt.log.error("order_refused", order_id=order.order_id, code=ack.get("code"), error=ack.get("reason"))
            return
        self.orders_acked += 1
        self.acked_in_batch.add(order.strategy_id)
        self.rt.log.info("order_acked", order_id=order.order_id, status=ack.get("status"), reason=ack.get("reason"))

    def hold_outbox(self, order_id: str, why: str, first_wait: float) -> None:
        """Keep the order first in line; wait ``first_wait``, doubled after each failure in a row."""
        self.portfolio_failures += 1
        wait = backoff_seconds(self.portfolio_failures, base=first_wait, cap=PORTFOLIO_BACKOFF_CAP_SECONDS)
        self.portfolio_retry_at = time.monotonic() + wait
        self.resend_within(wait)
        self.rt.log.warning("order_pending", order_id=order_id, error=why, outbox=len(self.outbox),
                            retry_in_s=wait)

    def status(self) -> dict[str, Any]:
        return {"engine": self.engine or "all", "cycle_count": self.cycle_count, "market_ts": self.market_ts,
                "outbox": len(self.outbox), "orders_acked": self.orders_acked, "strategies": self.strategy_status}


def engine_name(cfg: Config, argv: list[str] | None) -> str:
    """``--engine NAME``; without it, the config's only engine. SystemExit names the choices."""
    parser = argparse.ArgumentParser(prog="python -m services.signals")
    parser.add_argument("--engine", help="which engine of the config's `engines` to run")
    args, _unknown = parser.parse_known_args(argv)
    names = [e.name for e in cfg.engines]
    if args.engine is None and len(names) == 1:
        return names[0]
    if args.engine is None:
        parser.error(f"--engine NAME is needed: the config has {len(names)} engines ({', '.join(names)})")
    try:
        return cfg.engine(args.engine).name
    except ValueError as exc:
        parser.error(f"--engine: {exc}")
    raise AssertionError("unreachable")


def in_background(cfg: Config, name: str) -> bool:
    """An engine without spot strategies is off the spot fill path: it runs as ``cpu`` says."""
    return not any(s.is_spot for s in cfg.engine_strategies(name))


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(config_path(argv))
    spec = cfg.engine(engine_name(cfg, argv))
    off_path = in_background(cfg, spec.name)
    rt = ServiceRuntime(spec.service, bus_security(cfg, "signals"),  # every engine holds the signals key
                        background=cfg.cpu if off_path else None, cores=service_cores(cfg.cpu, fill_path=not off_path))
    engine = SignalEngine(cfg, rt, spec.name)
    rt.bind_publisher(spec.pub)
    rt.bind_replier(spec.rep, {"status": lambda _b: engine.status()})
    rt.subscribe([cfg.endpoints["marketdata"].pub], ["bar.", "clock"], engine.on_message)
    rt.subscribe([cfg.endpoints["portfolio"].pub], ["portfolio.totals", "fill."], engine.on_message)  # cycle line
    if engine.options:
        rt.subscribe([cfg.endpoints["pricer"].pub], ["chain.", "iv."], engine.on_message)
    rt.heartbeat_status(engine.status)
    rt.hold_housekeeping(engine.near_close)
    rt.every(0.05, engine.run_due)
    engine.resend_within = rt.wake(engine.resend_when_due)
    rt.step_between_messages(engine.options_step)
    rt.run(on_stop=engine.scripts.close)
    return 0


if __name__ == "__main__":
    sys.exit(main())
