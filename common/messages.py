"""Every message published on the bus: its topic, envelope type, publisher and body fields, with units.

The one declaration of the bus's public surface: docs/BUS.md is generated from it
(``python -m common.messages --docs``), a test checks that every ``publish(`` call in services/
names a type declared here, and another taps a live stack and checks every message it sees
against it (``message_problems``). A subscriber needs only this page, ZeroMQ and msgpack.

Conventions: times are integer ms since the epoch, UTC; "market time" is the clock the feed
publishes (it runs faster than the wall in ``sim`` and ``replay``), "wall time" is the
sender's clock. Money is USD (the quote currency, USDT by default) unless a field says
otherwise. Pure: no sockets, files or clock reads, except in ``main``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

HEARTBEAT_SECONDS = 1.0  # every service beats this often
HEARTBEAT_LOST_MS = 3_000  # two missed beats and a margin: the service is lost

DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "BUS.md"


@dataclass(frozen=True, slots=True)
class Field:
    """One body key. ``kind`` is int, float, str, bool, list, map or record; for a ``record``
    ``fields`` are its keys, for a ``map`` the keys of each value, for a ``list`` the keys of
    each item (none: values are free-form or scalars). ``optional`` keys may be absent."""

    name: str
    kind: str
    unit: str
    meaning: str
    fields: tuple["Field", ...] = ()
    optional: bool = False


@dataclass(frozen=True, slots=True)
class MessageType:
    """One envelope ``type`` as one publisher sends it, on topics that start with ``topic``'s
    part before the first ``<``."""

    type: str
    publisher: str
    topic: str
    meaning: str
    fields: tuple[Field, ...]

    @property
    def topic_prefix(self) -> str:
        return self.topic.split("<", 1)[0]


ENVELOPE = (
    Field("v", "int", "", "protocol version (1); drop any other"),
    Field("type", "str", "", "what the body is: one of the types below"),
    Field("id", "str", "", "unique message id"),
    Field("ts", "int", "ms, wall time", "when the publisher sent it"),
    Field("source", "str", "", "the publishing service"),
    Field("seq", "int", "", "the publisher's sequence number on this topic, from 1: a gap means you missed messages"),
    Field("body", "map", "", "the payload, as declared per type below"),
)

GREEKS = "per coin: delta, gamma, theta (USD per day), vega (USD per vol point)"

FILL_FIELDS = (
    Field("seq", "int", "", "position in the portfolio's journal, from 1, gap-free"),
    Field("order_id", "str", "", "the order it filled: `<strategy_id>:<ts>` (options: `...:<leg or group>`)"),
    Field("strategy_id", "str", "", "the strategy's id in the config"),
    Field("kind", "str", "", "`spot`, `option`, `settlement` (an option expired) or `liquidation` (kill switch)"),
    Field("instrument", "str", "", "`BTC/USDT` or an option name such as `BTC-25DEC26-78000-C`"),
    Field("side", "str", "", "`buy` or `sell`"),
    Field("quantity", "float", "coins or contracts", "how much, > 0"),
    Field("price", "float", "USD per coin", "the fill price (an option's premium per coin)"),
    Field("fee", "float", "USD", "fee paid, >= 0"),
    Field("cash_delta", "float", "USD", "signed change of the strategy's cash, fee included"),
    Field("realized_pnl", "float", "USD", "profit of a closing fill; 0 on an opening one"),
    Field("ts_event", "int", "ms, market time", "when it filled"),
    Field("extra", "map", "", "option fills: action, contract, venue, multiplier, premium_usd_per_contract, "
                              f"greeks ({GREEKS}), score, score_parts, reason, spot; settlement fills: action "
                              "`settle`, contract, venue, multiplier, settle_spot and settle_spot_ts (the "
                              "underlying's tick nearest the expiry: USD, ms of market time), intrinsic, "
                              "in_the_money, assigned_coins; spot fills made by options: action `assignment` (option, "
                              "settle_spot) or `spot_leg` (reason, a buy-write's coins); empty for other spot fills"),
)

OPTION_ACTION_FIELDS = (
    Field("action", "str", "", "`open` or `close`"),
    Field("contract", "str", "", "the option's name, e.g. `BTC-25DEC26-78000-P` (Deribit) or `MBT-...` (CME micro)"),
    Field("venue", "str", "", "`deribit` or `ibkr`"),
    Field("side", "int", "", "+1 buy, -1 sell"),
    Field("quantity", "float", "contracts", "how many contracts"),
    Field("multiplier", "float", "coins per contract", "1 on Deribit, 0.1 for CME micro options"),
    Field("strike", "float", "USD", "strike price"),
    Field("expiry_ts", "int", "ms, UTC", "expiry instant"),
    Field("premium_usd", "float", "USD per coin", "the chain's mark"),
    Field("premium_usd_per_contract", "float", "USD", "premium of one contract (premium_usd x multiplier)"),
    Field("greeks", "map", "", GREEKS),
    Field("score", "float", "0..1", "portfolio-aware score; trades run at or above the venue's min_score"),
    Field("score_parts", "map", "0..1", "the score's parts by name (strike distance, expiry spread, ...)"),
    Field("reason", "str", "", "why the strategy wants it"),
    Field("group", "str", "", "ties the legs of one structure (a strangle); empty for a single leg"),
    Field("spot_coins", "float", "coins", "coins bought with it in the same order (a buy-write or married put), "
                                          "0 for none"),
)

TOTALS_FIELDS = (
    Field("initial", "float", "USD", "sum of initial capital"),
    Field("value", "float", "USD", "sum of portfolio values"),
    Field("strategies", "int", "", "how many strategies"),
    Field("pnl", "float", "USD", "value - initial"),
    Field("pnl_pct", "float", "%", "pnl / initial"),
)

BOOK_RISK_FIELDS = (
    Field("peak_value", "float", "USD", "the drawdown's reference at the last mark"),
    Field("kill_switch", "bool", "", "tripped by the drawdown limit"),
    Field("kill_reason", "str", "", "why it tripped; empty when armed"),
    Field("consecutive_losses", "int", "", "losing closes in a row"),
    Field("circuit_breaker_until", "int", "ms, market time", "end of the pause after a loss streak; 0 = none"),
    Field("day", "int", "days since the epoch", "the market day of the daily loss limit"),
    Field("day_start_value", "float", "USD", "the value at that day's first mark"),
    Field("daily_loss_tripped", "bool", "", "the daily loss limit stopped entries"),
    Field("last_value", "float", "USD", "the value at the last mark"),
    Field("resets", "int", "", "times an operator re-armed the strategy"),
    Field("last_reset_ts", "int", "ms, market time", "the last reset; 0 = never"),
)

BOOK_RECORD_FIELDS = (
    Field("strategy_id", "str", "", "the strategy's id"),
    Field("kind", "str", "", "`spot` or `options`"),
    Field("category", "str", "", "`spot`, `deribit` or `ibkr`"),
    Field("initial_capital", "float", "USD", "the configured capital"),
    Field("cash", "float", "USD", "cash"),
    Field("positions", "map", "", "spot positions by symbol", (
        Field("symbol", "str", "", "the symbol"),
        Field("quantity", "float", "coins", "coins held"),
        Field("avg_price", "float", "USD per coin", "average entry price, fees included"),
        Field("opened_ts", "int", "ms, market time", "when the position was opened"),
    )),
    Field("option_positions", "map", "", "option positions by contract name, with their last marks "
                                         "(`current_value_usd`), as OptionPosition.to_dict writes them"),
    Field("trade_count", "int", "", "fills booked"),
    Field("recent_trades", "list", "", "the last 10 fills, oldest first", FILL_FIELDS),
    Field("risk", "record", "", "the risk limits' state (state.json's form)", BOOK_RISK_FIELDS),
    Field("recent_order_ids", "map", "", "always empty here (the portfolio's duplicate memory stays home)"),
    Field("last_ts", "int", "ms, market time", "the book's last fill"),
)

BOOK_STATE_FIELDS = (
    Field("stream", "str", "", "one numbering per portfolio start: a new one means resnapshot"),
    Field("seq", "int", "", "the delta's number (a snapshot: the last delta it already holds)"),
    Field("market_ts", "int", "ms, market time", "the portfolio's clock"),
    Field("journal_seq", "int", "", "the journal's last seq"),
    Field("prices", "map", "USD per coin", "the portfolio's marks by symbol: value every book at these"),
)

HEARTBEAT_FIELDS = (
    Field("service", "str", "", "the service's name"),
    Field("pid", "int", "", "its process id"),
    Field("started_ms", "int", "ms, wall time", "when it started"),
    Field("uptime_s", "float", "s", "seconds since it started"),
    Field("bus", "record", "", "its bus counters", (
        Field("sent", "int", "", "messages published"),
        Field("received", "int", "", "messages received"),
        Field("dropped", "map", "", "dropped messages by reason"),
        Field("dropped_total", "int", "", "sum of dropped"),
        Field("missed", "map", "", "sequence gaps seen, by publisher and topic"),
    )),
    Field("errors", "int", "", "errors caught in its loop"),
    Field("problems", "list", "", "why it cannot do its job right now (`name: reason`); /healthz is 503 while any"),
)

ENGINES = "signals"  # the signal engines publish as signals-<engine> (services/signals.py --engine NAME)

HEARTBEAT_EXTRAS = {
    "marketdata": (
        Field("mode", "str", "", "the feed: `sim`, `replay` or `live`"),
        Field("market_ts", "int", "ms, market time", "the feed's clock"),
        Field("speed", "float", "market s per wall s", "the feed's speed"),
        Field("finished", "bool", "", "a replay reached the end of its files"),
        Field("bars_published", "int", "", "bars published since start"),
        Field("clock_slips", "int", "", "stalls of a sim or replay feed after which the clock was moved on, "
              "since start (each logged `market_clock_slipped`)"),
        Field("market_ms_slipped", "int", "ms, market time", "the market time those stalls gave up, in all"),
        Field("stale", "bool", "", "the live feed has a problem"),
        Field("stale_reasons", "list", "", "what the problem is, up to 10"),
    ),
    "signals": (
        Field("engine", "str", "", "the engine's name in the config's `engines`"),
        Field("cycle_count", "int", "", "cycles run since start"),
        Field("market_ts", "int", "ms, market time", "the engine's clock"),
        Field("outbox", "int", "", "orders sent and not yet answered"),
        Field("orders_acked", "int", "", "orders the portfolio answered"),
        Field("strategies", "map", "", "each strategy's last run by id", (
            Field("status", "str", "", "`ok`, `skipped: why` or `error: what`"),
            Field("ts", "int", "ms, market time", "when it ran"),
            Field("signal", "int", "", "spot: its last signal", optional=True),
            Field("actions", "int", "", "options: how many actions it proposed", optional=True),
            Field("decision", "str", "", "what it decided: `trade`, `no trade`, `refused by portfolio`, ...",
                  optional=True),
            Field("reason", "str", "", "why, its kind first (`score below 0.3`, `risk limit: ...`, ...)",
                  optional=True),
            Field("failures", "int", "", "runs that failed since start (a user strategy's error)", optional=True),
        )),
    ),
    "portfolio": (
        Field("market_ts", "int", "ms, market time", "the portfolio's clock"),
        Field("journal_seq", "int", "", "the journal's last seq"),
        Field("strategies", "int", "", "books held"),
        Field("orders", "int", "", "orders received since start"),
        Field("fills", "int", "", "fills made since start"),
        Field("option_marks", "int", "", "option repricing rounds since start"),
        Field("orders_ahead_of_tick", "int", "", "order requests that came before the tick of their bar and "
              "waited for it (at most a few ms) since start"),
    ),
    "pricer": (
        Field("market_ts", "int", "ms, market time", "the pricer's clock"),
        Field("spot", "map", "USD", "last spot price by symbol"),
        Field("chains_served", "int", "", "chains priced (requests answered and chains published)"),
        Field("chains_published", "int", "", "chains published on `chain.<venue>.<underlying>`"),
        Field("marks_served", "int", "", "mark requests answered"),
        Field("source", "str", "", "where marks come from (`sim` surface or `deribit`)"),
    ),
}

MESSAGES: tuple[MessageType, ...] = (
    MessageType("bar", "marketdata", "bar.<symbol>.<timeframe>", "one closed bar, published once after it closes", (
        Field("symbol", "str", "", "e.g. `BTC/USDT`"),
        Field("timeframe", "str", "", "e.g. `1h`, `1d`"),
        Field("ts_open", "int", "ms, market time", "when the bar opened"),
        Field("ts_close", "int", "ms, market time", "when the bar closed (it is published then)"),
        Field("open", "float", "USD per coin", "first price"),
        Field("high", "float", "USD per coin", "highest price"),
        Field("low", "float", "USD per coin", "lowest price"),
        Field("close", "float", "USD per coin", "last price"),
        Field("volume", "float", "coins", "traded volume in the base currency"),
        Field("wall_due_ms", "float", "ms, wall time", "when the close fell due on the wall clock; "
              "`env.ts - wall_due_ms` is how late the bar went out"),
    )),
    MessageType("tick", "marketdata", "tick.<symbol>", "the latest price of a symbol", (
        Field("symbol", "str", "", "e.g. `BTC/USDT`"),
        Field("price", "float", "USD per coin", "last price"),
        Field("ts", "int", "ms, market time", "when it was the price"),
    )),
    MessageType("clock", "marketdata", "clock", "the market clock, every loop turn", (
        Field("ts", "int", "ms, market time", "now, in market time"),
        Field("speed", "float", "market s per wall s", "the feed's speed"),
        Field("finished", "bool", "", "a replay reached the end of its files"),
        Field("market_origin", "int", "ms, market time", "with wall_origin and speed, the clock's mapping: "
              "market t is due at wall_origin + (t - market_origin) / speed"),
        Field("wall_origin", "float", "ms, wall time", "the wall time of market_origin"),
    )),
    MessageType("signal", "signals", "signal.<strategy_id>", "a spot strategy's decision on its latest bar", (
        Field("strategy_id", "str", "", "the strategy's id in the config"),
        Field("strategy", "str", "", "the strategy's name, e.g. `momentum`"),
        Field("symbol", "str", "", "e.g. `BTC/USDT`"),
        Field("timeframe", "str", "", "the bars it decided on"),
        Field("signal", "int", "", "1 buy, -1 sell, 0 hold"),
        Field("price", "float", "USD per coin", "close of the bar it decided on"),
        Field("ts_bar", "int", "ms, market time", "open time of that bar"),
        Field("ts_event", "int", "ms, market time", "when it decided"),
        Field("indicators", "map", "", "indicator values by name, in the strategy's own units"),
    )),
    MessageType("options_signal", "signals", "signal.<strategy_id>",
                "an options strategy's decision: the scored trades it proposes and those it refused", (
                    Field("strategy_id", "str", "", "the strategy's id in the config"),
                    Field("strategy", "str", "", "e.g. `wheel`, `protective_puts`"),
                    Field("venue", "str", "", "`deribit` or `ibkr`"),
                    Field("underlying", "str", "", "`BTC` or `ETH`"),
                    Field("ts_event", "int", "ms, market time", "when it decided"),
                    Field("actions", "list", "", "trades it proposes (each becomes an order leg)",
                          OPTION_ACTION_FIELDS),
                    Field("refused", "list", "", "why proposed trades were dropped (score, risk), one line each"),
                    Field("reasons", "list", "", "every reason a proposal was not taken, one line each"),
                    Field("decision", "str", "", "`trade` or `no trade`"),
                    Field("reason", "str", "", "why, its kind first (`venue minimum: ...`, `position cap`, ...)"),
                )),
    MessageType("ack", "signals", "ack.<strategy_id>",
                "the portfolio's final answer to one order, as the engine received it (a `retry` is not final: "
                "the order is sent again)", (
                    Field("order_id", "str", "", "`<strategy_id>:<bar open>` (spot), or the options order's id"),
                    Field("strategy_id", "str", "", "the strategy's id in the config"),
                    Field("status", "str", "", "`filled`, `noop`, `rejected`, `duplicate` or `error`"),
                    Field("reason", "str", "", "why, when not filled (empty otherwise)"),
                    Field("sent_ms", "float", "ms, wall time", "when the engine sent the request that carried it"),
                    Field("acked_ms", "float", "ms, wall time", "when the engine received the answer: a bar's "
                          "close -> ack latency is this minus the close's wall time (the clock's mapping)"),
                )),
    MessageType("cycle", "signals", "cycle", "one round of the due strategies", (
        Field("cycle", "int", "", "cycle number since start"),
        Field("market_ts", "int", "ms, market time", "when it ran"),
        Field("ran", "int", "", "strategies due in this cycle"),
        Field("orders", "int", "", "orders in the outbox after it"),
        Field("duration_ms", "float", "ms, wall time", "how long the spot strategies took"),
    )),
    MessageType("chain", "pricer", "chain.<venue>.<underlying>",
                "an underlying's option chain at one venue, once per options interval of market time "
                "(the `chain` reply: the options engines read the latest)", (
                    Field("underlying", "str", "", "`BTC` or `ETH`"),
                    Field("venue", "str", "", "`deribit` or `ibkr`"),
                    Field("spot", "float", "USD per coin", "the underlying's price it was priced at"),
                    Field("ts", "int", "ms, market time", "when it was priced"),
                    Field("size", "int", "", "rows (listed contracts)"),
                    Field("columns", "map", "", "one little-endian array per column (`expiry_ts` <i8; `strike`, "
                          "`forward`, `iv`, `mark`, `delta`, `gamma`, `theta`, `vega` <f8; `is_call` bool) as bytes"),
                    Field("source", "str", "", "where marks come from (`sim` surface or `deribit`)"),
                )),
    MessageType("iv", "pricer", "iv.<underlying>", "an underlying's implied vol, published with its chains", (
        Field("underlying", "str", "", "`BTC` or `ETH`"),
        Field("ts", "int", "ms, market time", "when it was read"),
        Field("atm_iv", "float", "fraction a year", "at-the-money implied vol (0.6 = 60 %)"),
        Field("history", "list", "fraction a year", "daily ATM vol, oldest first (the IV rank's window)"),
        Field("iv_rank", "float", "%", "where today's vol sits in that history"),
        Field("source", "str", "", "where it comes from (`sim` surface or `deribit`)"),
    )),
    MessageType("fill", "portfolio", "fill.<strategy_id>", "a trade the portfolio booked (journaled first)",
                FILL_FIELDS),
    MessageType("book_delta", "portfolio", "portfolio.delta",
                "each second, numbered: the marks and the books whose record changed (fills, risk, option marks); "
                "a reader that misses a seq or joins late asks `book_snapshot` (same body, every book) and values "
                "the books with trading.portfolio.book_view", (
                    *BOOK_STATE_FIELDS,
                    Field("books", "map", "", "the changed books by id", BOOK_RECORD_FIELDS),
                    Field("removed", "list", "", "ids that have no book any more (renamed on start)"),
                )),
    MessageType("totals", "portfolio", "portfolio.totals", "each second, the values per category (cycle lines)", (
        Field("market_ts", "int", "ms, market time", "the portfolio's clock"),
        Field("journal_seq", "int", "", "the journal's last seq"),
        Field("totals", "map", "", "per category (`spot`, `deribit`, `ibkr`) and `total`", TOTALS_FIELDS),
    )),
    *(MessageType("heartbeat", service, f"heartbeat.{service}" + ("-<engine>" if service == ENGINES else ""),
                  f"{service} is alive, each second, with its status", HEARTBEAT_FIELDS + extras)
      for service, extras in HEARTBEAT_EXTRAS.items()),
)


def message_type(type_: str, publisher: str) -> MessageType | None:
    """The declaration of ``type_`` as ``publisher`` sends it, or None. Every signal engine
    (``signals-<engine>``, one per config ``engines`` entry) sends what ``signals`` declares."""
    if publisher.startswith(ENGINES + "-"):
        publisher = ENGINES
    return next((m for m in MESSAGES if m.type == type_ and m.publisher == publisher), None)


def _record_problems(fields: Sequence[Field], value: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: expected a map, got {type(value).__name__}"]
    declared = {f.name: f for f in fields}
    problems = [f"{where}.{k}: not declared in common/messages.py" for k in value if k not in declared]
    for f in fields:
        if f.name not in value:
            if not f.optional:
                problems.append(f"{where}.{f.name}: declared but missing")
            continue
        child = value[f.name]
        if not f.fields or child is None:
            continue
        if f.kind == "record":
            problems += _record_problems(f.fields, child, f"{where}.{f.name}")
        elif f.kind == "map" and isinstance(child, dict):
            for key, item in child.items():
                problems += _record_problems(f.fields, item, f"{where}.{f.name}[{key!r}]")
        elif f.kind == "list" and isinstance(child, list):
            for i, item in enumerate(child):
                problems += _record_problems(f.fields, item, f"{where}.{f.name}[{i}]")
    return problems


def message_problems(topic: str, type_: str, source: str, body: Any) -> list[str]:
    """What about one received message docs/BUS.md does not describe: an undeclared type, a topic
    outside its declared pattern, a body key not declared or a declared one missing."""
    declared = message_type(type_, source)
    if declared is None:
        return [f"type {type_!r} from {source!r} (topic {topic!r}) is not declared in common/messages.py"]
    problems = _record_problems(declared.fields, body, f"{type_}.body")
    if not topic.startswith(declared.topic_prefix):
        problems.append(f"{type_}: topic {topic!r} does not match {declared.topic!r}")
    return problems


# ---- docs/BUS.md ---------------------------------------------------------------------------------

def _rows(fields: Sequence[Field], prefix: str = "") -> list[str]:
    rows = []
    for f in fields:
        meaning = f.meaning.replace("|", "\\|") + (" (optional)" if f.optional else "")
        rows.append(f"| `{prefix}{f.name}` | {f.kind} | {f.unit} | {meaning} |")
        if f.fields:
            inner = {"record": ".", "map": "[k].", "list": "[i]."}[f.kind]
            rows += _rows(f.fields, f"{prefix}{f.name}{inner}")
    return rows


def render_markdown() -> str:
    """docs/BUS.md: the envelope, then every message type with its topic, publisher and fields."""
    lines = [
        "# The bus",
        "",
        "<!-- Generated from common/messages.py by `python -m common.messages --docs`; do not edit. -->",
        "",
        "Every message is a two-frame ZeroMQ PUB/SUB message `[topic, envelope]`: the topic is UTF-8 text,",
        "dotted, general part first, so a SUB prefix filter (`signal.`, `bar.BTC/USDT.`) selects what you",
        "want; the envelope is a msgpack map. Each service binds one PUB endpoint (config `endpoints.<service>.pub`,",
        "`tcp://127.0.0.1:5560..5567` by default); connect a SUB socket to the ones you want. Each signal engine",
        "(config `engines`; by default `spot` on `endpoints.signals` and `options` on tcp://127.0.0.1:5568) binds",
        "its own PUB and publishes as `signals-<engine>`: a tap of every signal connects to every engine's PUB.",
        "On Linux each loopback endpoint is bound a second time as `ipc://@go-trader-bus/<host>:<port>` (config",
        "`bus.local_ipc`), where the services connect; either address reaches the same socket.",
        "Pub/sub may drop",
        "under load: `seq` tells you when it did. Times are integer ms since the epoch, UTC; market time is",
        "the feed's clock (faster than the wall in `sim` and `replay`). Money is USD unless a unit says otherwise.",
        "",
        "## Envelope",
        "",
        "| key | type | unit | meaning |",
        "|---|---|---|---|",
        *_rows(ENVELOPE),
        "",
        "## Topics",
        "",
        "| topic | type | publisher (`source`) | what |",
        "|---|---|---|---|",
        *(f"| `{m.topic}` | `{m.type}` | {m.publisher} | {m.meaning} |" for m in MESSAGES),
        "",
        "Nested keys: `a.b` is key `b` of the map under `a`, `a[k].b` key `b` of each value of the map",
        "`a`, `a[i].b` key `b` of each item of the list `a`.",
    ]
    for m in MESSAGES:
        lines += ["", f"## `{m.type}` from {m.publisher} on `{m.topic}`", "",
                  m.meaning[0].upper() + m.meaning[1:] + ".",
                  "", "| body key | type | unit | meaning |", "|---|---|---|---|", *_rows(m.fields)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.messages", description="Write docs/BUS.md.")
    parser.add_argument("--docs", action="store_true", required=True, help=f"rewrite {DOCS_PATH} from the registry")
    parser.parse_args(argv)
    DOCS_PATH.write_text(render_markdown(), encoding="utf-8")
    print(f"wrote {DOCS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
