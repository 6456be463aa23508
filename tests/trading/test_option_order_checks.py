"""Option orders priced by the pricer's chain: listing, multiplier, quantity, premium band, own score."""
from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timezone

import numpy as np
import pytest

from common.timeframes import DAY_MS
from options.chain import OptionChain, chain_to_dict
from options.contracts import OptionContract, OptionPosition
from options.venues import DERIBIT
from trading.option_book import OptionLeg, OptionOrder
from trading.option_order_checks import (
    BAND_FLOOR_OF_SPOT,
    VOL_POINTS_IN_FLIGHT,
    ChainQuoteError,
    OptionMarket,
    OptionQuote,
    chain_horizon_days,
    leg_refusal,
    order_refusal,
    price_option_order,
    quotes_from_chain,
)

TS = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
E = DERIBIT.listed_expiries(TS, 40)[-1]
SPOT = 90_000.0
CALL_90 = OptionContract("deribit", "BTC", E, 90_000.0, True, 1.0)
PUT_90 = OptionContract("deribit", "BTC", E, 90_000.0, False, 1.0)
CALL_120 = OptionContract("deribit", "BTC", E, 120_000.0, True, 1.0)
UNLISTED = OptionContract("deribit", "BTC", E, 91_000.0, True, 1.0)


def chain() -> OptionChain:
    """Three rows with round numbers: the 90k call and put, the 120k call."""
    f = lambda *v: np.array(v, dtype=np.float64)  # noqa: E731
    return OptionChain("deribit", "BTC", 1.0, TS, SPOT, np.array([E, E, E], dtype=np.int64),
                       f(90_000, 90_000, 120_000), np.array([True, False, True]), f(SPOT, SPOT, SPOT),
                       f(0.5, 0.5, 0.6), f(5_000, 4_000, 500), f(0.5, -0.5, 0.1), f(1e-5, 1e-5, 2e-6),
                       f(-50, -40, -10), f(100, 100, 30))


MARKET = OptionMarket(TS, {"BTC": SPOT}, quotes_from_chain(chain_to_dict(chain()), [CALL_90, PUT_90, CALL_120])[1])


def leg(contract, side=-1, quantity=1.0, premium=500.0, score=0.7, action="open"):
    return OptionLeg(contract, side, quantity, premium, {"delta": 0.1}, score, "test", action)


def order(*legs, ts=TS):
    return OptionOrder("s:1:x", "s", ts, SPOT, tuple(legs))


def price(o, positions=(), book_value=100_000.0, market=MARKET, market_ts=TS):
    return price_option_order(o, market, list(positions), venue="deribit", underlying="BTC", book_value=book_value,
                              market_ts=market_ts, lag_ms=3_600_000, band_pct=5.0)


def test_quotes_are_read_from_the_pricer_reply_without_numpy():
    spot, quotes = quotes_from_chain(chain_to_dict(chain()), [CALL_90, CALL_120, UNLISTED])
    assert spot == SPOT and set(quotes) == {CALL_90.name, CALL_120.name}
    assert quotes[CALL_120.name] == OptionQuote(500.0, {"delta": 0.1, "gamma": 2e-6, "theta": -10.0, "vega": 30.0})


def test_a_contract_of_another_venue_gets_no_quote():
    cme = OptionContract("ibkr", "BTC", E, 90_000.0, True, 0.1)
    assert quotes_from_chain(chain_to_dict(chain()), [cme]) == (SPOT, {})


def test_a_damaged_chain_reply_names_the_column():
    reply = chain_to_dict(chain())
    reply["columns"]["strike"] = reply["columns"]["strike"][:-1]
    with pytest.raises(ChainQuoteError, match=r"columns.strike: expected 3 x 8 bytes, got 23 bytes"):
        quotes_from_chain(reply, [CALL_90])
    bad = chain()
    bad.mark[0] = math.nan
    with pytest.raises(ChainQuoteError, match="has a mark of nan"):
        quotes_from_chain(chain_to_dict(bad), [CALL_90])
    with pytest.raises(ChainQuoteError, match="spot"):
        quotes_from_chain({**chain_to_dict(chain()), "spot": 0.0}, [CALL_90])


@pytest.mark.parametrize("contract, quantity, fragment", [
    (OptionContract("deribit", "BTC", E, 90_000.0, True, 1000.0), 1.0, "multiplier 1000 is not deribit's 1"),
    (CALL_90, 0.15, "quantity 0.15 is not a multiple of 0.1 contracts of at least 0.1"),
    (CALL_90, 0.05, "quantity 0.05 is not a multiple"),
    (OptionContract("ibkr", "BTC", E, 90_000.0, True, 0.1), 1.0, "ibkr BTC is not traded by this strategy"),
    (OptionContract("deribit", "ETH", E, 3_000.0, True, 1.0), 1.0, "deribit ETH is not traded"),
])
def test_a_leg_off_the_venue_spec_or_the_strategy_is_refused(contract, quantity, fragment):
    why = leg_refusal(leg(contract, quantity=quantity), "leg 0", venue="deribit", underlying="BTC")
    assert why is not None and fragment in why


def test_a_quantity_on_the_step_passes():
    assert leg_refusal(leg(CALL_90, quantity=0.3), "leg 0", venue="deribit", underlying="BTC") is None


def test_a_back_dated_order_is_refused_before_any_price():
    why = order_refusal(order(leg(CALL_120), ts=TS - 3_600_001), venue="deribit", underlying="BTC", market_ts=TS,
                        lag_ms=3_600_000)
    assert why is not None and "back-dated" in why


def test_the_order_is_priced_at_the_pricer_mark_with_the_portfolio_score():
    got = price(order(leg(CALL_120, premium=940.0, score=0.6)))
    assert got.status == "ok"
    (priced,) = got.order.legs
    # Empty book: strike far +0.4, new expiry +0.3, no delta to balance 0, a sale's premium 500/90,000.
    own = 0.4 + 0.3 + 500.0 / SPOT
    assert priced.premium_usd_per_coin == 500.0 and priced.score == pytest.approx(own)
    assert priced.greeks == {"delta": 0.1, "gamma": 2e-6, "theta": -10.0, "vega": 30.0}
    assert got.order.spot == SPOT


def test_a_score_is_scored_against_the_book_of_that_venue_and_underlying():
    held = OptionPosition(PUT_90, -1.0, 4_000.0, TS, {"delta": -0.5})
    got = price(order(leg(CALL_90, premium=5_000.0, score=-0.1)), positions=[held])
    # A strike 0% away -0.3, the same expiry 0, book delta +0.5 coins brought to 0 +0.2, premium 5,000/90,000.
    assert got.order.legs[0].score == pytest.approx(-0.3 + 0.0 + 0.2 + 5_000.0 / SPOT)


def test_a_structure_shares_the_mean_of_its_legs_scores():
    got = price(order(leg(CALL_120), leg(PUT_90, premium=4_000.0)))
    call, put = 0.4 + 0.3 + 500.0 / SPOT, 0.4 + 0.3 + 4_000.0 / SPOT
    assert [lg.score for lg in got.order.legs] == pytest.approx([(call + put) / 2] * 2)


def test_an_inflated_score_is_refused():
    got = price(order(leg(CALL_120, score=0.76)))
    assert got.status == "rejected" and "declared score 0.760 is above the portfolio's own 0.706" in got.reason


def test_a_premium_outside_the_band_is_refused():
    # 5% of max(mark 500, 10% of spot 9,000) = 450, plus 5 vol points of vega 30 = 150, plus
    # theta for no days in flight: 600 USD either side of 500.
    assert (BAND_FLOOR_OF_SPOT, VOL_POINTS_IN_FLIGHT) == (0.1, 5.0)
    assert price(order(leg(CALL_120, premium=1_100.0))).status == "ok"
    assert price(order(leg(CALL_120, premium=0.0))).status == "ok"
    got = price(order(leg(CALL_120, premium=1_100.5)))
    assert got.status == "rejected"
    assert "premium: declared 1100.5 is +120.10% from the portfolio's mark 500" in got.reason
    assert "(band ±5%: ±600)" in got.reason


def test_the_band_allows_the_theta_of_the_days_in_flight():
    later = OptionMarket(TS + 2 * DAY_MS, MARKET.spot, MARKET.quotes)  # theta -10 a day: 20 more
    assert price(order(leg(CALL_120, premium=1_120.0)), market=later).status == "ok"
    assert price(order(leg(CALL_120, premium=1_120.5)), market=later).status == "rejected"


def test_an_unlisted_contract_is_refused():
    got = price(order(leg(UNLISTED)))
    assert got.status == "rejected" and "not listed in the pricer's deribit BTC chain" in got.reason


def test_selling_more_than_ten_times_the_book_is_refused():
    got = price(order(leg(CALL_120, quantity=1.0)), book_value=8_999.0)  # 1 coin x 90,000 > 10 x 8,999
    assert got.status == "rejected" and "sells 90000.00 USD of BTC at spot" in got.reason
    assert price(order(leg(CALL_120, quantity=1.0)), book_value=9_000.0).status == "ok"


def test_the_chain_horizon_covers_the_furthest_contract():
    assert chain_horizon_days([CALL_90], E - 10 * DAY_MS - DAY_MS // 2) == 12
    assert chain_horizon_days([CALL_90], E + DAY_MS) == 1
    assert chain_horizon_days([CALL_90], E - 1000 * DAY_MS) == 400


def test_the_mark_is_taken_back_to_the_order_time_along_its_delta():
    # Spot was 89,000 at the order's time: the 120k call (delta 0.1) was worth 500 - 0.1 x 1,000 = 400 then;
    # the band around it is 450 + 150 (see above).
    o = order(leg(CALL_120, premium=1_000.0))
    moved = price_option_order(o, MARKET, [], venue="deribit", underlying="BTC", book_value=100_000.0, market_ts=TS,
                               lag_ms=3_600_000, band_pct=5.0, spot_at_order={"BTC": 89_000.0})
    assert moved.status == "ok" and moved.order.legs[0].premium_usd_per_coin == 500.0  # filled at the mark now
    late = price_option_order(order(leg(CALL_120, premium=1_000.5)), MARKET, [], venue="deribit", underlying="BTC",
                              book_value=100_000.0, market_ts=TS, lag_ms=3_600_000, band_pct=5.0,
                              spot_at_order={"BTC": 89_000.0})
    assert late.status == "rejected" and "portfolio's mark 400" in late.reason


def test_coins_bought_with_the_legs_are_checked_against_the_portfolio_spot():
    o = dataclasses.replace(order(leg(CALL_120)), spot=95_000.0, spot_quantity=1.0)
    got = price_option_order(o, MARKET, [], venue="deribit", underlying="BTC", book_value=100_000.0, market_ts=TS,
                             lag_ms=3_600_000, band_pct=5.0, spot_at_order={"BTC": 90_000.0})
    assert got.status == "rejected"
    assert "BTC spot: declared 95000 is +5.56% from the portfolio's mark 90000" in got.reason
    o = dataclasses.replace(o, spot=91_000.0)
    got = price_option_order(o, MARKET, [], venue="deribit", underlying="BTC", book_value=100_000.0, market_ts=TS,
                             lag_ms=3_600_000, band_pct=5.0, spot_at_order={"BTC": 90_000.0})
    assert got.status == "ok" and (got.order.spot, got.order.spot_quantity) == (SPOT, 1.0)  # the pricer's spot
