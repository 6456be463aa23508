"""Option venues as data: contract size, order sizes, strike grids and expiry calendars.

Two venues, both European-exercise, cash-settled:

- ``deribit``: inverse options. One contract is one coin; the premium is quoted in the coin
  and turned into USD with the index price (:func:`coin_to_usd`). Expiries at 08:00 UTC.
  Recorded ``get_instruments`` responses show BTC ``contract_size`` 1.0 and
  ``min_trade_amount`` 0.1. ETH options trade in whole contracts (min 1 ETH, step 1) per
  Deribit's contract specifications.
- ``ibkr``: CME micro options on Micro Bitcoin (MBT) and Micro Ether (MET) futures, routed
  through IBKR. Premium in USD; one contract is 0.1 coin for BOTH BTC and ETH (the
  exchange's real size; the seed bot used 0.5 for ETH, which was wrong). Whole contracts
  only. Expiries at 16:00 London time (BST/GMT handled by zoneinfo), Monday/Wednesday/Friday
  weeklies and last-Friday monthlies. Exchange holidays are not modelled.

Strike grids are simplified to one step within +-``strike_range`` of spot for every expiry:
BTC $1000 (Deribit lists $500-1000 near the money for short expiries and wider far away);
ETH $50 (Deribit lists $25-50 near the money for weeklies, $100 for monthlies; CME lists
$50 for MET). Strategies only ever pick strikes and expiries from these lists.

Venue specs are frozen code, not config: a venue's rules change with the venue, not per run.
"""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from common.timeframes import DAY_MS

FRIDAY = 4
QUARTER_MONTHS = (3, 6, 9, 12)
# Fixed, not calendar.month_abbr: that one follows the process locale.
MONTH_CODES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class VenueConfigError(ValueError):
    """A venue, underlying or price the specs do not know; the message names it."""


@dataclass(frozen=True, slots=True)
class UnderlyingSpec:
    """What one underlying looks like on one venue."""

    symbol: str  # the coin: "BTC", "ETH"
    root: str  # first part of the instrument name: "BTC" on Deribit, "MBT" on CME
    multiplier: float  # coins per contract
    min_quantity: float  # smallest order, in contracts
    quantity_step: float  # order size increment, in contracts
    strike_step: float  # USD between listed strikes
    strike_range: float  # listed strikes span spot * (1 -+ strike_range)


@dataclass(frozen=True, slots=True)
class VenueSpec:
    """A venue's contract rules and listing calendar; all times are computed from ts_event."""

    name: str
    premium_currency: str  # "coin" (inverse, Deribit) or "usd"
    expiry_time: time  # wall-clock time of every expiry in expiry_tz
    expiry_tz: str
    daily_count: int  # next N daily expiries (0: no dailies)
    weekly_weekdays: tuple[int, ...]  # Monday=0 ... Friday=4
    weekly_horizon_days: int  # weeklies listed this many days ahead
    monthly_count: int  # last-Friday monthlies: this month (if not past) and the next ones
    quarterly_count: int  # last-Friday quarterlies (Mar/Jun/Sep/Dec)
    underlyings: tuple[UnderlyingSpec, ...]

    def underlying(self, symbol: str) -> UnderlyingSpec:
        for spec in self.underlyings:
            if spec.symbol == symbol:
                return spec
        known = ", ".join(u.symbol for u in self.underlyings)
        raise VenueConfigError(f"{self.name}: unknown underlying {symbol!r}; listed: {known}")

    def expiry_ts(self, day: date) -> int:
        """Expiry instant (ms) of an expiry on a venue-local calendar date."""
        local = datetime.combine(day, self.expiry_time, tzinfo=ZoneInfo(self.expiry_tz))
        return int(local.timestamp() * 1000)

    def expiry_date(self, expiry_ts: int) -> date:
        """Venue-local calendar date of an expiry instant (the date in the instrument name)."""
        return datetime.fromtimestamp(expiry_ts / 1000, ZoneInfo(self.expiry_tz)).date()

    def listed_expiries(self, ts_event: int, horizon_days: int) -> list[int]:
        """Expiry instants (ms) listed at ts_event, strictly later than it, within horizon."""
        today = datetime.fromtimestamp(ts_event / 1000, ZoneInfo(self.expiry_tz)).date()
        end = ts_event + horizon_days * DAY_MS

        def upcoming(days: list[date]) -> list[int]:
            return [ts for ts in map(self.expiry_ts, days) if ts_event < ts <= end]

        span = [today + timedelta(days=i) for i in range(self.weekly_horizon_days + 8)]
        dailies = upcoming(span)[: self.daily_count]
        weeklies = [ts for ts in upcoming(span) if ts <= ts_event + self.weekly_horizon_days * DAY_MS
                    and self.expiry_date(ts).weekday() in self.weekly_weekdays]
        month_count = 3 * self.quarterly_count + self.monthly_count + 2
        months = [_add_months(today.year, today.month, i) for i in range(month_count)]
        month_ends = upcoming([_last_friday(y, m) for y, m in months])
        quarter_ends = [ts for ts in month_ends if self.expiry_date(ts).month in QUARTER_MONTHS]
        monthlies = _next_with_roll(month_ends, self.monthly_count, ts_event)
        quarterlies = _next_with_roll(quarter_ends, self.quarterly_count, ts_event)
        return sorted(set(dailies + weeklies + monthlies + quarterlies))


def _next_with_roll(expiries: list[int], count: int, ts_event: int) -> list[int]:
    """The next ``count`` expiries, not counting one in its last day: its successor is listed then.

    Deribit listed BTC-25DEC26 at 2025-12-25 08:01 UTC, a day before the front quarterly
    (26DEC25) expired (recorded in get_instruments_option.json).
    """
    if count == 0:
        return []
    last_day = [ts for ts in expiries if ts <= ts_event + DAY_MS]
    return last_day + [ts for ts in expiries if ts > ts_event + DAY_MS][:count]


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + n
    return index // 12, index % 12 + 1


def _last_friday(year: int, month: int) -> date:
    last = date(year, month, calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - FRIDAY) % 7)


def format_instrument_name(venue: VenueSpec, symbol: str, expiry_ts: int, strike: float,
                           is_call: bool) -> str:
    """Deribit-style name, e.g. 'BTC-25DEC26-78000-C', 'BTC-5JUN26-60000-P' (no leading zero).

    CME micro options use the same shape with the futures root: 'MBT-27NOV26-90000-C'.
    A fractional strike is written with 'd' for the point, as Deribit does ('0d625').
    """
    day = venue.expiry_date(expiry_ts)
    strike_text = f"{strike:.0f}" if float(strike).is_integer() else repr(float(strike)).replace(".", "d")
    month = MONTH_CODES[day.month - 1]
    right = "C" if is_call else "P"
    return f"{venue.underlying(symbol).root}-{day.day}{month}{day.year % 100:02d}-{strike_text}-{right}"


def coin_to_usd(premium_coin: float, index_price: float) -> float:
    """Deribit quotes premiums in coin; USD value at the index price."""
    return premium_coin * index_price


def usd_to_coin(premium_usd: float, index_price: float) -> float:
    """Inverse of :func:`coin_to_usd`; raises on a non-positive index price."""
    if not index_price > 0:
        raise VenueConfigError(f"index_price: must be > 0 to convert USD to coin, got {index_price!r}")
    return premium_usd / index_price


DERIBIT = VenueSpec(
    name="deribit",
    premium_currency="coin",
    expiry_time=time(8, 0),
    expiry_tz="UTC",
    daily_count=4,
    weekly_weekdays=(FRIDAY,),
    weekly_horizon_days=28,
    monthly_count=3,
    quarterly_count=4,
    underlyings=(
        UnderlyingSpec("BTC", "BTC", multiplier=1.0, min_quantity=0.1, quantity_step=0.1,
                       strike_step=1000.0, strike_range=0.5),
        UnderlyingSpec("ETH", "ETH", multiplier=1.0, min_quantity=1.0, quantity_step=1.0,
                       strike_step=50.0, strike_range=0.5),
    ),
)

IBKR_CME = VenueSpec(
    name="ibkr",
    premium_currency="usd",
    expiry_time=time(16, 0),
    expiry_tz="Europe/London",
    daily_count=0,
    weekly_weekdays=(0, 2, FRIDAY),
    weekly_horizon_days=28,
    monthly_count=3,
    quarterly_count=0,
    underlyings=(
        UnderlyingSpec("BTC", "MBT", multiplier=0.1, min_quantity=1.0, quantity_step=1.0,
                       strike_step=1000.0, strike_range=0.5),
        UnderlyingSpec("ETH", "MET", multiplier=0.1, min_quantity=1.0, quantity_step=1.0,
                       strike_step=50.0, strike_range=0.5),
    ),
)

VENUES: dict[str, VenueSpec] = {DERIBIT.name: DERIBIT, IBKR_CME.name: IBKR_CME}


def venue_spec(name: str) -> VenueSpec:
    """The default spec of a venue by name; the error lists the known venues."""
    try:
        return VENUES[name]
    except (KeyError, TypeError):
        raise VenueConfigError(f"unknown venue {name!r}; expected one of {', '.join(VENUES)}") from None

