"""What the portfolio checks an option order against: the pricer's listed chain, never the sender's word.

An option order claims a contract, a multiplier, a premium, greeks and a score. The portfolio
keeps none of those claims: it asks the pricer for the chain of each (underlying, venue) the
order trades (``quotes_from_chain`` reads that reply without numpy), and
``price_option_order`` answers with the order as the portfolio prices it, or why not:

- the contract must be listed in that chain (the venue's calendar and strike grid; in live
  mode the instruments the venue really lists), on the strategy's own venue and underlying,
  with the venue's multiplier;
- each leg's quantity must be on the venue's step and at least its minimum, and a sold
  opening leg may not sell more than ``MAX_SHORT_NOTIONAL_TO_VALUE`` x the book's value in
  coins at spot (the strategies sell only what cash or coins secure: about 1x);
- the declared premium is the chain's mark at the order's time, up to a bar (a day, with the
  default options timeframe) and the transit allowance before the pricer's mark now. So the
  mark is first taken back to the order's time along its delta (``mark + delta x (spot then
  - spot now)``, spot then from the portfolio's own ticks), and the declared premium must
  lie within ``band_pct`` % of the larger of that and ``BAND_FLOOR_OF_SPOT`` of spot, plus
  what the delta leaves out: ``VOL_POINTS_IN_FLIGHT`` vol points of vega and the theta of
  the days in between. The fill is at the pricer's mark now with its greeks whatever was
  declared, so the band only has to catch premiums that cannot come from this market;
- coins an order buys with its legs (``spot_quantity``) are bought at the pricer's spot, and
  the declared spot must lie within ``band_pct`` % of the portfolio's own tick at the order's
  time;
- the score is the portfolio's own (``options.scoring.score_trade`` on its book's positions
  of that venue and underlying, at the pricer's spot and greeks; a structure's legs share
  their mean, as ``select_trades`` gives them). It is recomputed rather than required to
  match exactly, because the engine scores a batch against a book that may include a
  structure its risk check then dropped, and against greeks one mark older: honest scores
  differ a little, or are lower. A declared score more than ``SCORE_TOLERANCE`` above the
  portfolio's is a claim the book does not support and is refused; otherwise the order is
  decided (and booked) with the portfolio's score, which alone meets ``min_score``.

Pure: the pricer's reply, the book's positions and times come in as arguments.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.timeframes import DAY_MS
from options.chain_wire import CHAIN_COLUMNS, CHAIN_HORIZON_DAYS
from options.contracts import ContractError, OptionContract, OptionPosition, ProposedTrade
from options.scoring import score_trade
from options.venues import VenueConfigError, venue_spec
from trading.option_book import OptionLeg, OptionOrder
from trading.order_checks import OK, REJECTED, backdated_reason, band_reason

_ARRAY_CODES = {"<i8": "q", "<f8": "d", "|b1": "b"}
GREEKS = ("delta", "gamma", "theta", "vega")
SCORE_TOLERANCE = 0.05
BAND_FLOOR_OF_SPOT = 0.1
VOL_POINTS_IN_FLIGHT = 5.0
MAX_SHORT_NOTIONAL_TO_VALUE = 10.0
_STEP_TOLERANCE = 1e-6


class ChainQuoteError(ValueError):
    """A pricer ``chain`` reply that does not describe a chain; the message names the field."""


@dataclass(frozen=True, slots=True)
class OptionQuote:
    """The pricer's mark (USD per coin) and per-coin greeks of one listed contract."""

    mark_usd: float
    greeks: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class OptionMarket:
    """What the pricer says of the contracts of one order: listed ones only, by name."""

    ts: int
    spot: Mapping[str, float]  # underlying -> the spot the chain was priced at
    quotes: Mapping[str, OptionQuote]


@dataclass(frozen=True, slots=True)
class OptionCheck:
    """``order`` is the order as the portfolio prices it, set when ``status == 'ok'``."""

    status: str  # "ok" | "rejected"
    reason: str
    order: OptionOrder | None = None


def _column(columns: Mapping[str, Any], name: str, size: int) -> array[Any]:  # ints, floats or bools by column
    dtype = CHAIN_COLUMNS[name]
    raw = columns.get(name)
    values = array(_ARRAY_CODES[dtype])
    if not isinstance(raw, bytes) or len(raw) != size * values.itemsize:
        got = f"{len(raw)} bytes" if isinstance(raw, bytes) else type(raw).__name__
        raise ChainQuoteError(f"chain reply.columns.{name}: expected {size} x {values.itemsize} bytes, got {got}")
    values.frombytes(raw)
    if sys.byteorder == "big" and values.itemsize > 1:
        values.byteswap()
    return values


def chain_horizon_days(contracts: Sequence[OptionContract], ts: int) -> int:
    """Days of chain that list every one of ``contracts`` as of ``ts`` (a day of margin for a
    pricer clock a little behind), within the pricer's 1..``CHAIN_HORIZON_DAYS``."""
    furthest = max((c.expiry_ts for c in contracts), default=ts)
    return min(max(math.ceil((furthest - ts) / DAY_MS) + 1, 1), CHAIN_HORIZON_DAYS)


def quotes_from_chain(reply: Any, contracts: Sequence[OptionContract]) -> tuple[float, dict[str, OptionQuote]]:
    """(the chain's spot, quotes of those ``contracts`` the chain lists) from a ``chain`` reply.

    A contract of another venue or underlying, or one the chain does not list, gets no quote.
    A listed row whose mark or greeks are not finite is an error: the pricer cannot price it."""
    if not isinstance(reply, Mapping):
        raise ChainQuoteError(f"chain reply: expected an object, got {type(reply).__name__}")
    size, columns, spot = reply.get("size"), reply.get("columns"), reply.get("spot")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ChainQuoteError(f"chain reply.size: expected a row count >= 0, got {size!r}")
    if not isinstance(columns, Mapping):
        raise ChainQuoteError(f"chain reply.columns: expected an object, got {type(columns).__name__}")
    if isinstance(spot, bool) or not isinstance(spot, (int, float)) or not (math.isfinite(spot) and spot > 0):
        raise ChainQuoteError(f"chain reply.spot: expected a finite number > 0, got {spot!r}")
    wanted = [c for c in contracts if c.venue == reply.get("venue") and c.underlying == reply.get("underlying")]
    if not wanted:
        return float(spot), {}
    expiry, strike, is_call = (_column(columns, name, size) for name in ("expiry_ts", "strike", "is_call"))
    names = {(c.expiry_ts, float(c.strike), c.is_call): c.name for c in wanted}
    found: dict[str, int] = {}
    for row, key in enumerate(zip(expiry, strike, is_call)):  # one pass; is_call 0/1 matches False/True
        name = names.get(key)
        if name is not None and name not in found:
            found[name] = row
    if not found:
        return float(spot), {}
    marks = _column(columns, "mark", size)
    greeks = {g: _column(columns, g, size) for g in GREEKS}
    quotes = {}
    for name, row in found.items():
        values = {"mark": marks[row], **{g: greeks[g][row] for g in GREEKS}}
        bad = [k for k, v in values.items() if not math.isfinite(v)] + (["mark"] if marks[row] < 0 else [])
        if bad:
            raise ChainQuoteError(f"chain reply: {name} has a {bad[0]} of {values[bad[0]]!r}")
        quotes[name] = OptionQuote(float(marks[row]), {g: float(greeks[g][row]) for g in GREEKS})
    return float(spot), quotes


def leg_refusal(leg: OptionLeg, where: str, *, venue: str, underlying: str) -> str | None:
    """Why one leg is wrong whatever the market says: another venue or underlying than the
    strategy's, a multiplier other than the venue's, a quantity off the venue's step."""
    contract = leg.contract
    if venue and contract.venue != venue or underlying and contract.underlying != underlying:
        return (f"{where}: {contract.venue} {contract.underlying} is not traded by this strategy "
                f"({venue} {underlying})")
    try:
        spec = venue_spec(contract.venue).underlying(contract.underlying)
    except VenueConfigError as exc:
        return f"{where}: {exc}"
    if contract.multiplier != spec.multiplier:
        return f"{where}: multiplier {contract.multiplier:g} is not {contract.venue}'s {spec.multiplier:g}"
    steps = leg.quantity / spec.quantity_step
    off_step = abs(steps - round(steps)) > _STEP_TOLERANCE * max(steps, 1)
    if off_step or leg.quantity < spec.min_quantity * (1 - _STEP_TOLERANCE):
        return (f"{where}: quantity {leg.quantity:g} is not a multiple of {spec.quantity_step:g} contracts "
                f"of at least {spec.min_quantity:g}")
    return None


def order_refusal(order: OptionOrder, *, venue: str, underlying: str, market_ts: int, lag_ms: int) -> str | None:
    """Why an option order is refused before any price is asked for, or None."""
    late = backdated_reason(order.ts_event, market_ts, lag_ms)
    if late is not None:
        return late
    for i, leg in enumerate(order.legs):
        why = leg_refusal(leg, f"leg {i} ({leg.action} {leg.contract.name})", venue=venue, underlying=underlying)
        if why is not None:
            return why
    return None


def _own_scores(legs: Sequence[OptionLeg], quotes: Mapping[str, OptionQuote], positions: Sequence[OptionPosition],
                spot: float) -> list[tuple[float, Mapping[str, float]]]:
    """(score, parts) of each leg as the portfolio scores it: closes their fixed score, the
    opening legs the mean of their scores against the book (without each other)."""
    scored = []
    for leg in legs:
        quote = quotes[leg.contract.name]
        trade = ProposedTrade(leg.action, leg.contract, leg.side, leg.quantity, quote.mark_usd, quote.greeks,
                              leg.reason)
        breakdown = score_trade(trade, positions, spot)
        scored.append((breakdown.total, breakdown.parts))
    opening = [total for leg, (total, _) in zip(legs, scored) if leg.action == "open"]
    mean = sum(opening) / len(opening) if opening else 0.0
    return [(mean if leg.action == "open" else total, parts) for leg, (total, parts) in zip(legs, scored)]


def price_option_order(order: OptionOrder, market: OptionMarket, book_positions: Sequence[OptionPosition], *,
                       venue: str, underlying: str, book_value: float, market_ts: int, lag_ms: int,
                       band_pct: float, spot_at_order: Mapping[str, float] | None = None) -> OptionCheck:
    """The order as the portfolio prices it (premium and greeks from the pricer, its own score,
    the pricer's spot), or why it is refused; see the module docstring for every rule.
    ``spot_at_order`` is the portfolio's own price of each coin at the order's time."""
    why = order_refusal(order, venue=venue, underlying=underlying, market_ts=market_ts, lag_ms=lag_ms)
    if why is not None:
        return OptionCheck(REJECTED, why)
    coin = order.legs[0].contract.underlying
    own_spot = (spot_at_order or {}).get(coin)
    if order.spot_quantity and own_spot is not None:  # coins bought with the legs: at the pricer's spot
        off = band_reason(order.spot, own_spot, band_pct, f"{coin} spot")
        if off is not None:
            return OptionCheck(REJECTED, off)
    for i, leg in enumerate(order.legs):
        where = f"leg {i} ({leg.action} {leg.contract.name})"
        quote = market.quotes.get(leg.contract.name)
        spot = market.spot.get(leg.contract.underlying)
        if quote is None or spot is None:
            return OptionCheck(REJECTED, f"{where}: not listed in the pricer's {leg.contract.venue} "
                                         f"{leg.contract.underlying} chain")
        then = (spot_at_order or {}).get(leg.contract.underlying, spot)
        mark_then = max(quote.mark_usd + quote.greeks.get("delta", 0.0) * (then - spot), 0.0)
        days = max(market.ts - order.ts_event, 0) / DAY_MS
        slack = abs(quote.greeks.get("vega", 0.0)) * VOL_POINTS_IN_FLIGHT + abs(quote.greeks.get("theta", 0.0)) * days
        off = band_reason(leg.premium_usd_per_coin, mark_then, band_pct, f"{where} premium",
                          BAND_FLOOR_OF_SPOT * spot, slack)
        if off is not None:
            return OptionCheck(REJECTED, off)
        if leg.action == "open" and leg.side < 0:
            sold = leg.quantity * leg.contract.multiplier * spot
            if not sold <= MAX_SHORT_NOTIONAL_TO_VALUE * max(book_value, 0.0):
                return OptionCheck(REJECTED, f"{where}: sells {sold:.2f} USD of {leg.contract.underlying} at spot, "
                                             f"more than {MAX_SHORT_NOTIONAL_TO_VALUE:g} x the book's value "
                                             f"{book_value:.2f}")
    try:
        scored: dict[int, tuple[float, Mapping[str, float]]] = {}  # id(leg) -> (score, parts)
        for u in {leg.contract.underlying for leg in order.legs}:
            legs = [leg for leg in order.legs if leg.contract.underlying == u]
            positions = [p for p in book_positions if p.contract.venue == legs[0].contract.venue
                         and p.contract.underlying == u]
            scored.update(zip(map(id, legs), _own_scores(legs, market.quotes, positions, market.spot[u])))
    except (ContractError, KeyError, TypeError, ValueError) as exc:
        return OptionCheck(REJECTED, f"cannot score against the book: {exc}")
    legs = []
    for i, leg in enumerate(order.legs):
        own, parts = scored[id(leg)]
        if leg.score > own + SCORE_TOLERANCE:
            return OptionCheck(REJECTED, f"leg {i} ({leg.action} {leg.contract.name}): declared score "
                                         f"{leg.score:.3f} is above the portfolio's own {own:.3f}")
        quote = market.quotes[leg.contract.name]
        legs.append(dataclasses.replace(leg, premium_usd_per_coin=quote.mark_usd, greeks=dict(quote.greeks),
                                        score=own, score_parts=dict(parts)))
    spot = market.spot[order.legs[0].contract.underlying]
    return OptionCheck(OK, "priced by the pricer", dataclasses.replace(order, spot=spot, legs=tuple(legs)))
