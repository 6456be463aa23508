"""Marking open options with real Deribit quotes: which listed instrument stands for a
position, what an expired one is worth, and coin premiums in USD.

Pure: the Deribit client (services/feeds/deribit.py) decodes venue payloads into the records below,
and the caller passes the market time in.

Mapping rule, for Deribit and IBKR/CME positions alike (CME micro options are marked with
Deribit as the proxy):
1. the exact Deribit instrument: same expiry date, strike and side (``BTC-13MAR26-75000-C``);
2. else the listed Deribit expiry nearest to the position's expiry, with the same strike and
   side, among expiries still alive (ties go to the earlier one); the mapping records the
   original and mapped expiry and the days between, so the caller can log it;
3. else no mark (the caller keeps its model price and says so).
A contract past its expiry is never looked up: it is worth its intrinsic value at the
settlement price (0 when out of the money).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from common.timeframes import DAY_MS
from options.contracts import ContractError, OptionContract
from options.venues import DERIBIT, coin_to_usd, format_instrument_name


@dataclass(frozen=True, slots=True)
class ListedOption:
    """A Deribit option that exists right now (from get_instruments or a book summary)."""

    name: str
    underlying: str
    expiry_ts: int
    strike: float
    is_call: bool


@dataclass(frozen=True, slots=True)
class OptionQuote:
    """Deribit's mark of one instrument. ``mark_coin`` is coin per coin of underlying;
    ``mark_iv`` is a fraction (0.3825), not Deribit's percent."""

    name: str
    mark_coin: float
    mark_iv: float | None
    underlying_price: float | None
    ts: int

    def __post_init__(self) -> None:
        if not (isinstance(self.mark_coin, (int, float)) and math.isfinite(self.mark_coin) and self.mark_coin >= 0):
            raise ContractError(f"quote {self.name}: mark_price must be a finite number >= 0, got {self.mark_coin!r}")


@dataclass(frozen=True, slots=True)
class InstrumentMapping:
    """Which listed instrument marks a position. ``days_shift`` = mapped - original expiry."""

    contract: OptionContract
    listed: ListedOption
    exact: bool

    @property
    def days_shift(self) -> float:
        return (self.listed.expiry_ts - self.contract.expiry_ts) / DAY_MS


@dataclass(frozen=True, slots=True)
class LiveMark:
    """A position's mark in USD per coin of underlying, and where it came from.

    ``source``: ``exact`` | ``mapped`` (nearest real expiry) | ``settled`` (expired).
    """

    contract: OptionContract
    mark_usd: float
    source: str
    instrument: str | None
    index_price: float
    mark_iv: float | None = None
    days_shift: float = 0.0
    underlying_price: float | None = None  # the listed instrument's forward (Deribit's underlying_price)


def deribit_name(contract: OptionContract) -> str:
    """The Deribit instrument with the contract's expiry date, strike and side (an IBKR
    ``MBT-27NOV26-90000-C`` becomes ``BTC-27NOV26-90000-C``)."""
    return format_instrument_name(DERIBIT, contract.underlying, contract.expiry_ts, contract.strike,
                                  contract.is_call)


def map_to_listed(contract: OptionContract, listed: Iterable[ListedOption], ts_event: int) -> InstrumentMapping | None:
    """The exact listed instrument, else the nearest live expiry with the same strike and side."""
    exact_name = deribit_name(contract)
    same_line: list[ListedOption] = []
    for option in listed:
        if option.underlying != contract.underlying or option.is_call != contract.is_call:
            continue
        if option.name == exact_name and option.expiry_ts > ts_event:
            return InstrumentMapping(contract, option, exact=True)
        if math.isclose(option.strike, contract.strike, rel_tol=0, abs_tol=1e-9) and option.expiry_ts > ts_event:
            same_line.append(option)
    if not same_line:
        return None
    best = min(same_line, key=lambda o: (abs(o.expiry_ts - contract.expiry_ts), o.expiry_ts))
    return InstrumentMapping(contract, best, exact=False)


def settlement_value(contract: OptionContract, settlement_price: float) -> float:
    """USD per coin an expired European option pays: intrinsic at the settlement price."""
    if not (isinstance(settlement_price, (int, float)) and math.isfinite(settlement_price) and settlement_price > 0):
        raise ContractError(f"settlement_price for {contract.name}: must be a finite number > 0, "
                            f"got {settlement_price!r}")
    return contract.intrinsic(settlement_price)


def mark_positions(
    contracts: Sequence[OptionContract],
    listed: Sequence[ListedOption],
    quotes: Mapping[str, OptionQuote],
    index_price: float,
    ts_event: int,
    settlement_prices: Mapping[int, float] | None = None,
) -> tuple[dict[str, LiveMark], list[str]]:
    """Marks keyed by ``contract.name`` and a note for each contract left unmarked.

    Quotes are in coin and become USD at ``index_price`` (Deribit's inverse options). An
    expired contract settles at ``settlement_prices[expiry_ts]`` when known, else at the index.
    """
    if not (isinstance(index_price, (int, float)) and math.isfinite(index_price) and index_price > 0):
        raise ContractError(f"index_price: must be a finite number > 0, got {index_price!r}")
    settlements = settlement_prices or {}
    marks: dict[str, LiveMark] = {}
    unmarked: list[str] = []
    for contract in contracts:
        if contract.expiry_ts <= ts_event:
            price = settlements.get(contract.expiry_ts, index_price)
            marks[contract.name] = LiveMark(contract, settlement_value(contract, price), "settled", None, index_price)
            continue
        mapping = map_to_listed(contract, listed, ts_event)
        if mapping is None:
            unmarked.append(f"{contract.name}: no listed Deribit option with strike {contract.strike:g} "
                            f"{'call' if contract.is_call else 'put'}")
            continue
        quote = quotes.get(mapping.listed.name)
        if quote is None:
            unmarked.append(f"{contract.name}: no quote for {mapping.listed.name}")
            continue
        marks[contract.name] = LiveMark(
            contract, coin_to_usd(quote.mark_coin, index_price), "exact" if mapping.exact else "mapped",
            mapping.listed.name, index_price, quote.mark_iv, mapping.days_shift, quote.underlying_price,
        )
    return marks, unmarked
