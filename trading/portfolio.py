"""The books of every strategy, with the rules that move them: fills, marks and risk.

Pure: the portfolio service wraps it with the state file, the journal and sockets, and the
backtester drives the very same object bar by bar, so both make the same trades. Every
change is two-step (decide, then commit), so the service can journal a fill in between.

No order is taken at its word: a spot order fills at the portfolio's own tick of its symbol
at the order's time (``trading.order_checks``), an option order from the sender at the
pricer's listed marks (``decide_options_at_market``, ``trading.option_order_checks``), and neither
may be dated before the portfolio's market time by more than ``order_lag_ms`` (one bar of
its strategy plus the market time an order may spend in transit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar

from common.model import Fill, RecordError, SpotOrder, read_int, read_object, read_str
from common.timeframes import HOUR_MS, timeframe_ms
from options.scoring import EXECUTE_THRESHOLD, MAX_POSITIONS
from trading.book_view import BookView
from trading.ledger import (
    MAX_USD,
    OrderDecision,
    StrategyBook,
    Valuation,
    apply_fill,
    book_from_dict,
    book_to_dict,
    closes_a_trade,
    decide_spot_order,
    duplicate_reason,
    liquidation_orders,
    new_book,
    record_no_fill,
    value_book,
)
from trading.option_book import (
    OptionOrder,
    OptionOrderDecision,
    apply_option_fill,
    decide_option_order,
    mark_option_positions,
    option_value,
    settle_expired,
)
from trading.option_order_checks import OptionMarket, order_refusal, price_option_order
from trading.order_checks import DEFAULT_PRICE_BAND_PCT, OK, PriceTape, check_spot_order
from trading.risk import (
    RiskLimits,
    RiskState,
    drawdown_pct,
    entry_block_reason,
    reset_risk,
    risk_summary,
    update_on_mark,
    update_on_trade_closed,
)

if TYPE_CHECKING:
    from config.settings import Config


CATEGORIES = ("spot", "deribit", "ibkr")


def category_totals(views: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Starting and current balance per category (Spot, Deribit, IBKR) and in total."""
    totals = {c: {"initial": 0.0, "value": 0.0, "strategies": 0} for c in (*CATEGORIES, "total")}
    for view in views:
        value = view["portfolio_value"]
        for key in (view["category"], "total"):
            bucket = totals.setdefault(key, {"initial": 0.0, "value": 0.0, "strategies": 0})
            bucket["initial"] += view["initial_capital"]
            bucket["value"] += value
            bucket["strategies"] += 1
    for bucket in totals.values():
        bucket["pnl"] = bucket["value"] - bucket["initial"]
        bucket["pnl_pct"] = bucket["pnl"] / bucket["initial"] * 100.0 if bucket["initial"] else 0.0
    return totals


# The recent trades a strategy view (and a book record on the bus) carries.
VIEW_TRADES = 10


def book_valuation(book: StrategyBook, marks: Mapping[str, float]) -> Valuation:
    """The one valuation of a book: spot at ``marks`` (never priced: at cost) plus its option
    positions at their last marks. Risk, order sizing, the backtester, the portfolio's views
    and the gateway's /status all value a book here, so no reader shows a value the kill
    switch never saw."""
    return value_book(book, marks, option_value(book))


def book_view(book: StrategyBook, category: str, marks: Mapping[str, float], market_ts: int) -> dict[str, Any]:
    """One strategy as /status shows it, valued by ``book_valuation`` at ``marks``. The
    drawdown is taken at this value (as the next mark will take it), so value and drawdown
    never disagree between two marks."""
    valuation = book_valuation(book, marks)
    value = valuation.value
    positions = {}
    for symbol, p in book.positions.items():
        mark = valuation.positions[symbol]
        positions[symbol] = {"quantity": p.quantity, "avg_price": p.avg_price, "current_price": mark.price,
                             "value": mark.value if mark.price is not None else None,
                             "unrealized_pnl": mark.unrealized_pnl, "opened_ts": p.opened_ts}
    peak = max(book.risk.peak_value, value)
    pnl = value - book.initial_capital
    return {
        "id": book.strategy_id,
        "type": book.kind,
        "category": category,
        "cash": book.cash,
        "initial_capital": book.initial_capital,
        "positions": positions,
        "option_positions": {name: p.to_dict() for name, p in book.option_positions.items()},
        "option_value": valuation.option_value,
        "trade_count": book.trade_count,
        "portfolio_value": value,
        "pnl": pnl,
        "pnl_pct": pnl / book.initial_capital * 100.0,
        "risk_state": {**risk_summary(book.risk, market_ts), "peak_value": peak,
                       "drawdown_pct": drawdown_pct(peak, value)},
        "recent_trades": book.recent_trades[-VIEW_TRADES:],
    }


def book_record(book: StrategyBook, category: str) -> dict[str, Any]:
    """A book as it travels to the gateway (``read_book_record`` reads it back): its state.json
    form with the last VIEW_TRADES trades and no order-id memory, plus its category. Values
    are not in it: the reader takes them from ``book_view`` at the portfolio's marks."""
    record = book_to_dict(book)
    record["recent_trades"] = record["recent_trades"][-VIEW_TRADES:]
    record["recent_order_ids"] = {}
    record["category"] = category
    return record


def read_book_record(d: Any, where: str) -> tuple[StrategyBook, str]:
    """A ``book_record`` from the bus, checked as state.json is; RecordError names the key path."""
    return book_from_dict(d, where), read_str(d, "category", where)


@dataclass(frozen=True, slots=True)
class StrategyMeta:
    """What the portfolio needs to know of a configured strategy."""

    strategy_id: str
    kind: str  # "spot" | "options"
    category: str  # "spot" | "deribit" | "ibkr"
    capital: float
    limits: RiskLimits
    strategy: str = ""  # the strategy's name; "wheel" books take assignment of their short puts
    symbols: tuple[str, ...] = ()  # what it may trade: spot symbols (a pair: two), or the options underlying
    bar_ms: int = 0  # its bar: how long before market time one of its orders may be dated
    max_option_positions: int = MAX_POSITIONS  # its venue's (Config.venue_options), as the engine's
    min_option_score: float = EXECUTE_THRESHOLD


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """What ``reconcile`` did: books it created, books kept although their strategy left the
    config (``retired``: never dropped, so no money vanishes), and the other books kept."""

    created: tuple[str, ...]
    retired: tuple[str, ...]
    kept: tuple[str, ...]


RISK_RECORD = "risk"


@dataclass(frozen=True, slots=True)
class RiskRecord:
    """A journal record of one book's whole risk state, written when a mark trips or clears a
    sticky limit (the kill switch, the daily loss limit). Fills replay the loss streak and the
    circuit breaker by themselves, but marks are not journaled, so without these records a book
    rebuilt from the journal would trade again after its kill switch had stopped it. Between
    records, the drawdown peak and the day's start value follow the marks and are re-derived
    from the marks after a rebuild. Journal lines carry ``"type": "risk"``; fills have no type."""

    seq: int
    strategy_id: str
    ts_event: int
    risk: RiskState

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": RISK_RECORD, "strategy_id": self.strategy_id, "ts_event": self.ts_event,
                "risk": self.risk.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "risk record") -> "RiskRecord":
        return cls(read_int(d, "seq", where, minimum=1), read_str(d, "strategy_id", where),
                   read_int(d, "ts_event", where), RiskState.from_dict(d.get("risk"), f"{where}.risk"))


RENAME_RECORD = "rename"

# Strategy ids an earlier version of this project used for four of the seed's strategies,
# beside the seed's own ids, which the config uses again. A state file or journal holding an
# old id is carried over on start (``Portfolio.rename_books``), never pruned.
SEED_RENAMES: Mapping[str, str] = {
    "deribit-protective-btc": "deribit-puts-btc",
    "deribit-protective-eth": "deribit-puts-eth",
    "deribit-covered-btc": "deribit-calls-btc",
    "deribit-covered-eth": "deribit-calls-eth",
    "ibkr-protective-btc": "ibkr-puts-btc",
    "ibkr-protective-eth": "ibkr-puts-eth",
    "ibkr-covered-btc": "ibkr-calls-btc",
    "ibkr-covered-eth": "ibkr-calls-eth",
}


@dataclass(frozen=True, slots=True)
class RenameRecord:
    """A journal record of a book renamed on start (``old_id`` -> ``new_id``). The records
    before it carry the old id; a rebuild from the journal alone books them under the new id,
    so it gives the same books the renamed state.json holds. Journal lines carry
    ``"type": "rename"``; ``strategy_id`` is the new id."""

    seq: int
    old_id: str
    new_id: str
    ts_event: int

    @property
    def strategy_id(self) -> str:
        return self.new_id

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": RENAME_RECORD, "old_id": self.old_id, "new_id": self.new_id,
                "ts_event": self.ts_event}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "rename record") -> "RenameRecord":
        record = cls(read_int(d, "seq", where, minimum=1), read_str(d, "old_id", where),
                     read_str(d, "new_id", where), read_int(d, "ts_event", where))
        if not record.old_id or not record.new_id or record.old_id == record.new_id:
            raise RecordError(f"{where}: old_id and new_id must be two different ids, got "
                              f"{record.old_id!r} -> {record.new_id!r}")
        return record


JournalRecord = Fill | RiskRecord | RenameRecord
_Record = TypeVar("_Record", bound=JournalRecord)  # _routed keeps the kind of record it is given
_RECORD_TYPES: dict[str, Callable[[Mapping[str, Any], str], JournalRecord]] = {
    RISK_RECORD: RiskRecord.from_dict, RENAME_RECORD: RenameRecord.from_dict}


def journal_record(d: Mapping[str, Any], where: str) -> JournalRecord:
    """A journal line as its record: the record its ``type`` names, or a Fill when it has none."""
    kind = read_object(d, where).get("type")
    if kind is None:
        return Fill.from_dict(d, where)
    if kind not in _RECORD_TYPES:
        raise RecordError(f"{where}.type: expected one of {sorted(_RECORD_TYPES)} or none (a fill), got {kind!r}")
    return _RECORD_TYPES[kind](d, where)


def journal_fills(records: Iterable[Mapping[str, Any]]) -> list[Fill]:
    """The fills among journal lines (what readers of the trade history want), under the ids
    the journal's rename records gave their strategies later."""
    records = list(records)
    renames: dict[Any, Any] = {r.get("old_id"): r.get("new_id") for r in records if r.get("type") == RENAME_RECORD}
    fills = [Fill.from_dict(r, f"journal seq {r.get('seq')}") for r in records if r.get("type") is None]
    return [replace(f, strategy_id=renames[f.strategy_id]) if f.strategy_id in renames else f for f in fills]


@dataclass(frozen=True, slots=True)
class ParsedState:
    """A state.json checked field by field (``parse_state``), ready to adopt."""

    books: dict[str, StrategyBook]
    journal_seq: int
    market_ts: int
    prices: dict[str, float]


def parse_state(state: Mapping[str, Any], *, check_trades: bool = True) -> ParsedState:
    """Check a state dict as load and save both need it; RecordError names the key path.
    ``check_trades=False`` skips re-reading the recent trades (see ``book_from_dict``)."""
    strategies = read_object(state.get("strategies"), "state.strategies")
    seq = read_int(state, "journal_seq", "state", minimum=0) if "journal_seq" in state else 0
    market_ts = read_int(state, "market_ts", "state", minimum=0) if "market_ts" in state else 0
    books = {}
    for sid, raw in strategies.items():
        where = f"state.strategies.{sid}"
        book = book_from_dict(raw, where, check_trades=check_trades)
        if book.strategy_id != sid:
            raise RecordError(f"{where}.strategy_id: {book.strategy_id!r} does not match its key {sid!r}")
        books[sid] = book
    prices = {}
    for symbol, price in read_object(state.get("prices", {}), "state.prices").items():
        if isinstance(price, bool) or not isinstance(price, (int, float)) \
                or not (math.isfinite(price) and 0 < price <= MAX_USD):
            raise RecordError(f"state.prices.{symbol}: expected a price in (0, {MAX_USD:g}], got {price!r}")
        prices[symbol] = float(price)
    return ParsedState(books, seq, market_ts, prices)


def strategy_metas(cfg: "Config") -> list[StrategyMeta]:
    """The portfolio's view of each configured strategy: category, capital and risk limits."""
    metas = []
    for sc in cfg.strategies:
        # config.settings gives every options strategy a venue and an underlying; its types cannot say so
        category: str = "spot" if sc.type == "spot" else sc.venue  # type: ignore[assignment]
        limits = RiskLimits(
            max_drawdown_pct=sc.max_drawdown_pct,
            max_position_pct=sc.risk.max_position_pct,
            max_consecutive_losses=sc.risk.max_consecutive_losses,
            circuit_breaker_ms=int(sc.risk.circuit_breaker_hours * HOUR_MS),
            daily_loss_pct=sc.risk.daily_loss_pct,
        )
        symbols = (sc.symbol, sc.pair) if sc.pair else (sc.symbol,)
        max_positions, min_score = cfg.options.max_positions, cfg.options.min_score
        if sc.type != "spot":  # config gives every options strategy a venue and an underlying
            symbols = (sc.underlying,)  # type: ignore[assignment]
            venue = cfg.venue_options(sc.venue)  # type: ignore[arg-type]
            max_positions, min_score = venue.max_positions, venue.min_score
        metas.append(StrategyMeta(sc.id, sc.type, category, sc.capital, limits, sc.strategy, symbols,
                                  timeframe_ms(sc.timeframe), max_positions, min_score))
    return metas


class Portfolio:
    """All strategy books plus the last known prices; ``journal_seq`` numbers the journal.

    ``prices`` are the marks books are valued at; ``tape`` keeps the feed's recent ticks, the
    prices spot orders fill at. ``marking_problems`` names each book the last mark could not
    value (strategy -> reason); the other books are marked regardless."""

    def __init__(self, metas: Iterable[StrategyMeta], *, fee_rate: float, slippage_rate: float,
                 underlying_quote: str = "USDT", price_band_pct: float = DEFAULT_PRICE_BAND_PCT,
                 order_transit_ms: int = 0) -> None:
        self.metas = {m.strategy_id: m for m in metas}
        if not (math.isfinite(price_band_pct) and price_band_pct > 0):
            raise ValueError(f"price_band_pct: must be a finite number > 0, got {price_band_pct!r}")
        self.fee_rate = fee_rate
        self.slippage_rate = slippage_rate
        self.underlying_quote = underlying_quote
        self.price_band_pct = price_band_pct
        if isinstance(order_transit_ms, bool) or not isinstance(order_transit_ms, int) or order_transit_ms < 0:
            raise ValueError(f"order_transit_ms: must be an integer >= 0, got {order_transit_ms!r}")
        self.order_transit_ms = order_transit_ms
        self.books: dict[str, StrategyBook] = {}
        self.prices: dict[str, float] = {}
        self.tape = PriceTape(max((self.order_lag_ms(sid) for sid in self.metas), default=0))
        self.market_ts = 0
        self.journal_seq = 0
        self._problems: dict[str, dict[str, str]] = {"mark": {}, "option marks": {}}  # by marking pass
        self._risk_unjournaled: set[str] = set()  # books whose sticky risk flags changed since their last record
        self.aliases: dict[str, str] = {}  # old id -> new id: records of the old id go to the new book
        self._renames_unjournaled: dict[str, str] = {}  # renames done or used, not yet in the journal
        self._journaled_renames: set[str] = set()  # old ids whose rename record the journal holds
        self._changed: set[str] = set()  # books whose record changed since ``take_changed``

    # --- state ---------------------------------------------------------------------------
    def reconcile(self, ts: int) -> Reconciliation:
        """Create books for strategies new in config and keep every other book: a book whose
        strategy left the config stays (retired: not marked for risk, not traded), so putting
        the strategy back finds its money where it was."""
        created = []
        for sid, meta in self.metas.items():
            if sid not in self.books:
                self.books[sid] = new_book(sid, meta.kind, meta.capital, ts)
                created.append(sid)
                self._changed.add(sid)
        retired = tuple(sorted(set(self.books) - set(self.metas)))
        kept = tuple(sorted(set(self.books) - set(created) - set(retired)))
        return Reconciliation(tuple(created), retired, kept)

    def rename_books(self, table: Mapping[str, str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Carry books over to new ids (``table``: old id -> new id whose strategy is in the
        config), before ``reconcile``, so they are neither retired nor created empty. A moved
        book keeps everything; its recent trades carry the new id. Returns (renamed, skipped):
        skipped when a book of the new id exists too, in which case both are kept. The journal's
        records of an old id are booked under the new one from now on (``rename_records``)."""
        renamed, skipped = [], []
        for old, new in table.items():
            if new not in self.metas or old in self.metas:
                continue
            if old in self.books and new in self.books:
                skipped.append((old, new))
                continue
            self.aliases[old] = new
            if old in self.books:
                self._move_book(old, new)
                self._renames_unjournaled[old] = new
                renamed.append((old, new))
        return renamed, skipped

    def _move_book(self, old: str, new: str) -> None:
        book = self.books.pop(old)
        book.strategy_id = new
        book.recent_trades = [{**t, "strategy_id": new} for t in book.recent_trades]
        self.books[new] = book
        self._changed |= {old, new}
        if old in self._risk_unjournaled:
            self._risk_unjournaled.discard(old)
            self._risk_unjournaled.add(new)

    def _routed(self, record: _Record) -> _Record:
        """A record of a renamed strategy, under its new id (a rename still to journal, if so)."""
        sid = record.strategy_id
        new = self.aliases.get(sid)
        if sid in self.books or new is None or isinstance(record, RenameRecord):
            return record
        if sid not in self._journaled_renames:
            self._renames_unjournaled[sid] = new
        return replace(record, strategy_id=new)

    def rename_records(self, first_seq: int) -> list[RenameRecord]:
        """Records to journal, then commit, for the renames done on start (or used to book an
        old id's records) that the journal does not hold yet."""
        return [RenameRecord(first_seq + i, old, new, self.market_ts)
                for i, (old, new) in enumerate(sorted(self._renames_unjournaled.items()))]

    def to_state(self) -> dict[str, Any]:
        """The state to save, checked as ``load_state`` will check it: a book that could not be
        loaded back raises RecordError here, before any file or backup is touched."""
        state = {
            "journal_seq": self.journal_seq,
            "market_ts": self.market_ts,
            "prices": dict(self.prices),
            "strategies": {sid: book_to_dict(book) for sid, book in self.books.items()},
        }
        parse_state(state, check_trades=False)
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Adopt a parsed state.json, all or nothing; RecordError names the bad key path."""
        parsed = parse_state(state)
        self.books = parsed.books
        self._changed |= set(parsed.books)
        self.journal_seq = parsed.journal_seq
        self.market_ts = parsed.market_ts
        self.prices = parsed.prices

    # --- the journal -----------------------------------------------------------------------
    def last_seen_fill(self) -> dict[str, Any] | None:
        """The newest fill the books remember: the last one this state has seen."""
        newest: dict[str, Any] | None = None
        for book in self.books.values():
            if book.recent_trades and (newest is None or book.recent_trades[-1]["seq"] > newest["seq"]):
                newest = book.recent_trades[-1]
        return newest

    def journal_disagreement(self, last_seq: int, tail: Sequence[Mapping[str, Any]]) -> str | None:
        """Why the journal cannot be the history of this state, or None when it can.

        ``last_seq`` is the journal's last seq; ``tail`` its records from the last seen fill's
        seq on (``last_seen_fill``), or after ``journal_seq`` when no book remembers a fill.
        """
        if self.journal_seq > last_seq:
            ends = "is empty or missing" if last_seq == 0 else f"ends at seq {last_seq}"
            return (f"state.json has seen the journal up to seq {self.journal_seq} but the journal {ends}: "
                    f"it was lost or cut short, and starting would reuse seqs {last_seq + 1}..{self.journal_seq}. "
                    f"Restore the journal from a copy (state.json's books are intact)")
        seen = self.last_seen_fill()
        if seen is None:
            return None
        record = tail[0] if tail and tail[0].get("seq") == seen["seq"] else None
        try:
            journaled = Fill.from_dict(record) if record is not None else None
            if journaled is not None and journaled.strategy_id in self.aliases:  # renamed since
                journaled = replace(journaled, strategy_id=self.aliases[journaled.strategy_id])
            same = journaled == Fill.from_dict(seen)
        except RecordError:
            same = False
        if same:
            return None
        return (f"line {seen['seq']}: the journal's seq {seen['seq']} is not the fill state.json last saw there "
                f"(order {seen.get('order_id')!r} of {seen.get('strategy_id')!r}): the journal belongs to another "
                f"state or was edited. Restore the matching journal, or move state.json away to rebuild from this "
                f"journal alone")

    def replay(self, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Book the journal records this state has not seen (``seq > journal_seq``), in order.

        Call ``reconcile`` first, so every configured strategy has its book. A fill of a
        strategy that has no book is refused (RecordError naming its seq), never skipped:
        skipping would lose its money for good once the state is saved past it."""
        fills = []
        records = [r for r in records if not (isinstance(r.get("seq"), int) and r["seq"] <= self.journal_seq)]
        for record in records:  # the records before a rename carry the old id: book them under the new
            if record.get("type") == RENAME_RECORD:
                rename = RenameRecord.from_dict(record, f"seq {record.get('seq')}")
                self.aliases[rename.old_id] = rename.new_id
                self._journaled_renames.add(rename.old_id)
        for record in records:
            seq = record.get("seq")
            parsed = self._routed(journal_record(record, f"seq {seq}"))
            if parsed.strategy_id not in self.books:
                raise RecordError(
                    f"seq {seq}: a record of strategy {parsed.strategy_id!r}, which has no book in state.json and is "
                    f"not in the config. Add it back to the config (same id, type and capital) to rebuild its book, "
                    f"or restore the state.json that has it")
            fills.append(parsed)
        return self.commit(fills)

    # --- orders and fills ----------------------------------------------------------------
    def order_lag_ms(self, sid: str) -> int:
        """How long before market time an order of ``sid`` may be dated: its bar (the decision
        of the bar that just closed may be in flight while the next forms) plus the market
        time that passes while an order travels (``order_transit_ms``: a few wall seconds at
        the feed's speed, which is hours in a fast-forwarded sim and seconds live)."""
        return self.metas[sid].bar_ms + self.order_transit_ms

    def record_tick(self, symbol: str, price: float, ts: int) -> bool:
        """A tick from the feed, kept for the orders of its time (marking happens in ``mark``);
        False for a bad price or a tick older than the symbol's last (market time only moves
        forward: a rewound feed is not a price)."""
        if not self.tape.record(symbol, price, ts):
            return False
        self.market_ts = max(self.market_ts, ts)
        return True

    def decide_spot(self, order: SpotOrder, seq: int | None = None) -> OrderDecision:
        """Fill at the portfolio's own tick of the order's symbol at the order's time, never at
        the declared price; refused ("rejected", or "retry" while the tick is on its way) as
        ``trading.order_checks.check_spot_order`` says. The fill is numbered ``seq`` (default:
        the journal's next; a round of orders numbers its fills one after another). KeyError
        for a strategy not in the config (a retired book is never traded)."""
        book = self.books.get(order.strategy_id)
        if book is None or order.strategy_id not in self.metas:
            raise KeyError(order.strategy_id)
        meta = self.metas[order.strategy_id]
        duplicate = duplicate_reason(book, order.order_id)
        if duplicate is not None:
            return OrderDecision("duplicate", duplicate)
        check = check_spot_order(order, self.tape, symbols=meta.symbols, market_ts=self.market_ts,
                                 lag_ms=self.order_lag_ms(order.strategy_id), band_pct=self.price_band_pct)
        if check.status != OK:
            return OrderDecision(check.status, check.reason)
        return decide_spot_order(
            book, replace(order, price=check.price), fee_rate=self.fee_rate,
            slippage_rate=self.slippage_rate, max_position_pct=meta.limits.max_position_pct,
            risk_limits=meta.limits, seq=self.journal_seq + 1 if seq is None else seq,
        )

    def option_order_refusal(self, order: OptionOrder) -> OptionOrderDecision | None:
        """The answer to an option order that needs no price (a duplicate, a back-dated order,
        another venue or underlying than the strategy's, a wrong multiplier or quantity step),
        or None: then ask the pricer and call ``decide_options_at_market``."""
        book = self.books.get(order.strategy_id)
        if book is None or order.strategy_id not in self.metas:
            raise KeyError(order.strategy_id)
        duplicate = duplicate_reason(book, order.order_id)
        if duplicate is not None:
            return OptionOrderDecision("duplicate", duplicate)
        meta = self.metas[order.strategy_id]
        why = order_refusal(order, venue=meta.category, underlying=meta.symbols[0] if meta.symbols else "",
                            market_ts=self.market_ts, lag_ms=self.order_lag_ms(order.strategy_id))
        return None if why is None else OptionOrderDecision("rejected", why)

    def decide_options_at_market(self, order: OptionOrder, market: OptionMarket,
                                 seq: int | None = None) -> OptionOrderDecision:
        """An option order from outside: checked and priced against the pricer's ``market``
        (``trading.option_order_checks.price_option_order``), then decided at those prices,
        its fills numbered from ``seq`` (``decide_options``)."""
        early = self.option_order_refusal(order)
        if early is not None:
            return early
        meta = self.metas[order.strategy_id]
        check = price_option_order(order, market, list(self.books[order.strategy_id].option_positions.values()),
                                   venue=meta.category, underlying=meta.symbols[0] if meta.symbols else "",
                                   book_value=self.value_of(order.strategy_id), market_ts=self.market_ts,
                                   lag_ms=self.order_lag_ms(order.strategy_id), band_pct=self.price_band_pct,
                                   spot_at_order=self.spot_at(order.ts_event))
        if check.order is None:
            return OptionOrderDecision(check.status, check.reason)
        return self.decide_options(check.order, seq)

    def decide_options(self, order: OptionOrder, seq: int | None = None) -> OptionOrderDecision:
        """All legs of an option order or none, numbered from ``seq`` (default: after the
        journal), at the order's own premiums: for a caller that priced it
        (``decide_options_at_market``, or the backtester, whose orders come from the chain it
        built itself). KeyError for a strategy not in the config (a retired book is never
        traded)."""
        book = self.books.get(order.strategy_id)
        if book is None or order.strategy_id not in self.metas:
            raise KeyError(order.strategy_id)
        opens = any(leg.action == "open" for leg in order.legs)
        meta = self.metas[order.strategy_id]
        return decide_option_order(
            book, order, fee_rate=self.fee_rate, seq0=self.journal_seq + 1 if seq is None else seq,
            max_positions=meta.max_option_positions, min_score=meta.min_option_score,
            entry_block=entry_block_reason(book.risk, order.ts_event) if opens else None,
            quote=self.underlying_quote,
        )

    def commit(self, fills: Iterable[JournalRecord]) -> list[str]:
        """Book journaled fills (and risk records); returns risk events (circuit breaker trips)
        for the log. A record of a strategy without a book is an error, never skipped."""
        events: list[str] = []
        for fill in fills:
            if isinstance(fill, RenameRecord):
                if fill.old_id in self.books and fill.new_id not in self.books:
                    self._move_book(fill.old_id, fill.new_id)
                self.aliases[fill.old_id] = fill.new_id
                self._journaled_renames.add(fill.old_id)
                self._renames_unjournaled.pop(fill.old_id, None)
                self.journal_seq = max(self.journal_seq, fill.seq)
                continue
            fill = self._routed(fill)
            book = self.books.get(fill.strategy_id)
            if book is None:
                raise RecordError(f"journal seq {fill.seq}: no book for strategy {fill.strategy_id!r}")
            if fill.seq > self.journal_seq:
                self.journal_seq = fill.seq
            self._changed.add(fill.strategy_id)
            if isinstance(fill, RiskRecord):
                book.risk = replace(fill.risk)
                self._risk_unjournaled.discard(fill.strategy_id)
                continue
            apply_fill(book, fill)
            if fill.kind in ("option", "settlement"):
                apply_option_fill(book, fill)
            if closes_a_trade(fill):
                meta = self.metas.get(fill.strategy_id)
                if meta is not None:
                    events += update_on_trade_closed(book.risk, meta.limits, fill.realized_pnl, fill.ts_event)
        return events

    def record_no_fill(self, strategy_id: str, order_id: str) -> None:
        record_no_fill(self.books[strategy_id], order_id)

    # --- marks and risk --------------------------------------------------------------------
    def value_of(self, sid: str) -> float:
        """Book value at the last known prices (``book_valuation``)."""
        return book_valuation(self.books[sid], self.prices).value

    def spot_at(self, ts: int) -> dict[str, float]:
        """Each coin's price at ``ts`` from the tape (the newest tick at or before it)."""
        suffix = f"/{self.underlying_quote}"
        ticks = {s[: -len(suffix)]: self.tape.price_at(s, ts) for s in self.tape.symbols() if s.endswith(suffix)}
        return {coin: tick[1] for coin, tick in ticks.items() if tick is not None}

    def open_option_contracts(self) -> list[dict[str, Any]]:
        """Each contract some book holds, once, as the pricer's ``mark`` request wants it."""
        contracts = {}
        for book in self.books.values():
            for name, position in book.option_positions.items():
                contracts[name] = position.contract.to_dict()
        return list(contracts.values())

    def mark_options(self, marks: Mapping[str, Mapping[str, Any]], ts: int) -> None:
        """Write the pricer's marks (name -> {mark_usd, greeks, source}) into every book; a
        book a mark does not fit keeps its last marks and is named in ``marking_problems``."""
        self._problems["option marks"] = {}
        for sid, book in self.books.items():
            if book.option_positions:
                self._guarded_mark("option marks", sid, "option marks",
                                   lambda: mark_option_positions(book, marks, ts))
                self._changed.add(sid)

    @property
    def marking_problems(self) -> dict[str, str]:
        """Strategy -> why the last mark (or option mark) could not value its book."""
        merged: dict[str, str] = {}
        for problems in self._problems.values():
            for sid, reason in problems.items():
                merged[sid] = f"{merged[sid]}; {reason}" if sid in merged else reason
        return merged

    def _guarded_mark(self, marking: str, sid: str, what: str, step: Callable[[], Any]) -> Any:
        """Run one book's ``step`` of a ``marking`` pass, now (so a step may read its caller's loop
        variables): an exception or a non-finite result names the book in that pass's problems
        and yields None, so the other books are still marked."""
        try:
            result = step()
        except (ArithmeticError, KeyError, TypeError, ValueError) as exc:
            self._problems[marking][sid] = f"{what}: {type(exc).__name__}: {exc}"
            return None
        if isinstance(result, float) and not math.isfinite(result):
            self._problems[marking][sid] = f"{what}: value is {result!r}"
            return None
        return result

    def settlements(self, ts: int, first_seq: int) -> list[Fill]:
        """Settlement (and assignment) fills of every option expired by ``ts``, not yet booked,
        at the tape's tick nearest each expiry. The tape spans the order lag, whose
        ``order_transit_ms`` the service makes longer than a mark is ever held back, so the
        expiry's ticks are still there when the mark after it comes."""
        holders = [(sid, book) for sid, book in self.books.items() if book.option_positions]
        if not holders:
            return []
        fills: list[Fill] = []
        for sid, book in holders:
            meta = self.metas.get(sid)
            wheel = meta is not None and meta.strategy == "wheel"
            settled = self._guarded_mark("mark", sid, "expiry settlement", lambda: settle_expired(
                book, self.tape, ts, first_seq=first_seq + len(fills), assign_puts=wheel, quote=self.underlying_quote))
            fills += settled or []
        return fills

    def mark(self, prices: Mapping[str, float], ts: int) -> tuple[list[str], list[Fill]]:
        """Mark every book at ``prices``; returns risk events, and the fills to journal then
        commit: settlements of options expired by ``ts`` (at these prices) and the
        liquidations a newly tripped kill switch needs. A book that cannot be valued (an
        exception, a non-finite value) is left as it was and named in ``marking_problems``
        (until a mark values it again); it never stops the marking of the others."""
        for symbol, price in prices.items():
            if isinstance(price, (int, float)) and math.isfinite(price) and price > 0:
                self.prices[symbol] = price
                self.tape.record(symbol, price, ts)
        self.market_ts = max(self.market_ts, ts)
        self._problems["mark"] = {}
        events: list[str] = []
        liquidations = self.settlements(ts, self.journal_seq + 1)
        next_seq = self.journal_seq + 1 + len(liquidations)
        for sid, book in self.books.items():
            meta = self.metas.get(sid)
            if meta is None or sid in self._problems["mark"]:
                continue
            value = self._guarded_mark("mark", sid, "valuation", lambda: float(self.value_of(sid)))
            if value is None:
                continue
            sticky = (book.risk.kill_switch, book.risk.daily_loss_tripped)
            for event in update_on_mark(book.risk, meta.limits, value, ts):
                events.append(f"{sid}: {event}")
            if (book.risk.kill_switch, book.risk.daily_loss_tripped) != sticky:
                self._risk_unjournaled.add(sid)
                self._changed.add(sid)
            if book.risk.kill_switch and book.positions:
                fills = self._guarded_mark("mark", sid, "liquidation", lambda: liquidation_orders(
                    book, self.prices, ts, fee_rate=self.fee_rate, slippage_rate=self.slippage_rate,
                    first_seq=next_seq))
                liquidations += fills or []
                next_seq += len(fills or [])
        return events, liquidations

    def risk_records(self, first_seq: int) -> list[RiskRecord]:
        """Records to journal, then commit, for the books whose kill switch or daily loss flag
        a mark changed; a book stays listed until its record is committed."""
        return [RiskRecord(first_seq + i, sid, self.market_ts, replace(self.books[sid].risk))
                for i, sid in enumerate(sorted(self._risk_unjournaled))]

    def decide_risk_reset(self, sid: str) -> tuple[RiskRecord | None, list[str]]:
        """An operator re-arms a configured strategy (``trading.risk.reset_risk`` at its current
        value and market time): the record to journal, then commit, and what it clears; no
        record when nothing is tripped. KeyError for a strategy not in the config."""
        book = self.books.get(sid)
        if book is None or sid not in self.metas:
            raise KeyError(sid)
        risk = replace(book.risk)
        cleared = reset_risk(risk, self.value_of(sid), self.market_ts)
        if not cleared:
            return None, []
        return RiskRecord(self.journal_seq + 1, sid, self.market_ts, risk), cleared

    # --- views -----------------------------------------------------------------------------
    def positions_view(self, sid: str, symbol: str) -> BookView:
        """What an options strategy decides on (the ``positions`` reply): cash, capital, value,
        peak, option positions, and the coins of ``symbol`` it holds (a wheel's assignment)."""
        book = self.books.get(sid)
        if book is None:
            raise KeyError(sid)
        holding = book.positions.get(symbol)
        return BookView(sid, self.market_ts, book.cash, book.initial_capital, self.value_of(sid),
                        book.risk.peak_value, tuple(book.option_positions.values()),
                        holding.quantity if holding else 0.0, holding.avg_price if holding else 0.0)

    def category_of(self, sid: str) -> str:
        """Spot, Deribit or IBKR from the config; a retired book by its kind."""
        meta = self.metas.get(sid)
        if meta is not None:
            return meta.category
        return "spot" if self.books[sid].kind == "spot" else "options"

    def strategy_view(self, sid: str) -> dict[str, Any]:
        return book_view(self.books[sid], self.category_of(sid), self.prices, self.market_ts)

    def take_changed(self) -> set[str]:
        """The books whose record changed since the last call (fills, risk records, sticky risk
        flags, option marks, renames, a load): what a delta to the gateway must carry. Marks
        alone change no record: a reader values books at the marks that travel beside them."""
        changed, self._changed = self._changed, set()
        return changed

    def snapshot(self) -> dict[str, Any]:
        """Every strategy's view and the totals (the ``snapshot`` reply, for the CLI and scripts);
        the gateway builds the same views from its clone with the same ``book_view``."""
        strategies = {sid: self.strategy_view(sid) for sid in self.books}
        return {
            "market_ts": self.market_ts,
            "journal_seq": self.journal_seq,
            "prices": dict(self.prices),
            "strategies": strategies,
            "totals": category_totals(strategies.values()),
        }

    def totals(self) -> dict[str, dict[str, float]]:
        """``category_totals`` of every book at the last known prices, without building views."""
        return category_totals({"category": self.category_of(sid), "initial_capital": book.initial_capital,
                                "portfolio_value": self.value_of(sid)} for sid, book in self.books.items())

    def records_message(self, sids: Iterable[str]) -> dict[str, Any]:
        """The books of ``sids`` as records (``book_record``), the ids among them that have no
        book any more (``removed``: renamed), and the marks and clock to value them at: the body
        of a delta (changed books) or of a full snapshot (every book)."""
        sids = sorted(sids)
        books = {sid: book_record(self.books[sid], self.category_of(sid)) for sid in sids if sid in self.books}
        return {"market_ts": self.market_ts, "journal_seq": self.journal_seq, "prices": dict(self.prices),
                "books": books, "removed": [sid for sid in sids if sid not in books]}

    def equity_point(self) -> dict[str, float]:
        """Each book's value; a book the last mark could not value is left out of the point."""
        problems = self.marking_problems
        return {sid: self.value_of(sid) for sid in self.books if sid not in problems}

