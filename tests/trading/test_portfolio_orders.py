"""The Portfolio answers orders from its own market and keeps marking every book it can."""
from __future__ import annotations

import math

import pytest

from common.model import SpotOrder
from options.contracts import OptionContract
from options.venues import DERIBIT
from trading.option_book import OptionLeg, OptionOrder
from trading.option_order_checks import OptionMarket, OptionQuote
from trading.portfolio import Portfolio, StrategyMeta
from trading.risk import RiskLimits

HOUR = 3_600_000
T = 1_767_225_600_000
E = DERIBIT.listed_expiries(T, 40)[-1]
LIMITS = RiskLimits(max_drawdown_pct=50.0, max_position_pct=50.0)
CALL = OptionContract("deribit", "BTC", E, 120_000.0, True, 1.0)


def portfolio(slippage_rate: float = 0.0) -> Portfolio:
    p = Portfolio([StrategyMeta("spot", "spot", "spot", 10_000.0, LIMITS, "sma", ("BTC/USDT",), HOUR),
                   StrategyMeta("other", "spot", "spot", 10_000.0, LIMITS, "sma", ("ETH/USDT",), HOUR),
                   StrategyMeta("opt", "options", "deribit", 50_000.0, LIMITS, "wheel", ("BTC",), HOUR)],
                  fee_rate=0.0, slippage_rate=slippage_rate)
    p.reconcile(T)
    p.mark({"BTC/USDT": 90_000.0, "ETH/USDT": 3_000.0}, T)
    return p


def buy(price: float, ts: int = T, symbol: str = "BTC/USDT", sid: str = "spot") -> SpotOrder:
    return SpotOrder(f"{sid}:{ts}", sid, symbol, 1, price, ts)


def test_a_spot_order_fills_at_the_portfolio_tick_with_its_slippage():
    p = portfolio(slippage_rate=0.001)
    decision = p.decide_spot(buy(91_000.0))
    assert decision.status == "filled" and decision.fill.price == pytest.approx(90_000.0 * 1.001)
    assert decision.fill.quantity == pytest.approx(5_000.0 / (90_000.0 * 1.001))  # 50% of 10,000


def test_a_tick_recorded_between_marks_is_the_price_of_an_order_of_its_time():
    p = portfolio()
    p.record_tick("BTC/USDT", 90_500.0, T + HOUR)
    assert p.market_ts == T + HOUR and p.prices["BTC/USDT"] == 90_000.0  # valued at the last mark still
    assert p.decide_spot(buy(90_500.0, T + HOUR)).fill.price == 90_500.0
    assert p.decide_spot(buy(90_000.0, T, sid="spot")).status == "filled"  # one bar in flight: its own tick


@pytest.mark.parametrize("o, status, fragment", [
    (buy(0.01), "rejected", "-100.00% from the portfolio's mark 90000"),
    (buy(1e-304), "rejected", "band ±5%"),
    (buy(3_000.0, symbol="ETH/USDT"), "rejected", "'ETH/USDT' is not traded by spot"),
    (buy(1.0, symbol="FAKE/USDT"), "rejected", "'FAKE/USDT' is not traded by spot"),
    (buy(90_000.0, T - HOUR - 1), "rejected", "back-dated"),
    (buy(90_000.0, T + 60_000), "retry", "no BTC/USDT tick at the order time"),
])
def test_forged_spot_orders_are_refused_and_no_book_moves(o, status, fragment):
    p = portfolio()
    before = p.to_state()
    decision = p.decide_spot(o)
    assert decision.status == status and fragment in decision.reason and decision.fill is None
    assert p.to_state() == before


def test_a_duplicate_is_recognised_before_the_market_is_asked():
    p = portfolio()
    p.commit([p.decide_spot(buy(90_000.0)).fill])
    p.mark({"BTC/USDT": 95_000.0}, T + 3 * HOUR)  # the market moved on: a fresh check would refuse it
    assert p.decide_spot(buy(90_000.0)).status == "duplicate"


def option_order(contract: OptionContract = CALL, premium: float = 500.0, score: float = 0.7) -> OptionOrder:
    return OptionOrder("opt:1:x", "opt", T, 90_000.0,
                       (OptionLeg(contract, -1, 0.1, premium, {"delta": 0.1}, score, "wheel", "open"),))


MARKET = OptionMarket(T, {"BTC": 90_000.0}, {CALL.name: OptionQuote(480.0, {"delta": 0.12, "vega": 30.0})})


def test_an_option_order_fills_at_the_pricer_mark_with_its_greeks():
    p = portfolio()
    decision = p.decide_options_at_market(option_order(), MARKET)
    assert decision.status == "filled"
    (fill,) = decision.fills
    assert (fill.price, fill.cash_delta) == (480.0, pytest.approx(48.0))
    assert fill.extra["greeks"] == {"delta": 0.12, "vega": 30.0}
    assert fill.extra["score"] == pytest.approx(0.4 + 0.3 + 480.0 / 90_000.0)


def test_a_multiplier_of_1000_is_refused_before_the_pricer_is_asked():
    p = portfolio()
    forged = option_order(OptionContract("deribit", "BTC", E, 120_000.0, True, 1000.0))
    decision = p.option_order_refusal(forged)
    assert decision.status == "rejected" and "multiplier 1000 is not deribit's 1" in decision.reason


def test_an_unlisted_option_is_refused_and_no_book_moves():
    p = portfolio()
    before = p.to_state()
    unlisted = OptionContract("deribit", "BTC", E, 121_000.0, True, 1.0)
    decision = p.decide_options_at_market(option_order(unlisted), MARKET)
    assert decision.status == "rejected" and "not listed" in decision.reason
    assert p.to_state() == before


def test_a_book_that_cannot_be_valued_is_named_and_the_others_are_still_marked():
    p = portfolio()
    p.books["other"].cash = math.inf  # a damaged book: its value is not a number
    p.mark({"BTC/USDT": 90_000.0}, T + HOUR)
    assert p.marking_problems == {"other": "valuation: value is inf"}
    p.commit([p.decide_spot(buy(90_000.0, T + HOUR)).fill])
    p.mark({"BTC/USDT": 99_000.0}, T + 2 * HOUR)
    assert p.books["spot"].risk.peak_value == pytest.approx(10_000.0 + 5_000.0 / 90_000.0 * 9_000.0)
    p.books["other"].cash = 10_000.0
    p.mark({"BTC/USDT": 99_000.0}, T + 3 * HOUR)
    assert p.marking_problems == {}


def test_a_bad_option_mark_leaves_that_book_as_it_was_and_is_named():
    p = portfolio()
    p.commit(p.decide_options_at_market(option_order(), MARKET).fills)
    position = p.books["opt"].option_positions[CALL.name]
    p.mark_options({CALL.name: {"mark_usd": math.nan}}, T + 1)
    assert p.books["opt"].option_positions[CALL.name] == position
    assert "option marks: ValueError" in p.marking_problems["opt"]
    p.mark({"BTC/USDT": 90_000.0}, T + 2)  # a spot mark does not clear an option-mark problem
    assert "opt" in p.marking_problems
    p.mark_options({CALL.name: {"mark_usd": 400.0, "source": "sim"}}, T + 3)
    assert p.marking_problems == {} and p.books["opt"].option_positions[CALL.name].current_mark == 400.0


def test_an_order_may_be_one_bar_plus_the_transit_time_old():
    p = Portfolio([StrategyMeta("spot", "spot", "spot", 10_000.0, LIMITS, "sma", ("BTC/USDT",), HOUR)],
                  fee_rate=0.0, slippage_rate=0.0, order_transit_ms=2 * HOUR)
    p.reconcile(T)
    for hours in range(5):
        p.mark({"BTC/USDT": 90_000.0 + hours}, T + hours * HOUR)
    assert p.order_lag_ms("spot") == 3 * HOUR
    assert p.decide_spot(buy(90_001.0, T + HOUR)).fill.price == 90_001.0  # 3 h before market time T + 4 h
    late = p.decide_spot(buy(90_000.0, T + HOUR - 1))
    assert late.status == "rejected" and "back-dated" in late.reason


def test_a_tick_older_than_the_last_is_not_a_price():
    p = portfolio()
    assert p.record_tick("BTC/USDT", 50_000.0, T - 67 * 24 * HOUR) is False  # a rewound feed
    assert p.tape.last("BTC/USDT") == (T, 90_000.0) and p.market_ts == T
