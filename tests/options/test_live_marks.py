"""Mapping positions to listed Deribit instruments, settlement of expired ones, coin -> USD."""
from __future__ import annotations

import math

import pytest

from common.timeframes import DAY_MS
from options.contracts import ContractError, OptionContract, parse_instrument_name
from options.live_marks import ListedOption, OptionQuote, deribit_name, map_to_listed, mark_positions, settlement_value

MAR13 = parse_instrument_name("BTC-13MAR26-75000-C").expiry_ts  # 2026-03-13 08:00 UTC
NOW = MAR13 - 5 * DAY_MS


def listed(name: str) -> ListedOption:
    c = parse_instrument_name(name)
    return ListedOption(name, c.underlying, c.expiry_ts, c.strike, c.is_call)


CHAIN = [listed(n) for n in ("BTC-13MAR26-75000-C", "BTC-13MAR26-75000-P", "BTC-20MAR26-80000-C",
                             "BTC-27MAR26-80000-C", "BTC-6MAR26-80000-C", "ETH-13MAR26-2000-C")]


def test_exact_instrument_wins():
    m = map_to_listed(parse_instrument_name("BTC-13MAR26-75000-C"), CHAIN, NOW)
    assert m.exact and m.listed.name == "BTC-13MAR26-75000-C" and m.days_shift == 0


def test_missing_expiry_maps_to_the_nearest_real_expiry_with_the_same_strike():
    # 16MAR26 is not listed: 20MAR26 is 4 days away, 6MAR26 10 days away
    m = map_to_listed(parse_instrument_name("BTC-16MAR26-80000-C"), CHAIN, NOW)
    assert not m.exact and m.listed.name == "BTC-20MAR26-80000-C" and m.days_shift == 4.0
    # 24MAR26 is 4 days after 20MAR26 and 3 days before 27MAR26
    assert map_to_listed(parse_instrument_name("BTC-24MAR26-80000-C"), CHAIN, NOW).listed.name == "BTC-27MAR26-80000-C"


def test_tie_goes_to_the_earlier_expiry():
    chain = [listed("BTC-20MAR26-80000-C"), listed("BTC-27MAR26-80000-C")]
    midpoint = chain[0].expiry_ts + (chain[1].expiry_ts - chain[0].expiry_ts) // 2  # 3.5 days from each
    m = map_to_listed(OptionContract("deribit", "BTC", midpoint, 80000.0, True, 1.0), chain, NOW)
    assert m.listed.name == "BTC-20MAR26-80000-C" and m.days_shift == -3.5


def test_expired_listing_is_never_a_target_and_other_sides_never_match():
    late = NOW + 10 * DAY_MS  # 6MAR26 and 13MAR26 have expired
    m = map_to_listed(parse_instrument_name("BTC-6MAR26-80000-C"), CHAIN, late)
    assert m.listed.name == "BTC-20MAR26-80000-C"
    assert map_to_listed(parse_instrument_name("BTC-13MAR26-80000-P"), CHAIN, NOW) is None
    assert map_to_listed(parse_instrument_name("ETH-13MAR26-75000-C"), CHAIN, NOW) is None


def test_ibkr_contract_uses_the_deribit_instrument_of_the_same_day():
    cme = parse_instrument_name("MBT-13MAR26-75000-C")
    assert deribit_name(cme) == "BTC-13MAR26-75000-C"
    m = map_to_listed(cme, CHAIN, NOW)
    assert m.exact and m.listed.name == "BTC-13MAR26-75000-C"


def test_settlement_is_intrinsic_at_the_settlement_price():
    call = parse_instrument_name("BTC-13MAR26-75000-C")
    put = parse_instrument_name("BTC-13MAR26-75000-P")
    assert settlement_value(call, 78_500.0) == 3_500.0 and settlement_value(put, 78_500.0) == 0.0
    assert settlement_value(put, 70_000.0) == 5_000.0 and settlement_value(call, 75_000.0) == 0.0
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ContractError, match="settlement_price for BTC-13MAR26-75000-C"):
            settlement_value(call, bad)


def test_mark_positions_converts_coin_marks_with_the_index_and_settles_expired():
    contracts = [parse_instrument_name(n) for n in
                 ("BTC-13MAR26-75000-C", "BTC-16MAR26-80000-C", "BTC-6MAR26-80000-C", "BTC-13MAR26-99000-C")]
    quotes = {"BTC-13MAR26-75000-C": OptionQuote("BTC-13MAR26-75000-C", 0.05, 0.48, 76_000.0, NOW),
              "BTC-20MAR26-80000-C": OptionQuote("BTC-20MAR26-80000-C", 0.02, None, 76_100.0, NOW)}
    after_6mar = contracts[2].expiry_ts + 1
    marks, unmarked = mark_positions(contracts, CHAIN, quotes, 76_000.0, after_6mar,
                                     settlement_prices={contracts[2].expiry_ts: 81_250.0})
    assert marks["BTC-13MAR26-75000-C"].mark_usd == pytest.approx(0.05 * 76_000.0)
    assert marks["BTC-13MAR26-75000-C"].mark_iv == 0.48
    mapped = marks["BTC-16MAR26-80000-C"]
    assert (mapped.source, mapped.instrument, mapped.mark_usd) == ("mapped", "BTC-20MAR26-80000-C", 0.02 * 76_000.0)
    assert (marks["BTC-6MAR26-80000-C"].source, marks["BTC-6MAR26-80000-C"].mark_usd) == ("settled", 1_250.0)
    assert unmarked == ["BTC-13MAR26-99000-C: no listed Deribit option with strike 99000 call"]


def test_expired_without_a_settlement_price_uses_the_index():
    c = parse_instrument_name("BTC-6MAR26-80000-P")
    marks, _ = mark_positions([c], [], {}, 79_000.0, c.expiry_ts + DAY_MS)
    assert marks[c.name].mark_usd == 1_000.0 and marks[c.name].source == "settled"


def test_bad_quotes_and_index_are_refused():
    with pytest.raises(ContractError, match="mark_price must be a finite number >= 0"):
        OptionQuote("BTC-13MAR26-75000-C", math.nan, None, None, 0)
    with pytest.raises(ContractError, match="mark_price must be a finite number >= 0"):
        OptionQuote("BTC-13MAR26-75000-C", -0.1, None, None, 0)
    with pytest.raises(ContractError, match="index_price: must be a finite number > 0"):
        mark_positions([], CHAIN, {}, 0.0, NOW)
