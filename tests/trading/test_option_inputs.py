"""The records an options decision is made on, built at the bus edge: a bad field is named."""
from __future__ import annotations

import numpy as np
import pytest

from common.model import RecordError
from options.chain import build_chain
from options.contracts import OptionContract, OptionPosition
from options.venues import DERIBIT, IBKR_CME
from trading.book_view import BookView
from trading.option_inputs import IvReading, OptionsMarket

TS = 1_767_225_600_000
EXPIRY = DERIBIT.listed_expiries(TS, 40)[-1]
CALL = OptionContract("deribit", "BTC", EXPIRY, 95_000.0, True, 1.0)
PUT = OptionContract("deribit", "ETH", EXPIRY, 3_000.0, False, 1.0)
HELD = OptionPosition(CALL, 0.4, 1_525.0, TS, {"delta": 0.46}, open_cash_per_contract=-1_526.525,
                      current_mark=1_650.5, marked_ts=TS + 1, mark_source="pricer", score=0.8)
VIEW = BookView("vol", TS + 1, 48_000.0, 50_000.0, 48_660.2, 50_000.0,
                (HELD, OptionPosition(PUT, -1.0, 90.0, TS)), 0.2, 44_000.0)


def test_a_book_view_crosses_the_bus_and_comes_back_equal():
    wire = VIEW.to_dict()
    assert wire["option_positions"][0]["current_value_usd"] == pytest.approx(0.4 * 1_650.5)
    assert wire["option_positions"][0]["unrealized_pnl"] == pytest.approx(0.4 * (1_650.5 - 1_526.525))
    assert BookView.from_dict(wire) == VIEW


def test_a_book_view_gives_the_positions_of_one_venue_and_underlying():
    assert VIEW.positions("deribit", "BTC") == [HELD]
    assert [p.contract.underlying for p in VIEW.positions("deribit", "ETH")] == ["ETH"]
    assert VIEW.positions("ibkr", "BTC") == []


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("peak_value"), r"^positions reply\.peak_value: missing$"),
    (lambda d: d.update(cash=None), r"^positions reply\.cash: expected a number, got null$"),
    (lambda d: d.update(spot_quantity=-1.0), r"^positions reply\.spot_quantity: must be >= 0"),
    (lambda d: d.update(option_positions={}), r"^positions reply\.option_positions: expected a list, got dict$"),
    (lambda d: d["option_positions"][1].pop("quantity"),
     r"^positions reply\.option_positions\[1\]\.quantity: missing$"),
    (lambda d: d["option_positions"][0].update(strike=1.0),
     r"^positions reply\.option_positions\[0\]\.strike: 1\.0 disagrees with the contract"),
    (lambda d: d["option_positions"][0]["contract"].update(venue="nyse"),
     r"^positions reply\.option_positions\[0\]\.contract\.venue/underlying"),
])
def test_a_bad_positions_reply_is_refused_naming_the_field(mutate, message):
    wire = VIEW.to_dict()
    mutate(wire)
    with pytest.raises(RecordError, match=message):
        BookView.from_dict(wire)


def test_iv_replies_become_readings_and_every_chain_needs_one():
    chain = build_chain(IBKR_CME, "BTC", 90_000.0, TS, 0.5, horizon_days=30)
    market = OptionsMarket.from_replies({("BTC", "ibkr"): chain}, {"BTC": {"atm_iv": 0.5, "history": [0.4, 0, 0.6]}})
    assert market.chain("BTC", "ibkr") is chain and market.iv["BTC"].atm_iv == 0.5
    np.testing.assert_array_equal(market.iv["BTC"].history, [0.4, 0.0, 0.6])
    assert np.isnan(IvReading.from_dict({"atm_iv": 0.5, "history": [float("nan")]}).history[0])  # a day without IV
    with pytest.raises(RecordError, match=r"^iv reply: none for BTC$"):
        OptionsMarket.from_replies({("BTC", "ibkr"): chain}, {})
    for junk in (["x"], [0.4, True], [0.4, None]):
        with pytest.raises(RecordError, match=r"^iv reply \(BTC\)\.history: expected a list of numbers"):
            OptionsMarket.from_replies({("BTC", "ibkr"): chain}, {"BTC": {"atm_iv": 0.5, "history": junk}})
    assert IvReading.from_dict({"atm_iv": 0.5, "history": [np.float64(0.4), 1]}).history.tolist() == [0.4, 1.0]
    with pytest.raises(RecordError, match=r"^iv reply \(BTC\)\.atm_iv: must be a finite number"):
        OptionsMarket.from_replies({("BTC", "ibkr"): chain}, {"BTC": {"atm_iv": float("inf"), "history": []}})
