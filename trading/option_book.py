"""Option positions in a strategy book: orders in, fills out, marks and expiry settlement.

Pure accounting, the options half of ``trading.ledger``: ``decide_option_order`` and
``settle_expired`` decide fills without touching the book; ``apply_option_fill`` books the
position change of a journaled fill (the ledger's ``apply_fill`` moves its cash), so the
journal alone rebuilds every option position.

Money, per leg of ``quantity`` contracts of ``multiplier`` coins at ``premium`` USD per coin:
``cash_delta = -side * quantity * multiplier * premium - fee`` with
``fee = fee_rate * quantity * multiplier * premium``. A position keeps the fee-inclusive cash
it opened with per contract (``open_cash_per_contract``: negative when paid, positive when
received), so a close's ``realized_pnl = its cash_delta + contracts closed x that`` and a
round trip's realized P&L equals its change in cash, as for spot.

At expiry (market time), at the underlying's price then (the tick nearest the expiry time,
though the book is marked after it): an in-the-money long receives ``intrinsic x coins``, a
short pays it, out of the money nothing moves; the position is gone either way. Two exceptions
deliver coins instead of cash, as the wheel needs: a short put of a book that ``assign_puts``
buys the coins at the strike into its spot position, and a short call against coins the book
holds sells those coins at the strike. Deliveries are spot-kind fills beside the settlement
fill.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.model import Fill, RecordError, read_int, read_number, read_object, read_str
from options.contracts import ContractError, OptionContract, OptionPosition, ProposedTrade
from trading.ledger import StrategyBook, check_rate, duplicate_reason
from trading.order_checks import PriceTape

ACTIONS = ("open", "close")
# A close within this fraction of the held quantity closes the position (float residue).
_CLOSE_TOLERANCE = 1e-9


class OptionOrderError(RecordError):
    """An option order or leg that is not valid; the message names the field."""


@dataclass(frozen=True, slots=True)
class OptionLeg:
    """One contract of a structure, priced at the chain's mark (USD per coin)."""

    contract: OptionContract
    side: int  # +1 buy, -1 sell
    quantity: float  # contracts, > 0
    premium_usd_per_coin: float
    greeks: Mapping[str, float]  # per coin
    score: float
    reason: str
    action: str  # "open" | "close"
    score_parts: Mapping[str, float] = field(default_factory=dict)

    @property
    def coins(self) -> float:
        """Signed coins this leg adds to the book."""
        return self.side * self.quantity * self.contract.multiplier

    def to_dict(self) -> dict[str, Any]:
        return {"contract": self.contract.to_dict(), "side": self.side, "quantity": float(self.quantity),
                "premium_usd_per_coin": float(self.premium_usd_per_coin),
                "greeks": {k: float(v) for k, v in self.greeks.items()}, "score": float(self.score),
                "reason": self.reason, "action": self.action,
                "score_parts": {k: float(v) for k, v in self.score_parts.items()}}

    @classmethod
    def from_dict(cls, d: Any, where: str = "leg") -> "OptionLeg":
        read_object(d, where)
        try:
            contract = OptionContract.from_dict(d.get("contract"), f"{where}.contract")
        except ContractError as exc:
            raise OptionOrderError(str(exc)) from None
        side = read_int(d, "side", where)
        if side not in (1, -1):
            raise OptionOrderError(f"{where}.side: must be 1 (buy) or -1 (sell), got {side!r}")
        quantity = read_number(d, "quantity", where)
        if quantity <= 0:
            raise OptionOrderError(f"{where}.quantity: must be > 0, got {quantity!r}")
        action = read_str(d, "action", where)
        if action not in ACTIONS:
            raise OptionOrderError(f"{where}.action: must be one of {ACTIONS}, got {action!r}")
        return cls(contract, side, quantity, read_number(d, "premium_usd_per_coin", where, minimum=0.0),
                   _numbers(d.get("greeks", {}), f"{where}.greeks"), read_number(d, "score", where),
                   read_str(d, "reason", where), action, _numbers(d.get("score_parts", {}), f"{where}.score_parts"))


def _numbers(d: Any, where: str) -> dict[str, float]:
    return {key: read_number(d, key, where) for key in read_object(d, where)}


@dataclass(frozen=True, slots=True)
class OptionOrder:
    """One structure (a strangle, a single put, a close) for one strategy: all legs or none.

    ``order_id`` is ``<strategy_id>:<ts_event>:<group or leg>``, so a retried structure is
    recognised whole and never filled twice. ``spot_quantity`` coins of the underlying are
    bought at ``spot`` with the legs, all or nothing (a buy-write, a married put).
    """

    order_id: str
    strategy_id: str
    ts_event: int
    spot: float  # the underlying's price the legs were priced at
    legs: tuple[OptionLeg, ...]
    spot_quantity: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = {"order_id": self.order_id, "strategy_id": self.strategy_id, "ts_event": self.ts_event,
             "spot": float(self.spot), "legs": [leg.to_dict() for leg in self.legs]}
        return d | {"spot_quantity": float(self.spot_quantity)} if self.spot_quantity else d

    @classmethod
    def from_dict(cls, d: Any, where: str = "option_order") -> "OptionOrder":
        try:
            return cls._from_dict(d, where)
        except OptionOrderError:
            raise
        except RecordError as exc:
            raise OptionOrderError(str(exc)) from None

    @classmethod
    def _from_dict(cls, d: Any, where: str) -> "OptionOrder":
        read_object(d, where)
        legs = d.get("legs")
        if not isinstance(legs, list) or not legs:
            raise OptionOrderError(f"{where}.legs: expected a non-empty list of legs, got {legs!r}")
        spot = read_number(d, "spot", where)
        if spot <= 0:
            raise OptionOrderError(f"{where}.spot: must be > 0, got {spot!r}")
        spot_quantity = read_number(d, "spot_quantity", where, minimum=0.0) if "spot_quantity" in d else 0.0
        return cls(read_str(d, "order_id", where), read_str(d, "strategy_id", where), read_int(d, "ts_event", where),
                   spot, tuple(OptionLeg.from_dict(leg, f"{where}.legs[{i}]") for i, leg in enumerate(legs)),
                   spot_quantity)


def option_order_id(strategy_id: str, ts_event: int, label: str) -> str:
    return f"{strategy_id}:{ts_event}:{label}"


def option_orders(strategy_id: str, ts_event: int, spot: float, trades: Sequence[ProposedTrade],
                  score_parts: Sequence[Mapping[str, float]] | None = None) -> list[OptionOrder]:
    """One order per structure: the legs of a group together, every other trade alone."""
    parts = list(score_parts) if score_parts is not None else [{} for _ in trades]
    if len(parts) != len(trades):
        raise OptionOrderError(f"score_parts: {len(parts)} entries for {len(trades)} trades")
    structures: dict[str, list[OptionLeg]] = {}
    coins: dict[str, float] = {}
    for trade, trade_parts in zip(trades, parts):
        label = f"{trade.action}-{trade.group}" if trade.group else f"{trade.action}-{trade.contract.name}"
        structures.setdefault(label, []).append(OptionLeg(
            trade.contract, trade.side, trade.quantity, trade.premium, dict(trade.greeks), trade.score,
            trade.reason, trade.action, dict(trade_parts)))
        coins[label] = coins.get(label, 0.0) + trade.spot_coins
    return [OptionOrder(option_order_id(strategy_id, ts_event, label), strategy_id, ts_event, spot, tuple(legs),
                        coins[label]) for label, legs in structures.items()]


@dataclass(frozen=True, slots=True)
class OptionOrderDecision:
    """The answer to an option order: ``fills`` (one per leg) only when ``status == 'filled'``."""

    status: str  # "filled" | "rejected" | "duplicate"
    reason: str
    fills: tuple[Fill, ...] = ()


def _reject(reason: str) -> OptionOrderDecision:
    return OptionOrderDecision("rejected", reason)


def decide_option_order(book: StrategyBook, order: OptionOrder, *, fee_rate: float, seq0: int,
                        max_positions: int, min_score: float,
                        entry_block: str | None = None, quote: str = "USDT") -> OptionOrderDecision:
    """Decide (without mutating) the fills of an order; one bad leg rejects the whole order.

    A leg is refused when its score is below ``min_score``, it opens an expired contract or
    one the book holds the other way, or it closes more than the book holds; the order is
    refused when it would leave more than ``max_positions`` open, when it opens anything
    while ``entry_block`` says why not (kill switch, circuit breaker), or when its net
    premium is more than the book's cash. Fill seqs run from ``seq0``. An order's spot leg
    (``spot_quantity`` coins of ``<underlying>/<quote>`` at ``spot``, fee as a leg's) is one
    more fill after the legs, inside the same all-or-nothing decision and cash check.
    """
    if order.strategy_id != book.strategy_id:
        raise ValueError(f"order {order.order_id}: strategy_id {order.strategy_id!r} does not match book "
                         f"{book.strategy_id!r}")
    if book.kind != "options":
        raise ValueError(f"order {order.order_id}: book {book.strategy_id} is a {book.kind} book, not options")
    check_rate("fee_rate", fee_rate, 1.0)
    if isinstance(seq0, bool) or not isinstance(seq0, int) or seq0 < 1:
        raise ValueError(f"order {order.order_id}: seq0 must be an integer >= 1, got {seq0!r}")
    duplicate = duplicate_reason(book, order.order_id)
    if duplicate is not None:
        return OptionOrderDecision("duplicate", duplicate)
    held = {name: p.quantity for name, p in book.option_positions.items()}
    fills = []
    for i, leg in enumerate(order.legs):
        name = leg.contract.name
        where = f"leg {i} ({leg.action} {name})"
        if leg.score < min_score:
            return _reject(f"{where}: score {leg.score:.3f} < {min_score:g}")
        position = held.get(name, 0.0)
        if leg.action == "open":
            if leg.contract.expiry_ts <= order.ts_event:
                return _reject(f"{where}: expired at {leg.contract.expiry_ts}")
            if position * leg.side < 0:
                return _reject(f"{where}: the book holds {position:g} the other way; close it instead")
            if entry_block is not None:
                return _reject(f"{where}: {entry_block}")
        elif position * leg.side >= 0 or leg.quantity > abs(position) * (1 + _CLOSE_TOLERANCE):
            return _reject(f"{where}: closes {leg.side * leg.quantity:+g} but the book holds {position:g}")
        fills.append(_leg_fill(book, order, leg, fee_rate, seq0 + i))
        held[name] = position + leg.side * leg.quantity
        if abs(held[name]) <= abs(position) * _CLOSE_TOLERANCE:
            del held[name]
    if len(held) > max_positions:
        return _reject(f"would hold {len(held)} option positions > max {max_positions}")
    if order.spot_quantity:
        fills.append(_spot_leg_fill(book, order, fee_rate, seq0 + len(fills), quote))
    net = sum(f.cash_delta for f in fills)
    if book.cash + net < 0:
        return _reject(f"insufficient cash: needs {-net:.2f}, has {book.cash:.2f}")
    return OptionOrderDecision("filled", "; ".join(sorted({leg.reason for leg in order.legs})), tuple(fills))


def _leg_fill(book: StrategyBook, order: OptionOrder, leg: OptionLeg, fee_rate: float, seq: int) -> Fill:
    contract = leg.contract
    notional = leg.quantity * contract.multiplier * leg.premium_usd_per_coin
    fee = notional * fee_rate
    cash_delta = -leg.side * notional - fee
    realized = 0.0
    if leg.action == "close":
        realized = cash_delta + leg.quantity * book.option_positions[contract.name].open_cash_per_contract
    return Fill(
        seq=seq, order_id=order.order_id, strategy_id=book.strategy_id, kind="option", instrument=contract.name,
        side="buy" if leg.side > 0 else "sell", quantity=leg.quantity, price=leg.premium_usd_per_coin, fee=fee,
        cash_delta=cash_delta, realized_pnl=realized, ts_event=order.ts_event,
        extra={"action": leg.action, "contract": contract.to_dict(), "venue": contract.venue,
               "multiplier": contract.multiplier,
               "premium_usd_per_contract": leg.premium_usd_per_coin * contract.multiplier,
               "greeks": dict(leg.greeks), "score": leg.score, "score_parts": dict(leg.score_parts),
               "reason": leg.reason, "spot": order.spot},
    )


def _spot_leg_fill(book: StrategyBook, order: OptionOrder, fee_rate: float, seq: int, quote: str) -> Fill:
    """The coins an order buys with its legs, as a spot fill the ledger books (fee-inclusive cost)."""
    underlying = order.legs[0].contract.underlying
    notional = order.spot_quantity * order.spot
    fee = notional * fee_rate
    return Fill(
        seq=seq, order_id=order.order_id, strategy_id=book.strategy_id, kind="spot",
        instrument=f"{underlying}/{quote}", side="buy", quantity=order.spot_quantity, price=order.spot, fee=fee,
        cash_delta=-(notional + fee), realized_pnl=0.0, ts_event=order.ts_event,
        extra={"action": "spot_leg", "reason": "; ".join(sorted({leg.reason for leg in order.legs}))},
    )


def apply_option_fill(book: StrategyBook, fill: Fill) -> None:
    """Book the option position change of an 'option' or 'settlement' fill (cash is the ledger's)."""
    if fill.kind not in ("option", "settlement"):
        raise ValueError(f"fill seq {fill.seq}: kind {fill.kind!r} moves no option position")
    try:
        contract = OptionContract.from_dict(fill.extra.get("contract"), f"fill seq {fill.seq}.extra.contract")
    except ContractError as exc:
        raise ValueError(str(exc)) from None
    name = contract.name
    signed = fill.quantity if fill.side == "buy" else -fill.quantity
    position = book.option_positions.get(name)
    if position is None or position.quantity * signed > 0:
        if fill.kind == "settlement":
            raise ValueError(f"fill seq {fill.seq}: settles {name} but {book.strategy_id} holds none")
        book.option_positions[name] = _open_or_add(fill, contract, signed, position)
        return
    held = position.quantity
    if abs(signed) > abs(held) * (1 + _CLOSE_TOLERANCE):
        raise ValueError(f"fill seq {fill.seq}: closes {signed:+g} of {name} but {book.strategy_id} holds {held:g}")
    remaining = held + signed
    if abs(remaining) <= abs(held) * _CLOSE_TOLERANCE:
        del book.option_positions[name]
    else:
        book.option_positions[name] = dataclasses.replace(position, quantity=remaining)


def _open_or_add(fill: Fill, contract: OptionContract, signed: float,
                 position: OptionPosition | None) -> OptionPosition:
    """The position after an opening fill: a new one at the fill's price (its first mark), or
    ``position`` grown, its entry premium and opening cash the quantity-weighted means."""
    cash_per_contract = fill.cash_delta / fill.quantity
    if position is None:
        greeks = {k: float(v) for k, v in dict(fill.extra.get("greeks", {})).items()}
        return OptionPosition(contract, signed, fill.price, fill.ts_event, greeks,
                              open_cash_per_contract=cash_per_contract, current_mark=fill.price,
                              marked_ts=fill.ts_event, mark_source="entry", score=fill.extra.get("score"))
    held = abs(position.quantity)
    total = held + fill.quantity
    return dataclasses.replace(
        position, quantity=position.quantity + signed,
        entry_premium=(held * position.entry_premium + fill.quantity * fill.price) / total,
        open_cash_per_contract=(held * position.open_cash_per_contract + fill.cash_delta) / total)


def mark_option_positions(book: StrategyBook, marks: Mapping[str, Mapping[str, Any]], ts: int) -> float:
    """Write each marked position's current mark, value and greeks; return the book's option value.

    ``marks`` is name -> {mark_usd (USD per coin), delta, gamma, theta, vega, source}; a
    position without a mark keeps its last one. Every mark is checked before any is written,
    so a bad one (ValueError) leaves the whole book as it was.
    """
    marked = []
    for name in book.option_positions:
        mark = marks.get(name)
        if mark is None:
            continue
        price = mark.get("mark_usd") if isinstance(mark, Mapping) else None
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise ValueError(f"marks[{name!r}].mark_usd: expected a finite number >= 0, got {price!r}")
        marked.append((name, mark, price))
    for name, mark, price in marked:
        book.option_positions[name] = dataclasses.replace(
            book.option_positions[name], current_mark=float(price), marked_ts=ts,
            mark_source=str(mark.get("source", "pricer")),
            greeks={k: float(mark[k]) for k in ("delta", "gamma", "theta", "vega")
                    if isinstance(mark.get(k), (int, float)) and math.isfinite(mark[k])})
    return option_value(book)


def option_value(book: StrategyBook) -> float:
    """Signed USD value of the book's option positions at their last marks."""
    return sum(p.value_usd for p in book.option_positions.values())


def settle_expired(book: StrategyBook, tape: PriceTape, ts: int, *, first_seq: int,
                   assign_puts: bool = False, quote: str = "USDT") -> list[Fill]:
    """Fills settling every position expired by ``ts`` (decided, not booked), each at its
    underlying's price at its expiry: the tape's tick nearest the expiry time, whenever the
    book is marked after it. Positions whose underlying has no tick wait for one. Seqs run from
    first_seq."""
    fills: list[Fill] = []
    for name in sorted(book.option_positions):
        position = book.option_positions[name]
        contract = position.contract
        if contract.expiry_ts > ts:
            continue
        symbol = f"{contract.underlying}/{quote}"
        tick = tape.nearest(symbol, contract.expiry_ts)
        if tick is None:
            continue
        fills += _settlement(book, position, contract, tick, ts, first_seq + len(fills), assign_puts, symbol)
    return fills


def _settlement(book: StrategyBook, position: OptionPosition, contract: OptionContract, tick: tuple[int, float],
                ts: int, seq: int, assign_puts: bool, symbol: str) -> list[Fill]:
    spot_ts, spot = tick
    quantity = position.quantity
    coins = abs(quantity) * contract.multiplier
    intrinsic = contract.intrinsic(spot)
    delivered = 0.0
    if quantity < 0 and intrinsic > 0:
        if not contract.is_call and assign_puts:
            delivered = coins
        elif contract.is_call and symbol in book.positions:
            delivered = min(coins, book.positions[symbol].quantity)
    owed = intrinsic * (coins - delivered)
    cash_delta = (owed if quantity > 0 else -owed) if owed else 0.0
    order_id = f"{book.strategy_id}:settle:{contract.expiry_ts}:{contract.name}"
    settlement = Fill(
        seq=seq, order_id=order_id, strategy_id=book.strategy_id, kind="settlement", instrument=contract.name,
        side="sell" if quantity > 0 else "buy", quantity=abs(quantity), price=intrinsic, fee=0.0,
        cash_delta=cash_delta, realized_pnl=cash_delta + abs(quantity) * position.open_cash_per_contract,
        ts_event=ts,
        extra={"action": "settle", "contract": contract.to_dict(), "venue": contract.venue,
               "multiplier": contract.multiplier, "settle_spot": spot, "settle_spot_ts": spot_ts,
               "intrinsic": intrinsic, "in_the_money": intrinsic > 0, "assigned_coins": delivered},
    )
    if delivered == 0:
        return [settlement]
    buy = not contract.is_call
    held = book.positions.get(symbol)
    delivery = Fill(
        seq=seq + 1, order_id=f"{order_id}:assignment", strategy_id=book.strategy_id, kind="spot",
        instrument=symbol, side="buy" if buy else "sell", quantity=delivered, price=contract.strike, fee=0.0,
        cash_delta=(-1.0 if buy else 1.0) * delivered * contract.strike,
        realized_pnl=0.0 if buy or held is None else delivered * (contract.strike - held.avg_price),
        ts_event=ts, extra={"action": "assignment", "option": contract.name, "settle_spot": spot},
    )
    return [settlement, delivery]
