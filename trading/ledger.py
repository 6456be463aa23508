"""Strategy books: cash, positions and fee-honest P&L. Pure accounting, no I/O, no clock.

Every change goes through two steps, so a fill can be journaled between them:
``decide_spot_order`` (pure: validates the order against the book and risk, prices the fill)
and ``apply_fill`` (the only mutation: plain arithmetic on a decided fill). Replaying the
journal's fills through ``apply_fill`` rebuilds the books exactly (``rebuild_books_from_journal``).

Cost basis: ``Position.avg_price`` is fee-inclusive — the cash paid per unit, entry fee and
slippage included. So a sell's ``realized_pnl = net proceeds - quantity * avg_price`` counts
both fees, and a round trip's realized P&L equals its change in cash.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from common.model import Fill, RecordError, SpotOrder, read_int, read_number, read_object, read_str
from trading.risk import RiskLimits, RiskState, entry_block_reason, new_risk_state

RECENT_TRADES = 50
RECENT_ORDER_IDS = 256
# Below this notional (USD) a buy is dust: it would only pay fees.
DUST_NOTIONAL_USD = 1.0
BOOK_KINDS = ("spot", "options")
FILL_KINDS = ("spot", "option", "settlement", "liquidation")
# Fills of these kinds move spot positions; the others only move cash (options code owns theirs).
_SPOT_POSITION_KINDS = ("spot", "liquidation")
# A sell within this fraction of the held quantity closes the position (float residue).
_CLOSE_TOLERANCE = 1e-9
# No paper book honestly reaches a trillion dollars: a state amount beyond it is damage or an
# attack, and would break marking (1e308 overflows on the first sum).
MAX_USD = 1e12


class MissingPriceError(ValueError):
    """A held symbol has no usable mark, so the book cannot be valued."""


@dataclass(slots=True)
class Position:
    """A long spot holding; ``avg_price`` is the fee-inclusive cost per unit (USD)."""

    symbol: str
    quantity: float
    avg_price: float
    opened_ts: int


@dataclass(slots=True)
class StrategyBook:
    """One strategy's money. ``option_positions`` holds plain dicts keyed by contract name,
    maintained by the options code; this module only moves their cash."""

    strategy_id: str
    kind: str
    initial_capital: float
    cash: float
    positions: dict[str, Position]
    option_positions: dict[str, dict[str, Any]]
    trade_count: int
    recent_trades: list[dict[str, Any]]
    risk: RiskState
    recent_order_ids: dict[str, int]  # order_id -> fill seq, 0 = answered without a fill
    last_ts: int


@dataclass(frozen=True, slots=True)
class OrderDecision:
    """The answer to an order: ``fill`` is set only when ``status == 'filled'``."""

    status: str  # "filled" | "rejected" | "noop" | "duplicate"
    reason: str
    fill: Fill | None = None


def new_book(strategy_id: str, kind: str, capital: float, ts: int) -> StrategyBook:
    if not strategy_id:
        raise ValueError("new_book: strategy_id must be a non-empty string")
    if kind not in BOOK_KINDS:
        raise ValueError(f"new_book({strategy_id}): kind must be one of {BOOK_KINDS}, got {kind!r}")
    if not math.isfinite(capital) or capital <= 0:
        raise ValueError(f"new_book({strategy_id}): capital must be a finite number > 0, got {capital!r}")
    return StrategyBook(
        strategy_id=strategy_id,
        kind=kind,
        initial_capital=float(capital),
        cash=float(capital),
        positions={},
        option_positions={},
        trade_count=0,
        recent_trades=[],
        risk=new_risk_state(float(capital), ts),
        recent_order_ids={},
        last_ts=ts,
    )


def check_rate(name: str, value: float, upper: float) -> None:
    """A fee or slippage rate: a finite number in [0, upper)."""
    if not (math.isfinite(value) and 0 <= value < upper):
        raise ValueError(f"{name} must be a number in [0, {upper:g}), got {value!r}")


def _sell_fill(book: StrategyBook, position: Position, order_id: str, kind: str, price: float,
               ts_event: int, fee_rate: float, slippage_rate: float, seq: int) -> Fill:
    """Close ``position`` entirely at ``price`` less slippage, fee deducted."""
    exec_price = price * (1.0 - slippage_rate)
    gross = position.quantity * exec_price
    fee = gross * fee_rate
    proceeds = gross - fee
    return Fill(
        seq=seq,
        order_id=order_id,
        strategy_id=book.strategy_id,
        kind=kind,
        instrument=position.symbol,
        side="sell",
        quantity=position.quantity,
        price=exec_price,
        fee=fee,
        cash_delta=proceeds,
        realized_pnl=proceeds - position.quantity * position.avg_price,
        ts_event=ts_event,
    )


def decide_spot_order(book: StrategyBook, order: SpotOrder, *, fee_rate: float, slippage_rate: float,
                      max_position_pct: float, risk_limits: RiskLimits, seq: int) -> OrderDecision:
    """Decide (without mutating) what a long-only spot order does to ``book``.

    Buy sizing: notional ``N = min(cash, pct/100 * book value)`` with
    ``pct = min(max_position_pct, risk_limits.max_position_pct)``, and all of ``N`` is spent:
    ``quantity = N / (price*(1+slippage) * (1+fee_rate))``, ``fee = N - quantity*exec_price``,
    so cash never goes negative. Other symbols in the book are valued at cost for sizing.
    Sells close the whole position; exits are allowed even when risk blocks entries.
    """
    if order.strategy_id != book.strategy_id:
        raise ValueError(
            f"order {order.order_id}: strategy_id {order.strategy_id!r} does not match book {book.strategy_id!r}"
        )
    if book.kind != "spot":
        raise ValueError(f"order {order.order_id}: book {book.strategy_id} is an {book.kind} book, not spot")
    if order.signal not in (1, -1):
        raise ValueError(f"order {order.order_id}: signal must be 1 or -1, got {order.signal!r}")
    if not (math.isfinite(order.price) and order.price > 0):
        raise ValueError(f"order {order.order_id}: price must be a finite number > 0, got {order.price!r}")
    check_rate("fee_rate", fee_rate, 1.0)
    check_rate("slippage_rate", slippage_rate, 1.0)
    if not (math.isfinite(max_position_pct) and 0 < max_position_pct <= 100):
        raise ValueError(f"max_position_pct must be in (0, 100], got {max_position_pct!r}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError(f"order {order.order_id}: seq must be an integer >= 1, got {seq!r}")

    duplicate = duplicate_reason(book, order.order_id)
    if duplicate is not None:
        return OrderDecision("duplicate", duplicate)

    position = book.positions.get(order.symbol)
    if order.signal == -1:
        if position is None:
            return OrderDecision("noop", "no position")
        fill = _sell_fill(book, position, order.order_id, "spot", order.price, order.ts_event,
                          fee_rate, slippage_rate, seq)
        return OrderDecision("filled", "exit", fill)

    if position is not None:
        return OrderDecision("noop", "already long")
    blocked = entry_block_reason(book.risk, order.ts_event)
    if blocked is not None:
        return OrderDecision("rejected", blocked)
    book_value = book.cash + sum(p.quantity * p.avg_price for p in book.positions.values())
    pct = min(max_position_pct, risk_limits.max_position_pct)
    notional = min(book.cash, pct / 100.0 * book_value)
    if notional < DUST_NOTIONAL_USD:
        return OrderDecision("rejected", "insufficient cash")
    exec_price = order.price * (1.0 + slippage_rate)
    quantity = notional / (exec_price * (1.0 + fee_rate))
    fill = Fill(
        seq=seq,
        order_id=order.order_id,
        strategy_id=book.strategy_id,
        kind="spot",
        instrument=order.symbol,
        side="buy",
        quantity=quantity,
        price=exec_price,
        fee=max(notional - quantity * exec_price, 0.0),
        cash_delta=-notional,
        realized_pnl=0.0,
        ts_event=order.ts_event,
    )
    return OrderDecision("filled", "entry", fill)


def liquidation_orders(book: StrategyBook, prices: Mapping[str, float], ts_event: int, *,
                       fee_rate: float, slippage_rate: float, first_seq: int) -> list[Fill]:
    """Fills (kind 'liquidation') closing every spot position at its mark, for a tripped
    kill switch. Fees and slippage apply as for any sell; seqs run from ``first_seq``."""
    check_rate("fee_rate", fee_rate, 1.0)
    check_rate("slippage_rate", slippage_rate, 1.0)
    fills = []
    for i, (symbol, position) in enumerate(sorted(book.positions.items())):
        price = _mark(book, prices, symbol)
        order_id = f"{book.strategy_id}:liquidate:{ts_event}:{symbol}"
        fills.append(_sell_fill(book, position, order_id, "liquidation", price, ts_event,
                                fee_rate, slippage_rate, first_seq + i))
    return fills


def _remember_order(book: StrategyBook, order_id: str, seq: int) -> None:
    """LRU of answered order ids: re-inserting moves an id to the young end."""
    ids = book.recent_order_ids
    ids.pop(order_id, None)
    ids[order_id] = seq
    if len(ids) > RECENT_ORDER_IDS:
        del ids[next(iter(ids))]


def apply_fill(book: StrategyBook, fill: Fill) -> None:
    """Book a decided fill: cash, spot positions, trade bookkeeping.

    Every kind moves cash by ``fill.cash_delta``; kinds 'spot' and 'liquidation' also move
    ``book.positions``. Option and settlement fills leave ``option_positions`` to the options
    code (their position change travels in ``fill.extra``). Risk is the caller's: feed a
    closing fill's ``realized_pnl`` to ``risk.update_on_trade_closed``.
    """
    if fill.strategy_id != book.strategy_id:
        raise ValueError(
            f"fill seq {fill.seq}: strategy_id {fill.strategy_id!r} does not match book {book.strategy_id!r}"
        )
    if fill.kind not in FILL_KINDS:
        raise ValueError(f"fill seq {fill.seq}: kind must be one of {FILL_KINDS}, got {fill.kind!r}")
    if fill.kind in _SPOT_POSITION_KINDS:
        _move_spot_position(book, fill)
    book.cash += fill.cash_delta
    book.trade_count += 1
    book.recent_trades.append(fill.to_dict())
    if len(book.recent_trades) > RECENT_TRADES:
        del book.recent_trades[0]
    _remember_order(book, fill.order_id, fill.seq)
    if fill.ts_event > book.last_ts:
        book.last_ts = fill.ts_event


def _move_spot_position(book: StrategyBook, fill: Fill) -> None:
    position = book.positions.get(fill.instrument)
    if fill.side == "buy":
        cost = -fill.cash_delta
        if position is None:
            book.positions[fill.instrument] = Position(
                fill.instrument, fill.quantity, cost / fill.quantity, fill.ts_event
            )
        else:
            quantity = position.quantity + fill.quantity
            position.avg_price = (position.quantity * position.avg_price + cost) / quantity
            position.quantity = quantity
        return
    if position is None:
        raise ValueError(f"fill seq {fill.seq}: sells {fill.instrument} but {book.strategy_id} holds none")
    if fill.quantity >= position.quantity * (1.0 - _CLOSE_TOLERANCE):
        del book.positions[fill.instrument]
    else:
        position.quantity -= fill.quantity


def closes_a_trade(fill: Fill) -> bool:
    """Whether a fill ends a trade with a realized P&L (what risk's loss streak counts): an
    option close or settlement, or coins sold (an exit, an assigned call, a liquidation)."""
    if fill.kind == "settlement" or fill.extra.get("action") == "close":
        return True
    return fill.side == "sell" and fill.kind in ("spot", "liquidation")


def duplicate_reason(book: StrategyBook, order_id: str) -> str | None:
    """Why ``order_id`` is a retry of an order this book already answered, or None."""
    previous = book.recent_order_ids.get(order_id)
    if previous is None:
        return None
    answer = f"filled as seq {previous}" if previous else "answered without a fill"
    return f"order {order_id} already {answer}"


def record_no_fill(book: StrategyBook, order_id: str) -> None:
    """Remember an order answered without a fill, so its retry is a 'duplicate', not a trade."""
    _remember_order(book, order_id, 0)


def _mark(book: StrategyBook, prices: Mapping[str, float], symbol: str) -> float:
    price = prices.get(symbol)
    if price is None or not math.isfinite(price) or price <= 0:
        raise MissingPriceError(f"{book.strategy_id}: no usable price for held {symbol} (got {price!r})")
    return price


def portfolio_value(book: StrategyBook, prices: Mapping[str, float], option_value: float = 0.0) -> float:
    """Cash + spot positions at ``prices`` + ``option_value`` (the options code's mark of
    ``option_positions``, passed in so this module needs no option pricing)."""
    value = book.cash + option_value
    for symbol, position in book.positions.items():
        value += position.quantity * _mark(book, prices, symbol)
    return value


def book_to_dict(book: StrategyBook) -> dict[str, Any]:
    return {
        "strategy_id": book.strategy_id,
        "kind": book.kind,
        "initial_capital": book.initial_capital,
        "cash": book.cash,
        "positions": {
            s: {"symbol": p.symbol, "quantity": p.quantity, "avg_price": p.avg_price, "opened_ts": p.opened_ts}
            for s, p in book.positions.items()
        },
        "option_positions": {name: dict(p) for name, p in book.option_positions.items()},
        "trade_count": book.trade_count,
        "recent_trades": [dict(t) for t in book.recent_trades],
        "risk": book.risk.to_dict(),
        "recent_order_ids": dict(book.recent_order_ids),
        "last_ts": book.last_ts,
    }


def read_usd(d: Mapping[str, Any], name: str, where: str, *, positive: bool = False) -> float:
    """An amount of money from a state file: finite, within +-MAX_USD, and > 0 if ``positive``."""
    value = read_number(d, name, where)
    if positive and value <= 0:
        raise RecordError(f"{where}.{name}: must be > 0, got {value!r}")
    if abs(value) > MAX_USD:
        raise RecordError(f"{where}.{name}: {value!r} is out of range (|amount| <= {MAX_USD:g} USD)")
    return value


def _position_from_dict(d: Any, key: str, where: str) -> Position:
    read_object(d, where)
    symbol = read_str(d, "symbol", where)
    if symbol != key:
        raise RecordError(f"{where}.symbol: {symbol!r} does not match its key {key!r}")
    quantity = read_number(d, "quantity", where)
    if quantity <= 0:
        raise RecordError(f"{where}.quantity: must be > 0, got {quantity!r}")
    avg_price = read_usd(d, "avg_price", where, positive=True)
    if quantity * avg_price > MAX_USD:
        raise RecordError(f"{where}: quantity x avg_price = {quantity * avg_price:g} USD is out of range "
                          f"(<= {MAX_USD:g})")
    return Position(symbol, quantity, avg_price, read_int(d, "opened_ts", where))


def _child(d: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in d:
        raise RecordError(f"{where}.{name}: missing")
    return d[name]


def book_from_dict(d: Mapping[str, Any], where: str, *, check_trades: bool = True) -> StrategyBook:
    """Rebuild a book from state.json, naming the exact key path of anything wrong: money is
    finite and within +-MAX_USD, quantities are positive. ``option_positions`` are only
    checked to be objects here; ``trading.option_book.read_option_positions`` checks their fields.
    ``check_trades=False`` takes ``recent_trades`` as they are (a save checking a state it
    built from fills; they are the bulk of the work)."""
    read_object(d, where)
    kind = read_str(d, "kind", where)
    if kind not in BOOK_KINDS:
        raise RecordError(f"{where}.kind: must be one of {BOOK_KINDS}, got {kind!r}")
    initial_capital = read_usd(d, "initial_capital", where, positive=True)
    positions_d = read_object(_child(d, "positions", where), f"{where}.positions")
    options_d = read_object(_child(d, "option_positions", where), f"{where}.option_positions")
    ids_d = read_object(_child(d, "recent_order_ids", where), f"{where}.recent_order_ids")
    trades = _child(d, "recent_trades", where)
    if not isinstance(trades, list):
        raise RecordError(f"{where}.recent_trades: expected a list, got {type(trades).__name__}")
    recent_order_ids: dict[str, int] = {}
    for order_id in list(ids_d)[-RECENT_ORDER_IDS:]:
        recent_order_ids[order_id] = read_int(ids_d, order_id, f"{where}.recent_order_ids", minimum=0)
    risk_d = read_object(_child(d, "risk", where), f"{where}.risk")
    for name in ("peak_value", "day_start_value", "last_value"):
        read_usd(risk_d, name, f"{where}.risk")
    return StrategyBook(
        strategy_id=read_str(d, "strategy_id", where),
        kind=kind,
        initial_capital=initial_capital,
        cash=read_usd(d, "cash", where),
        positions={s: _position_from_dict(p, s, f"{where}.positions.{s}") for s, p in positions_d.items()},
        option_positions={
            name: dict(read_object(p, f"{where}.option_positions.{name}")) for name, p in options_d.items()
        },
        trade_count=read_int(d, "trade_count", where, minimum=0),
        recent_trades=[
            Fill.from_dict(t, f"{where}.recent_trades[{i}]").to_dict() if check_trades else t
            for i, t in enumerate(trades[-RECENT_TRADES:])
        ],
        risk=RiskState.from_dict(risk_d, f"{where}.risk"),
        recent_order_ids=recent_order_ids,
        last_ts=read_int(d, "last_ts", where),
    )


def rebuild_books_from_journal(
    fills: Iterable[Fill], initial: Mapping[str, tuple[str, float, int]]
) -> dict[str, StrategyBook]:
    """Books as the journal alone says they are: fresh books from ``initial``
    (strategy_id -> (kind, capital, ts)) with every fill applied in order. Risk state is not
    derivable from fills, so compare cash, positions and trade counts, not risk."""
    books = {sid: new_book(sid, kind, capital, ts) for sid, (kind, capital, ts) in initial.items()}
    for fill in fills:
        book = books.get(fill.strategy_id)
        if book is None:
            raise ValueError(f"journal fill seq {fill.seq}: unknown strategy {fill.strategy_id!r}")
        apply_fill(book, fill)
    return books
