"""Listed option contracts and open option positions.

Strategies never invent a contract: they pick an expiry from :func:`listed_expiries` and a
strike from :func:`listed_strikes` (through the chain built on them), and every name
round-trips through :func:`parse_instrument_name`.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from common.model import MAX_TS_MS, RecordError, read_bool, read_int, read_number, read_object, read_str
from common.timeframes import DAY_MS
from options.venues import MONTH_CODES, VENUES, VenueConfigError, VenueSpec, format_instrument_name, venue_spec

# Contracts remembered by fields and by name: the open positions (at most 4 per strategy)
# and the few a batch proposes. 4096 of each (about 650 bytes a contract) filled up over
# market years in every service that reads books: 2.7 MB each; 256 hold the working set.
KNOWN_CONTRACTS = 256
_NAME = re.compile(r"^([A-Z]+)-(\d{1,2})([A-Z]{3})(\d{2})-(\d+(?:d\d+)?)-([CP])$")


class ContractError(RecordError):
    """An option contract, position or name that is not valid; the message names the field."""


@dataclass(frozen=True, slots=True)
class OptionContract:
    """One listed European option. ``multiplier`` is coins per contract."""

    venue: str
    underlying: str
    expiry_ts: int  # ms, the venue's expiry instant
    strike: float  # USD
    is_call: bool
    multiplier: float

    def __post_init__(self) -> None:
        try:
            venue_spec(self.venue).underlying(self.underlying)
        except VenueConfigError as exc:
            raise ContractError(f"contract.venue/underlying: {exc}") from None
        if isinstance(self.expiry_ts, bool) or not isinstance(self.expiry_ts, int):
            raise ContractError(f"contract.expiry_ts: expected int ms, got {self.expiry_ts!r}")
        if not 0 <= self.expiry_ts <= MAX_TS_MS:  # its name is a calendar date: the year must exist
            raise ContractError(f"contract.expiry_ts: must be ms from 1970 to the year 9999 "
                                f"(0..{MAX_TS_MS}), got {self.expiry_ts!r}")
        for name in ("strike", "multiplier"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not (math.isfinite(value) and value > 0)):
                raise ContractError(f"contract.{name}: must be a finite number > 0, got {value!r}")
        if not isinstance(self.is_call, bool):
            raise ContractError(f"contract.is_call: expected bool, got {self.is_call!r}")

    @property
    def name(self) -> str:
        return _instrument_name(self)

    def intrinsic(self, spot: float) -> float:
        """USD per coin the option pays at expiry with the underlying at ``spot``: what an expired
        contract is marked at and settles for."""
        return max(spot - self.strike, 0.0) if self.is_call else max(self.strike - spot, 0.0)

    def dte_days(self, ts_event: int) -> float:
        """Calendar days to expiry at ts_event (negative once expired)."""
        return (self.expiry_ts - ts_event) / DAY_MS

    def to_dict(self) -> dict[str, Any]:
        return {"venue": self.venue, "underlying": self.underlying, "expiry_ts": self.expiry_ts,
                "strike": float(self.strike), "is_call": self.is_call, "multiplier": float(self.multiplier)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "contract") -> "OptionContract":
        """The contract ``d`` describes; one seen before is the same object (``_known_contract``)."""
        try:
            return _known_contract(read_str(d, "venue", where), read_str(d, "underlying", where),
                                   read_int(d, "expiry_ts", where), read_number(d, "strike", where),
                                   read_bool(d, "is_call", where), read_number(d, "multiplier", where))
        except RecordError as exc:
            raise ContractError(str(exc).replace("contract.", f"{where}.", 1)) from None


@functools.lru_cache(maxsize=KNOWN_CONTRACTS, typed=True)
def _known_contract(venue: str, underlying: str, expiry_ts: int, strike: float, is_call: bool,
                    multiplier: float) -> OptionContract:
    """A contract from checked fields (``typed``: 1 is not taken for True). Every book and
    order reply repeats the same few contracts; building, checking and naming each anew was
    about 15% of the time an options engine spent reading its books."""
    return OptionContract(venue, underlying, expiry_ts, strike, is_call, multiplier)


@functools.lru_cache(maxsize=KNOWN_CONTRACTS)
def _instrument_name(contract: OptionContract) -> str:
    """``contract.name``, formatted once per contract: books, orders and fills ask for it often."""
    return format_instrument_name(venue_spec(contract.venue), contract.underlying, contract.expiry_ts,
                                  contract.strike, contract.is_call)


def parse_instrument_name(name: str, venues: Sequence[VenueSpec] = tuple(VENUES.values())) -> OptionContract:
    """'BTC-25DEC26-78000-C' -> OptionContract; the root picks the venue (BTC/ETH Deribit, MBT/MET CME)."""
    match = _NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise ContractError(f"instrument name {name!r}: expected ROOT-DMMMYY-STRIKE-C|P such as 'BTC-5JUN26-60000-C'")
    root, day, month, year, strike_text, kind = match.groups()
    if month not in MONTH_CODES:
        raise ContractError(f"instrument name {name!r}: unknown month {month!r}")
    for venue in venues:
        for spec in venue.underlyings:
            if spec.root == root:
                try:
                    expiry_day = date(2000 + int(year), MONTH_CODES.index(month) + 1, int(day))
                except ValueError:
                    raise ContractError(f"instrument name {name!r}: no such date {day}{month}{year}") from None
                return OptionContract(venue.name, spec.symbol, venue.expiry_ts(expiry_day),
                                      float(strike_text.replace("d", ".")), kind == "C", spec.multiplier)
    raise ContractError(f"instrument name {name!r}: unknown root {root!r}")


@dataclass(frozen=True, slots=True)
class OptionPosition:
    """An open option position of one strategy: what the strategies and the scorer read
    (contract, signed ``quantity`` in contracts, entry premium, greeks) and what a book keeps
    of it. ``open_cash_per_contract`` is the fee-inclusive cash it opened with per contract
    (negative when paid); ``current_mark`` (USD per coin) is its last mark, the entry premium
    until it is marked. A position not opened through a book (a what-if) keeps the defaults.
    """

    contract: OptionContract
    quantity: float
    entry_premium: float  # USD per coin
    entry_ts: int
    greeks: Mapping[str, float] = field(default_factory=dict)  # per coin, at the last mark
    open_cash_per_contract: float = 0.0
    current_mark: float = math.nan  # NaN: not given, taken as entry_premium
    marked_ts: int = 0
    mark_source: str = "entry"
    score: float | None = None  # the opening score

    def __post_init__(self) -> None:
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, (int, float)) \
                or not math.isfinite(self.quantity) or self.quantity == 0:
            raise ContractError(f"position.quantity: must be a finite non-zero number, got {self.quantity!r}")
        if not (isinstance(self.entry_premium, (int, float)) and math.isfinite(self.entry_premium)
                and self.entry_premium >= 0):
            raise ContractError(f"position.entry_premium: must be a finite number >= 0, got {self.entry_premium!r}")
        if isinstance(self.current_mark, float) and math.isnan(self.current_mark):
            object.__setattr__(self, "current_mark", float(self.entry_premium))
        if not (isinstance(self.current_mark, (int, float)) and math.isfinite(self.current_mark)
                and self.current_mark >= 0):
            raise ContractError(f"position.current_mark: must be a finite number >= 0, got {self.current_mark!r}")
        if not math.isfinite(self.open_cash_per_contract):
            raise ContractError(f"position.open_cash_per_contract: must be finite, got {self.open_cash_per_contract!r}")

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def coins(self) -> float:
        """Signed exposure in coins: quantity x multiplier."""
        return self.quantity * self.contract.multiplier

    @property
    def value_usd(self) -> float:
        """Signed USD value at the last mark."""
        return float(self.quantity) * float(self.contract.multiplier) * float(self.current_mark)

    @property
    def unrealized_pnl(self) -> float:
        """Value at the last mark plus the (fee-inclusive) cash it opened with."""
        return self.value_usd + abs(float(self.quantity)) * float(self.open_cash_per_contract)

    def to_dict(self) -> dict[str, Any]:
        """The state.json and ``positions`` reply form; contract fields, value and unrealized
        P&L are repeated flat for readers of the file (``from_dict`` checks or recomputes them)."""
        c = self.contract
        return {"name": c.name, "venue": c.venue, "underlying": c.underlying, "contract": c.to_dict(),
                "quantity": float(self.quantity), "multiplier": float(c.multiplier), "strike": float(c.strike),
                "is_call": c.is_call, "expiry_ts": c.expiry_ts, "entry_premium": float(self.entry_premium),
                "open_cash_per_contract": float(self.open_cash_per_contract), "entry_ts": self.entry_ts,
                "greeks": {k: float(v) for k, v in self.greeks.items()}, "current_mark": float(self.current_mark),
                "marked_ts": self.marked_ts, "mark_source": self.mark_source, "score": self.score,
                "current_value_usd": self.value_usd, "unrealized_pnl": self.unrealized_pnl}

    @classmethod
    def from_dict(cls, d: Any, where: str = "position", key: str | None = None) -> "OptionPosition":
        """A position in ``to_dict`` form, checked field by field (the flat contract fields, when
        present, must agree with ``contract``, and so must ``key``, the name it is filed under);
        ContractError names the key path of junk."""
        try:
            read_object(d, where)
            contract = OptionContract.from_dict(d.get("contract"), f"{where}.contract")
            name = contract.name
            if key is not None and name != key:
                raise ContractError(f"{where}.contract: describes {name!r}, not its key {key!r}")
            for flat, expected in (("name", name), ("venue", contract.venue),
                                   ("underlying", contract.underlying), ("strike", contract.strike),
                                   ("is_call", contract.is_call), ("expiry_ts", contract.expiry_ts),
                                   ("multiplier", contract.multiplier)):
                if flat in d and d[flat] != expected:
                    raise ContractError(f"{where}.{flat}: {d[flat]!r} disagrees with the contract ({expected!r})")
            quantity = read_number(d, "quantity", where)
            if quantity == 0:
                raise ContractError(f"{where}.quantity: must not be 0 (a closed position is removed)")
            greeks_where = f"{where}.greeks"
            greeks_obj = d.get("greeks", {})
            greeks = {key: read_number(greeks_obj, key, greeks_where) for key in read_object(greeks_obj, greeks_where)}
            return cls(contract, quantity, read_number(d, "entry_premium", where, minimum=0.0),
                       read_int(d, "entry_ts", where), greeks,
                       open_cash_per_contract=read_number(d, "open_cash_per_contract", where),
                       current_mark=read_number(d, "current_mark", where, minimum=0.0),
                       marked_ts=read_int(d, "marked_ts", where),
                       mark_source=read_str(d, "mark_source", where) if "mark_source" in d else "entry",
                       score=read_number(d, "score", where) if d.get("score") is not None else None)
        except ContractError:
            raise
        except RecordError as exc:
            raise ContractError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class ProposedTrade:
    """One order a strategy wants; ``group`` ties the legs of a structure (strangle, straddle).

    ``spot_coins`` are coins of the underlying bought with this leg, all or nothing (the spot
    leg of a buy-write or a married put), paid at the order's spot price.
    """

    action: str  # "open" | "close"
    contract: OptionContract
    side: int  # +1 buy, -1 sell
    quantity: float  # contracts, > 0
    premium: float  # USD per coin, the chain's mark
    greeks: Mapping[str, float]  # per coin: delta, gamma, theta, vega
    reason: str
    score: float = 0.0
    group: str = ""
    spot_coins: float = 0.0

    def __post_init__(self) -> None:
        if self.action not in ("open", "close"):
            raise ContractError(f"trade.action: must be 'open' or 'close', got {self.action!r}")
        if self.side not in (1, -1):
            raise ContractError(f"trade.side: must be +1 or -1, got {self.side!r}")
        if not (math.isfinite(self.quantity) and self.quantity > 0):
            raise ContractError(f"trade.quantity: must be a finite number > 0, got {self.quantity!r}")
        if not (math.isfinite(self.premium) and self.premium >= 0):
            raise ContractError(f"trade.premium: must be a finite number >= 0, got {self.premium!r}")
        if not (math.isfinite(self.spot_coins) and self.spot_coins >= 0):
            raise ContractError(f"trade.spot_coins: must be a finite number >= 0, got {self.spot_coins!r}")

    @property
    def coins(self) -> float:
        """Signed coin exposure this trade adds: side x quantity x multiplier."""
        return self.side * self.quantity * self.contract.multiplier


def listed_expiries(venue: VenueSpec, underlying: str, ts_event: int, horizon_days: int = 400) -> list[int]:
    """The venue's expiry instants (ms) after ts_event, ascending, within horizon_days."""
    venue.underlying(underlying)
    return venue.listed_expiries(ts_event, horizon_days)


def closest_expiry(expiries: Sequence[int], ts_event: int, target_dte_days: float) -> int:
    """The listed expiry whose DTE is nearest target (ties go to the earlier); never an expired one."""
    live = [e for e in expiries if e > ts_event]
    if not live:
        raise ContractError(f"expiries: none after ts_event {ts_event} among {len(expiries)} listed")
    target = ts_event + target_dte_days * DAY_MS
    return min(live, key=lambda e: (abs(e - target), e))
