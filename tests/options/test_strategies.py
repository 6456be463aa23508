"""Each strategy's rules fire on constructed contexts, with venue-aware sizing and exits."""
import dataclasses
from datetime import datetime, timezone

import numpy as np
import pytest

from common.timeframes import DAY_MS
from options.chain import build_chain
from options.contracts import OptionPosition
from options.risk import OptionsRiskLimits, check_options_trade
from options.strategies import OptionsContext, StrategyError, decide, decide_with_reason
from options.venues import DERIBIT, IBKR_CME

TS = int(datetime(2026, 11, 25, 12, tzinfo=timezone.utc).timestamp() * 1000)
SPOT = 90_000.0


def ctx(venue=DERIBIT, closes=None, atm_iv=0.5, iv_history=None, capital=100_000.0, cash=None,
        spot_quantity=0.0, spot_cost_basis=0.0) -> OptionsContext:
    return OptionsContext(
        strategy_id="test", underlying="BTC", venue=venue, ts_event=TS, spot=SPOT,
        closes=np.full(30, SPOT) if closes is None else closes, atm_iv=atm_iv,
        iv_history=np.array([0.4, 0.6]) if iv_history is None else iv_history,
        chain=build_chain(venue, "BTC", SPOT, TS, atm_iv), capital=capital,
        cash=capital if cash is None else cash, spot_quantity=spot_quantity, spot_cost_basis=spot_cost_basis)


def rising(pct: float) -> np.ndarray:
    closes = np.full(30, SPOT / (1 + pct / 100))
    closes[-1] = SPOT
    return closes


def dte(trade) -> float:
    return trade.contract.dte_days(TS)


def test_momentum_buys_atm_call_on_breakout_and_put_on_breakdown():
    [call] = decide("momentum_options", ctx(closes=rising(8.0)), [])
    assert (call.action, call.side, call.contract.is_call, call.contract.strike) == ("open", 1, True, 90_000.0)
    assert dte(call) == pytest.approx(29.8333, abs=1e-3)  # 25 Dec (29.8d) is the listed expiry nearest 37 DTE
    [put] = decide("momentum_options", ctx(closes=rising(-8.0)), [])
    assert not put.contract.is_call and put.side == 1
    assert decide("momentum_options", ctx(closes=rising(2.0)), []) == []
    assert decide("momentum_options", ctx(closes=np.full(5, SPOT)), []) == []  # too little history


def test_buy_size_fits_the_budget_on_the_venue_step():
    c = ctx(closes=rising(8.0), capital=100_000.0)
    [call] = decide("momentum_options", c, [])
    budget = 25_000.0  # alloc_fraction 0.25
    row = c.chain.lookup(call.contract)
    assert call.premium == c.chain.mark[row]
    assert call.quantity == pytest.approx(np.floor(budget / call.premium * 10) / 10)
    assert call.quantity * call.premium <= budget


def test_small_strategy_on_deribit_gets_no_trade_but_fits_on_cme_micro():
    small = dict(closes=rising(8.0), capital=1_000.0)
    assert decide("momentum_options", ctx(**small), []) == []  # 0.1 BTC ATM call costs > $250
    [micro] = decide("momentum_options", ctx(venue=IBKR_CME, **dict(small, capital=20_000.0)), [])
    assert micro.contract.multiplier == 0.1 and micro.quantity == float(int(micro.quantity)) >= 1


def test_vol_mean_reversion_sells_strangle_on_high_rank_and_buys_straddle_on_low():
    high = decide("vol_mean_reversion", ctx(atm_iv=0.7, iv_history=np.array([0.4, 0.72])), [])
    assert [(t.side, t.contract.is_call, t.contract.strike, t.group) for t in high] == [
        (-1, False, 81_000.0, "strangle"), (-1, True, 99_000.0, "strangle")]
    assert dte(high[0]) == pytest.approx(29.8333, abs=1e-3)
    low = decide("vol_mean_reversion", ctx(atm_iv=0.42, iv_history=np.array([0.4, 0.72])), [])
    assert [(t.side, t.contract.is_call, t.contract.strike) for t in low] == [(1, True, 90_000.0), (1, False, 90_000.0)]
    assert decide("vol_mean_reversion", ctx(atm_iv=0.55, iv_history=np.array([0.4, 0.72])), []) == []


def test_protective_put_and_covered_call_strikes_and_expiries():
    [put] = decide("protective_puts", ctx(), [])
    assert (put.side, put.contract.is_call, put.contract.strike) == (1, False, 79_000.0)  # 90000 * 0.88 = 79200
    assert dte(put) == pytest.approx(29.8333, abs=1e-3)  # 25 Dec beats 29 Jan (64.8d) for 45 DTE
    [call] = decide("covered_calls", ctx(spot_quantity=0.35), [])
    assert (call.side, call.contract.is_call, call.contract.strike) == (-1, True, 101_000.0)  # 100800
    assert call.quantity == pytest.approx(0.3)  # covered by the 0.35 BTC held, on the 0.1 step
    assert dte(call) == pytest.approx(22.8333, abs=1e-3)  # 18 Dec


def test_no_duplicate_hedge_when_one_is_held():
    [put] = decide("protective_puts", ctx(), [])
    held = OptionPosition(put.contract, put.quantity, put.premium, TS, put.greeks)
    assert decide("protective_puts", ctx(), [held]) == []


def test_wheel_sells_put_only_when_premium_is_rich_enough():
    [put] = decide("wheel", ctx(atm_iv=0.6), [])
    assert (put.side, put.contract.is_call, put.contract.strike) == (-1, False, 85_000.0)  # 84600
    assert put.premium / 85_000 >= 0.02
    assert put.quantity == pytest.approx(np.floor(25_000 / 85_000 * 10) / 10)  # cash-secured: 0.2
    assert decide("wheel", ctx(atm_iv=0.2), []) == []


def test_wheel_sells_calls_above_cost_basis_after_assignment():
    [call] = decide("wheel", ctx(spot_quantity=0.2, spot_cost_basis=95_500.0), [])
    assert call.side == -1 and call.contract.is_call and call.contract.strike == 96_000.0
    assert call.quantity == pytest.approx(0.2)


def test_exits_take_profit_stop_and_dte():
    c = ctx()
    expiry = c.chain.expiries()[-4]
    row = c.chain.lookup(dataclasses.replace(decide("covered_calls", c, [])[0].contract, expiry_ts=expiry))
    contract, mark = c.chain.contract(row), float(c.chain.mark[row])
    greeks = c.chain.greeks(row)
    won = OptionPosition(contract, -0.5, mark / 0.39, TS - DAY_MS, greeks)  # kept 61%
    lost = OptionPosition(contract, -0.5, mark / 3.01, TS - DAY_MS, greeks)  # lost 201%
    fine = OptionPosition(contract, -0.5, mark / 0.5, TS - DAY_MS, greeks)  # kept 50%
    near = OptionPosition(c.chain.contract(0), 1.0, float(c.chain.mark[0]), TS - DAY_MS, c.chain.greeks(0))
    trades = decide("momentum_options", c, [won, lost, fine, near])
    assert [(t.action, t.side, t.quantity) for t in trades] == [
        ("close", 1, 0.5), ("close", 1, 0.5), ("close", -1, 1.0)]
    assert "theta harvest" in trades[0].reason and "stop" in trades[1].reason and "DTE" in trades[2].reason


def test_wheel_keeps_shorts_to_expiry():
    c = ctx()
    near = OptionPosition(c.chain.contract(1), -0.2, float(c.chain.mark[1]), TS - DAY_MS, c.chain.greeks(1))
    assert [t for t in decide("wheel", c, [near]) if t.action == "close"] == []


def test_bad_names_and_params_raise():
    with pytest.raises(StrategyError, match="unknown options strategy 'iron_condor'"):
        decide("iron_condor", ctx(), [])
    with pytest.raises(StrategyError, match=r"wheel\.put_otn: unknown parameter"):
        decide("wheel", ctx(), [], {"put_otn": 0.1})
    with pytest.raises(StrategyError, match=r"wheel\.put_otm: expected a finite number >= 0"):
        decide("wheel", ctx(), [], {"put_otm": "6%"})


# --- sizing inside the limits, and the reason when nothing fits --------------------------------
def limited(limits=None, **kw) -> OptionsContext:
    return dataclasses.replace(ctx(**kw), limits=limits or OptionsRiskLimits())


def test_momentum_call_is_sized_to_the_delta_limit_not_the_budget():
    c = limited(closes=rising(8.0), capital=100_000.0)
    [call] = decide("momentum_options", c, [])
    delta = call.greeks["delta"]
    # Budget 25k buys 25k / premium contracts; the delta limit allows 1.0 x 100k / 90k coins / delta.
    by_delta = 100_000.0 / SPOT / delta
    assert by_delta < 25_000.0 / call.premium
    assert call.quantity == pytest.approx(np.floor(by_delta * 10) / 10)
    assert check_options_trade(OptionsRiskLimits(), [], call, 100_000.0, spot=SPOT)[0]


def test_when_not_even_the_venue_minimum_fits_the_limit_the_reason_names_it_and_the_numbers():
    c = limited(OptionsRiskLimits(max_delta_ratio=0.01), closes=rising(8.0), capital=100_000.0)
    trades, why = decide_with_reason("momentum_options", c, [])
    row = c.chain.lookup(decide("momentum_options", ctx(closes=rising(8.0)), [])[0].contract)
    delta = c.chain.greeks(row)["delta"]
    assert trades == []
    assert why == (f"venue minimum: 0.1 contract(s) (0.1 BTC) of {c.chain.contract(row).name} would put net delta "
                   f"at {0.1 * delta * SPOT / 100_000.0:.3f} x value > risk limit 0.01")


def test_when_the_budget_cannot_pay_the_venue_minimum_the_reason_says_how_much():
    trades, why = decide_with_reason("wheel", limited(atm_iv=0.6, capital=1_000.0), [])
    assert trades == []
    assert why.startswith("venue minimum: 0.1 contract(s) (0.1 BTC) of BTC-")
    assert why.endswith("needs $8,500.00 > budget min(cash, capital x alloc_fraction 0.25) $250.00")  # 85k strike


def test_idle_strategies_say_why():
    assert decide_with_reason("momentum_options", ctx(closes=rising(2.0)), [])[1] == \
        "no signal: ROC(14) +2.0% within +-5%"
    assert decide_with_reason("vol_mean_reversion", ctx(atm_iv=0.55, iv_history=np.array([0.4, 0.72])), [])[1] == \
        "no signal: IV rank 47 between 25 and 75"
    assert decide_with_reason("wheel", ctx(atm_iv=0.2), [])[1].startswith("no signal: put premium ")
    [put] = decide("protective_puts", ctx(), [])
    held = OptionPosition(put.contract, put.quantity, put.premium, TS, put.greeks)
    holding = decide_with_reason("protective_puts", ctx(), [held])[1]
    assert holding == f"holding: {put.contract.name} x +{put.quantity:g} still open"


# --- buy-write and married put: the coins are the strategy's own --------------------------------
def test_married_put_buys_the_coins_it_protects_with_the_strategys_capital():
    c = limited(capital=100_000.0)
    [put] = decide("protective_puts", c, [])
    # 50k (spot_fraction 0.5) pays per contract 1 BTC at spot + 1% + the put's premium
    expected = np.floor(50_000.0 / (SPOT * 1.01 + put.premium) * 10) / 10
    assert (put.side, put.contract.is_call) == (1, False)
    assert put.quantity == pytest.approx(expected) and put.spot_coins == pytest.approx(put.quantity)
    assert "married put: buy" in put.reason


def test_protective_put_with_coins_hedges_exactly_the_coins_held():
    [put] = decide("protective_puts", limited(spot_quantity=0.35), [])
    assert put.quantity == pytest.approx(0.3) and put.spot_coins == 0.0


def test_covered_call_without_coins_is_a_buy_write_never_a_naked_call():
    c = limited(capital=100_000.0)
    [call] = decide("covered_calls", c, [])
    assert call.side == -1 and call.contract.is_call
    assert call.spot_coins > 0 and call.spot_coins == pytest.approx(call.quantity * call.contract.multiplier)
    assert call.quantity == pytest.approx(np.floor(50_000.0 / (SPOT * 1.01) * 10) / 10)
    [micro] = decide("covered_calls", dataclasses.replace(c, venue=IBKR_CME, chain=build_chain(
        IBKR_CME, "BTC", SPOT, TS, 0.5)), [])
    assert micro.quantity == float(int(micro.quantity)) and micro.spot_coins == pytest.approx(micro.quantity * 0.1)


def test_no_strategy_ever_writes_a_call_it_holds_no_coins_for():
    for name in ("covered_calls", "wheel"):
        for c in (ctx(), ctx(atm_iv=0.8), ctx(spot_quantity=0.05)):
            for t in decide(name, c, []):
                if t.side < 0 and t.contract.is_call:
                    assert t.spot_coins + c.spot_quantity >= t.quantity * t.contract.multiplier - 1e-9
