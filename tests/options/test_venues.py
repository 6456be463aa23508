"""Venue calendars, sizes and names, checked against recorded Deribit data."""
import csv
import json
from datetime import datetime, timezone

import pytest

from options.contracts import parse_instrument_name
from options.venues import (
    DERIBIT,
    IBKR_CME,
    VenueConfigError,
    coin_to_usd,
    format_instrument_name,
    usd_to_coin,
    venue_spec,
)


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts / 1000, timezone.utc)


def test_deribit_calendar_on_2026_11_25():
    expiries = DERIBIT.listed_expiries(ms(2026, 11, 25, 12), 400)
    assert [utc(e).strftime("%Y-%m-%d") for e in expiries] == [
        "2026-11-26", "2026-11-27", "2026-11-28", "2026-11-29",  # dailies (27th: also weekly + monthly)
        "2026-12-04", "2026-12-11", "2026-12-18", "2026-12-25",  # Friday weeklies; 25 Dec monthly+quarterly
        "2027-01-29",  # third monthly
        "2027-03-26", "2027-06-25", "2027-09-24",  # quarterlies
    ]
    assert all(utc(e).hour == 8 and utc(e).minute == 0 for e in expiries)
    assert utc(ms(2026, 12, 25)).strftime("%A") == "Friday"


def test_deribit_expiry_today_is_listed_until_0800_only():
    assert ms(2026, 11, 25, 8) in DERIBIT.listed_expiries(ms(2026, 11, 25, 7, 59), 30)
    assert ms(2026, 11, 25, 8) not in DERIBIT.listed_expiries(ms(2026, 11, 25, 8), 30)


def test_cme_weeklies_at_1600_london_in_winter_and_summer():
    winter = IBKR_CME.listed_expiries(ms(2026, 11, 25, 12), 400)
    assert ms(2026, 11, 25, 16) in winter  # Wednesday, GMT: 16:00 UTC
    assert ms(2026, 11, 30, 16) in winter  # Monday
    assert {utc(e).strftime("%a") for e in winter} == {"Mon", "Wed", "Fri"}
    summer = IBKR_CME.listed_expiries(ms(2026, 7, 1, 12), 400)
    assert ms(2026, 7, 1, 15) in summer  # Wednesday, BST: 16:00 London = 15:00 UTC
    assert ms(2026, 7, 3, 15) in summer
    assert ms(2026, 7, 31, 15) in summer  # last Friday of July: monthly
    assert ms(2026, 9, 25, 15) in summer  # third monthly, beyond the 4-week weeklies
    assert ms(2026, 10, 30, 16) not in summer  # a fourth monthly is not listed


def test_recorded_instruments_parse_to_the_calendar_expiry(shared_data):
    fixture = shared_data / "deribit" / "fastmm_fixtures/get_instruments_option.json"
    recorded = json.loads(fixture.read_text())["result"]
    for inst in recorded:
        contract = parse_instrument_name(inst["instrument_name"])
        assert contract.name == inst["instrument_name"]
        assert contract.expiry_ts == inst["expiration_timestamp"]
        assert contract.strike == inst["strike"]
        assert contract.is_call == (inst["option_type"] == "call")
        assert contract.multiplier == inst["contract_size"]
        assert DERIBIT.underlying("BTC").min_quantity == inst["min_trade_amount"]
        assert inst["expiration_timestamp"] in DERIBIT.listed_expiries(inst["creation_timestamp"], 400)


def test_2020_chain_expiries_are_all_in_the_calendar_of_that_day(shared_data):
    rows = list(csv.DictReader((shared_data / "deribit" / "btc_option_chain_2020-05-14.csv").open()))
    as_of = min(int(r["timestamp"]) for r in rows)
    listed = set(DERIBIT.listed_expiries(as_of, 400))
    for row in rows:
        contract = parse_instrument_name(row["instrument_name"])
        assert contract.expiry_ts == int(row["expiration_timestamp"]), row["instrument_name"]
        assert contract.name == row["instrument_name"]
        assert contract.expiry_ts in listed, row["instrument_name"]


def test_names_have_no_leading_zero_on_the_day():
    assert format_instrument_name(DERIBIT, "BTC", ms(2026, 6, 5, 8), 60000.0, True) == "BTC-5JUN26-60000-C"
    assert format_instrument_name(IBKR_CME, "ETH", ms(2026, 6, 5, 15), 3050.0, False) == "MET-5JUN26-3050-P"
    assert format_instrument_name(DERIBIT, "ETH", ms(2026, 6, 5, 8), 0.625, True) == "ETH-5JUN26-0d625-C"


def test_micro_contract_costs_a_tenth_of_a_deribit_contract():
    premium_per_coin = 2500.0
    deribit_cost = premium_per_coin * DERIBIT.underlying("BTC").multiplier
    micro_cost = premium_per_coin * IBKR_CME.underlying("BTC").multiplier
    assert micro_cost == pytest.approx(deribit_cost / 10)
    assert IBKR_CME.underlying("ETH").multiplier == 0.1


def test_coin_usd_conversion():
    assert coin_to_usd(0.0296, 84_000.0) == pytest.approx(2486.4)
    assert usd_to_coin(2486.4, 84_000.0) == pytest.approx(0.0296)
    with pytest.raises(VenueConfigError, match="index_price"):
        usd_to_coin(100.0, 0.0)


def test_unknown_venue_and_underlying_are_named():
    with pytest.raises(VenueConfigError, match="unknown venue 'cme'"):
        venue_spec("cme")
    with pytest.raises(VenueConfigError, match="deribit: unknown underlying 'SOL'"):
        DERIBIT.underlying("SOL")
