"""Contracts, positions and the listed-expiry pickers."""
from datetime import datetime, timezone

import pytest

from common.model import MAX_TS_MS
from common.timeframes import DAY_MS
from options.contracts import (
    ContractError,
    OptionContract,
    OptionPosition,
    closest_expiry,
    listed_expiries,
    parse_instrument_name,
)
from options.venues import DERIBIT

DEC25 = int(datetime(2026, 12, 25, 8, tzinfo=timezone.utc).timestamp() * 1000)


def call() -> OptionContract:
    return OptionContract("deribit", "BTC", DEC25, 78000.0, True, 1.0)


def test_contract_name_dict_round_trip_and_dte():
    c = call()
    assert c.name == "BTC-25DEC26-78000-C"
    assert parse_instrument_name(c.name) == c
    assert OptionContract.from_dict(c.to_dict()) == c
    assert c.dte_days(DEC25 - 3 * DAY_MS // 2) == 1.5


def test_intrinsic_is_what_a_call_or_put_pays_at_expiry():
    put = OptionContract("ibkr", "BTC", DEC25, 78000.0, False, 0.1)
    assert [call().intrinsic(s) for s in (80_500.0, 78_000.0, 60_000.0)] == [2_500.0, 0.0, 0.0]
    assert [put.intrinsic(s) for s in (80_500.0, 78_000.0, 60_000.0)] == [0.0, 0.0, 18_000.0]  # per coin


def test_contract_from_dict_names_the_bad_field():
    d = call().to_dict()
    with pytest.raises(ContractError, match=r"leg\.strike: missing"):
        OptionContract.from_dict({k: v for k, v in d.items() if k != "strike"}, where="leg")
    with pytest.raises(ContractError, match=r"contract\.is_call: expected true or false"):
        OptionContract.from_dict(d | {"is_call": "C"})
    with pytest.raises(ContractError, match=r"contract\.strike: must be a finite number > 0"):
        OptionContract.from_dict(d | {"strike": -1.0})
    with pytest.raises(ContractError, match=r"contract\.venue/underlying: unknown venue 'cme'"):
        OptionContract.from_dict(d | {"venue": "cme"})


@pytest.mark.parametrize("expiry_ts", [-1, -62_135_596_800_001, MAX_TS_MS + 1, 10**20])
def test_an_expiry_outside_the_calendar_is_refused_by_name(expiry_ts):
    """The name is a calendar date: before 1970 or past 9999 there is none (the year 0 raised
    a bare ValueError from datetime instead)."""
    with pytest.raises(ContractError, match=rf"contract\.expiry_ts: must be ms from 1970 to the year 9999 "
                                            rf"\(0\.\.{MAX_TS_MS}\), got {expiry_ts}"):
        OptionContract.from_dict(call().to_dict() | {"expiry_ts": expiry_ts})


def test_the_last_expiry_on_the_calendar_has_a_name():
    assert OptionContract.from_dict(call().to_dict() | {"expiry_ts": MAX_TS_MS}).name == "BTC-30DEC99-78000-C"


def test_a_contract_read_again_is_the_same_one_and_still_checked_like_the_first():
    d = call().to_dict()
    first = OptionContract.from_dict(d)
    assert OptionContract.from_dict(dict(d)) is first and first.name == "BTC-25DEC26-78000-C"
    # A known contract's fields with the wrong types are refused as before, not taken as equal.
    with pytest.raises(ContractError, match=r"contract\.is_call: expected true or false, got 1"):
        OptionContract.from_dict(d | {"is_call": 1})
    with pytest.raises(ContractError, match=r"contract\.expiry_ts: expected an integer, got true"):
        OptionContract.from_dict(d | {"expiry_ts": True})
    # An int strike equal to a known float one is read as that float: the same contract.
    assert OptionContract.from_dict(d | {"strike": 78000}) == first
    with pytest.raises(ContractError, match=r"contract\.strike: must be a finite number > 0"):
        OptionContract.from_dict(d | {"strike": -78000.0})


def test_bad_instrument_names_raise():
    for name in ("BTC-25DEC26-78000", "BTC-31FEB26-78000-C", "BTC-25XYZ26-78000-C", "SOL-25DEC26-100-C", 42):
        with pytest.raises(ContractError, match="instrument name"):
            parse_instrument_name(name)


def test_position_round_trip_and_checks():
    pos = OptionPosition(call(), -0.3, 2100.0, DEC25 - 30 * DAY_MS, {"delta": 0.25, "vega": 90.0})
    assert OptionPosition.from_dict(pos.to_dict()) == pos
    assert pos.coins == pytest.approx(-0.3)
    with pytest.raises(ContractError, match="position.quantity"):
        OptionPosition(call(), 0.0, 2100.0, 0)
    with pytest.raises(ContractError, match=r"pos\.greeks\.delta: must be a finite number"):
        OptionPosition.from_dict(pos.to_dict() | {"greeks": {"delta": float("nan")}}, where="pos")


def test_closest_expiry_never_returns_an_expired_one():
    ts = DEC25 - 10 * DAY_MS
    expiries = [DEC25 - 20 * DAY_MS, DEC25, DEC25 + 35 * DAY_MS]
    assert closest_expiry(expiries, ts, 0) == DEC25  # the expired one is nearer to 0 DTE but skipped
    assert closest_expiry(expiries, ts, 30) == DEC25 + 35 * DAY_MS
    assert closest_expiry(expiries, ts, 27.5) == DEC25  # tie at 17.5 days: earlier wins
    with pytest.raises(ContractError, match="none after ts_event"):
        closest_expiry([DEC25], DEC25, 30)


def test_listed_expiries_checks_the_underlying():
    assert listed_expiries(DERIBIT, "ETH", DEC25 - 5 * DAY_MS, 30)[0] == DEC25 - 4 * DAY_MS
    with pytest.raises(ValueError, match="unknown underlying 'SOL'"):
        listed_expiries(DERIBIT, "SOL", DEC25, 30)
