"""Option orders become fills all-or-nothing, fills move positions, expiry settles at intrinsic."""
import dataclasses
from datetime import datetime, timezone

import pytest

from common.model import RecordError
from options.contracts import OptionContract, ProposedTrade
from options.venues import DERIBIT, IBKR_CME
from trading.ledger import apply_fill, new_book
from trading.option_book import (
    OptionLeg,
    OptionOrder,
    OptionOrderError,
    apply_option_fill,
    decide_option_order,
    mark_option_positions,
    option_orders,
    option_value,
    settle_expired,
)
from trading.order_checks import PriceTape

TS = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
DERIBIT_EXPIRY = DERIBIT.listed_expiries(TS, 60)[-1]
CME_EXPIRY = IBKR_CME.listed_expiries(TS, 60)[-1]


def deribit(strike=90_000.0, is_call=True):
    return OptionContract("deribit", "BTC", DERIBIT_EXPIRY, strike, is_call, 1.0)


def cme(strike=90_000.0, is_call=True):
    return OptionContract("ibkr", "BTC", CME_EXPIRY, strike, is_call, 0.1)


def leg(contract, side=1, quantity=1.0, premium=5_000.0, action="open", score=0.7):
    return OptionLeg(contract, side, quantity, premium, {"delta": 0.5}, score, "test", action)


def order(*legs, oid="s:1:x", ts=TS):
    return OptionOrder(oid, "s", ts, 90_000.0, tuple(legs))


def decide(book, o, fee_rate=0.0, max_positions=4, entry_block=None):
    return decide_option_order(book, o, fee_rate=fee_rate, seq0=1, max_positions=max_positions, min_score=0.3,
                               entry_block=entry_block)


def book_fills(book, fills):
    for fill in fills:
        apply_fill(book, fill)
        if fill.kind in ("option", "settlement"):
            apply_option_fill(book, fill)


def tape_at(*ticks, symbol="BTC/USDT"):
    """A tape with ``(price, ts)`` ticks of ``symbol``, or one tick ``tape_at(price, ts)``."""
    tape = PriceTape(10 * 86_400_000)
    for price, ts in ticks if isinstance(ticks[0], tuple) else [ticks]:
        tape.record(symbol, price, ts)
    return tape


def fresh(capital=100_000.0):
    return new_book("s", "options", capital, TS)


def test_cme_micro_costs_a_tenth_of_deribit_at_the_same_strike_and_premium():
    [on_deribit] = decide(fresh(), order(leg(deribit()))).fills
    [on_cme] = decide(fresh(), order(leg(cme()))).fills
    assert on_deribit.cash_delta == -5_000.0 and on_cme.cash_delta == -500.0
    assert on_cme.cash_delta / on_deribit.cash_delta == 0.1
    assert (on_deribit.extra["multiplier"], on_cme.extra["multiplier"]) == (1.0, 0.1)
    assert on_cme.instrument.startswith("MBT-") and on_deribit.instrument.startswith("BTC-")


def test_open_then_close_books_fee_honest_realized_pnl():
    book = fresh()
    sold = decide(book, order(leg(deribit(is_call=False), side=-1, premium=2_000.0)), fee_rate=0.001)
    assert sold.status == "filled"
    book_fills(book, sold.fills)
    position = book.option_positions[deribit(is_call=False).name]
    assert book.cash == pytest.approx(100_000.0 + 1_998.0)
    assert (position.quantity, position.entry_premium, position.open_cash_per_contract) == (-1.0, 2_000.0, 1_998.0)
    bought = decide(book, order(leg(deribit(is_call=False), side=1, premium=800.0, action="close"), oid="s:2:c"),
                    fee_rate=0.001)
    [fill] = bought.fills
    assert fill.cash_delta == pytest.approx(-800.8)
    assert fill.realized_pnl == pytest.approx(1_998.0 - 800.8)
    book_fills(book, bought.fills)
    assert book.option_positions == {}
    assert book.cash - 100_000.0 == pytest.approx(fill.realized_pnl)


def test_marks_write_current_value_and_greeks_into_positions():
    book = fresh()
    book_fills(book, decide(book, order(leg(deribit(is_call=False), side=-1, premium=2_000.0))).fills)
    name = deribit(is_call=False).name
    total = mark_option_positions(book, {name: {"mark_usd": 1_500.0, "delta": -0.3, "vega": 80.0, "source": "sim"}},
                                  TS + 1)
    position = book.option_positions[name]
    assert total == -1_500.0 == option_value(book) == position.value_usd
    assert position.unrealized_pnl == 500.0
    assert position.greeks == {"delta": -0.3, "vega": 80.0} and position.mark_source == "sim"
    with pytest.raises(ValueError, match=r"marks\['BTC-.*'\].mark_usd"):
        mark_option_positions(book, {name: {"mark_usd": float("nan")}}, TS)


def test_a_leg_that_cannot_fill_rejects_the_whole_structure():
    book = fresh()
    strangle = order(leg(deribit(80_000.0, False), side=-1), leg(deribit(100_000.0), side=-1, score=0.2))
    decision = decide(book, strangle)
    assert decision.status == "rejected" and decision.fills == ()
    assert "leg 1" in decision.reason and "score 0.200 < 0.3" in decision.reason
    closing_unheld = decide(book, order(leg(deribit(), side=-1, action="close")))
    assert closing_unheld.status == "rejected" and "holds 0" in closing_unheld.reason
    assert decide(fresh(1_000.0), order(leg(deribit()))).reason == "insufficient cash: needs 5000.00, has 1000.00"
    blocked = decide(book, order(leg(deribit())), entry_block="kill switch: drawdown")
    assert blocked.status == "rejected" and "kill switch" in blocked.reason
    expired = decide(book, order(leg(deribit()), ts=DERIBIT_EXPIRY))
    assert expired.status == "rejected" and "expired" in expired.reason


def test_no_more_than_max_positions_open():
    book = fresh(1e7)
    legs = [leg(deribit(80_000.0 + 1_000.0 * i), premium=100.0) for i in range(4)]
    book_fills(book, decide(book, order(*legs)).fills)
    assert len(book.option_positions) == 4
    fifth = decide(book, order(leg(deribit(95_000.0), premium=100.0), oid="s:2:y"))
    assert fifth.status == "rejected" and fifth.reason == "would hold 5 option positions > max 4"


def test_a_retried_order_is_a_duplicate_as_a_whole():
    book = fresh()
    strangle = order(leg(deribit(80_000.0, False), side=-1, premium=900.0),
                     leg(deribit(100_000.0), side=-1, premium=1_100.0))
    first = decide(book, strangle)
    assert [f.seq for f in first.fills] == [1, 2]
    book_fills(book, first.fills)
    again = decide(book, strangle)
    assert again.status == "duplicate" and again.fills == ()
    assert book.cash == 102_000.0


@pytest.mark.parametrize("spot, long_call_cash, short_put_cash", [
    (95_000.0, 5_000.0, 0.0),  # call ITM by 5000, put OTM
    (85_000.0, 0.0, -1_000.0),  # call OTM, put ITM by 5000 on 2 CME contracts = 0.2 coin
    (90_000.0, 0.0, 0.0),  # at the money: both worthless
])
def test_expiry_settles_itm_at_intrinsic_and_otm_at_zero(spot, long_call_cash, short_put_cash):
    book = fresh()
    book_fills(book, decide(book, order(leg(deribit(), premium=3_000.0))).fills)
    put = OptionContract("ibkr", "BTC", DERIBIT_EXPIRY, 90_000.0, False, 0.1)
    book_fills(book, decide(book, order(leg(put, side=-1, quantity=2.0, premium=2_000.0), oid="s:2:p")).fills)
    assert settle_expired(book, tape_at(spot, DERIBIT_EXPIRY - 1), DERIBIT_EXPIRY - 1, first_seq=3) == []
    fills = settle_expired(book, tape_at(spot, DERIBIT_EXPIRY), DERIBIT_EXPIRY, first_seq=3)
    by_name = {f.instrument: f for f in fills}
    assert [f.seq for f in fills] == [3, 4] and {f.kind for f in fills} == {"settlement"}
    assert by_name[deribit().name].cash_delta == long_call_cash
    assert by_name[deribit().name].realized_pnl == long_call_cash - 3_000.0
    assert by_name[put.name].cash_delta == short_put_cash
    assert by_name[put.name].realized_pnl == short_put_cash + 400.0
    book_fills(book, fills)
    assert book.option_positions == {}


def test_wheel_put_assigned_buys_coins_at_the_strike():
    book = fresh()
    put = deribit(85_000.0, False)
    book_fills(book, decide(book, order(leg(put, side=-1, quantity=0.1, premium=2_000.0))).fills)
    settlement, delivery = settle_expired(book, tape_at(80_000.0, DERIBIT_EXPIRY), DERIBIT_EXPIRY, first_seq=2,
                                          assign_puts=True)
    assert (settlement.kind, settlement.cash_delta, settlement.realized_pnl) == ("settlement", 0.0, 200.0)
    assert settlement.extra["assigned_coins"] == pytest.approx(0.1)
    assert (delivery.kind, delivery.side, delivery.instrument, delivery.seq) == ("spot", "buy", "BTC/USDT", 3)
    assert delivery.quantity == pytest.approx(0.1) and delivery.cash_delta == pytest.approx(-8_500.0)
    book_fills(book, [settlement, delivery])
    held = book.positions["BTC/USDT"]
    assert held.quantity == pytest.approx(0.1) and held.avg_price == pytest.approx(85_000.0)
    assert book.cash == pytest.approx(100_000.0 + 200.0 - 8_500.0)


def test_covered_call_assigned_sells_the_coins_held():
    book = fresh()
    put = deribit(85_000.0, False)
    book_fills(book, decide(book, order(leg(put, side=-1, quantity=0.1, premium=0.0))).fills)
    book_fills(book, settle_expired(book, tape_at(80_000.0, DERIBIT_EXPIRY), DERIBIT_EXPIRY, first_seq=2,
                                    assign_puts=True))
    call = OptionContract("deribit", "BTC", DERIBIT_EXPIRY + 7 * 86_400_000, 95_000.0, True, 1.0)
    book_fills(book, decide(book, order(leg(call, side=-1, quantity=0.1, premium=1_000.0), oid="s:9:c",
                                        ts=DERIBIT_EXPIRY)).fills)
    settlement, delivery = settle_expired(book, tape_at(100_000.0, call.expiry_ts), call.expiry_ts, first_seq=10)
    assert settlement.cash_delta == 0.0 and delivery.side == "sell"
    assert delivery.cash_delta == pytest.approx(9_500.0) and delivery.realized_pnl == pytest.approx(1_000.0)
    book_fills(book, [settlement, delivery])
    assert book.positions == {} and book.option_positions == {}


def test_short_put_without_assignment_is_cash_settled():
    book = fresh()
    book_fills(book, decide(book, order(leg(deribit(85_000.0, False), side=-1, quantity=0.1, premium=0.0))).fills)
    [fill] = settle_expired(book, tape_at(80_000.0, DERIBIT_EXPIRY), DERIBIT_EXPIRY, first_seq=2)
    assert fill.cash_delta == pytest.approx(-500.0) and book.positions == {}


HOUR = 3_600_000


@pytest.mark.parametrize("ticks, settle_spot, settle_ts", [
    # Marked 5 h after the expiry, at 70,000: it settles at the price of the expiry, not the mark's.
    (((93_000.0, DERIBIT_EXPIRY - 60_000), (94_000.0, DERIBIT_EXPIRY + 120_000), (70_000.0, DERIBIT_EXPIRY + 5 * HOUR)),
     93_000.0, DERIBIT_EXPIRY - 60_000),
    (((93_000.0, DERIBIT_EXPIRY - 120_000), (94_000.0, DERIBIT_EXPIRY + 60_000), (70_000.0, DERIBIT_EXPIRY + 5 * HOUR)),
     94_000.0, DERIBIT_EXPIRY + 60_000),
    (((93_000.0, DERIBIT_EXPIRY - 60_000), (94_000.0, DERIBIT_EXPIRY + 60_000)), 93_000.0, DERIBIT_EXPIRY - 60_000),
    (((96_000.0, DERIBIT_EXPIRY),), 96_000.0, DERIBIT_EXPIRY),
    # Nothing from before the expiry (the portfolio started after it): the first tick after it.
    (((97_000.0, DERIBIT_EXPIRY + 2 * HOUR), (70_000.0, DERIBIT_EXPIRY + 5 * HOUR)),
     97_000.0, DERIBIT_EXPIRY + 2 * HOUR),
])
def test_expiry_settles_at_the_tick_nearest_the_expiry_however_late_the_mark(ticks, settle_spot, settle_ts):
    book = fresh()
    book_fills(book, decide(book, order(leg(deribit(), premium=3_000.0))).fills)
    [fill] = settle_expired(book, tape_at(*ticks), DERIBIT_EXPIRY + 5 * HOUR, first_seq=2)
    assert (fill.extra["settle_spot"], fill.extra["settle_spot_ts"]) == (settle_spot, settle_ts)
    assert fill.price == settle_spot - 90_000.0 and fill.cash_delta == settle_spot - 90_000.0
    assert fill.ts_event == DERIBIT_EXPIRY + 5 * HOUR  # booked when marked


def test_expiry_waits_for_a_price_of_its_underlying():
    book = fresh()
    book_fills(book, decide(book, order(leg(deribit(), premium=3_000.0))).fills)
    assert settle_expired(book, tape_at(3_000.0, DERIBIT_EXPIRY, symbol="ETH/USDT"), DERIBIT_EXPIRY, first_seq=2) == []
    assert settle_expired(book, tape_at(95_000.0, DERIBIT_EXPIRY), DERIBIT_EXPIRY, first_seq=2, quote="USD") == []


def test_option_orders_group_structures_under_one_id():
    put, call = deribit(80_000.0, False), deribit(100_000.0)
    trades = [ProposedTrade("close", cme(), -1, 1.0, 10.0, {}, "exit", 1.0),
              ProposedTrade("open", put, -1, 0.1, 900.0, {}, "iv high", 0.7, "strangle"),
              ProposedTrade("open", call, -1, 0.1, 800.0, {}, "iv high", 0.7, "strangle")]
    close, strangle = option_orders("s", TS, 90_000.0, trades)
    assert close.order_id == f"s:{TS}:close-{cme().name}" and len(close.legs) == 1
    assert strangle.order_id == f"s:{TS}:open-strangle" and [leg.contract for leg in strangle.legs] == [put, call]
    assert OptionOrder.from_dict(strangle.to_dict()) == strangle


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(legs=[]), "option_order.legs: expected a non-empty list"),
    (lambda d: d["legs"][0].update(side=2), r"option_order.legs\[0\].side: must be 1 \(buy\) or -1"),
    (lambda d: d["legs"][0].update(quantity=0), r"option_order.legs\[0\].quantity: must be > 0"),
    (lambda d: d["legs"][0].update(action="roll"), r"option_order.legs\[0\].action: must be one of"),
    (lambda d: d["legs"][0]["contract"].update(venue="cboe"), r"option_order.legs\[0\].contract"),
    (lambda d: d.pop("strategy_id"), "option_order.strategy_id: missing"),
    (lambda d: d.update(spot=0), "option_order.spot: must be > 0"),
    (lambda d: d.update(spot_quantity=-0.1), "option_order.spot_quantity"),
    (lambda d: d.update(spot_quantity="1"), "option_order.spot_quantity"),
])
def test_bad_order_dicts_name_the_field(mutate, message):
    d = order(leg(deribit())).to_dict()
    mutate(d)
    with pytest.raises(OptionOrderError, match=message):
        OptionOrder.from_dict(d)
    assert issubclass(OptionOrderError, RecordError)


def test_decide_refuses_a_book_of_another_kind_or_strategy():
    with pytest.raises(ValueError, match="not options"):
        decide(new_book("s", "spot", 1000.0, TS), order(leg(deribit())))
    with pytest.raises(ValueError, match="does not match book"):
        decide(new_book("t", "options", 1000.0, TS), order(leg(deribit())))


# --- the spot leg of a buy-write / married put: coins and option together or not at all ----------
def buy_write(quantity=0.5, premium=2_000.0, oid="s:1:bw"):
    trade = ProposedTrade("open", deribit(100_000.0), -1, quantity, premium, {"delta": 0.3}, "buy-write", 0.7,
                          spot_coins=quantity)
    [o] = option_orders("s", TS, 90_000.0, [trade])
    return dataclasses.replace(o, order_id=oid)


def test_a_buy_write_buys_its_coins_in_the_same_order_and_the_ledger_holds_them():
    book = fresh()
    o = buy_write()
    assert o.spot_quantity == 0.5 and OptionOrder.from_dict(o.to_dict()) == o
    decision = decide_option_order(book, o, fee_rate=0.001, seq0=7, max_positions=4, min_score=0.3, quote="USDT")
    option_fill, coins = decision.fills
    assert decision.status == "filled" and (option_fill.seq, coins.seq) == (7, 8)
    assert (coins.kind, coins.instrument, coins.side, coins.quantity, coins.price) == ("spot", "BTC/USDT", "buy",
                                                                                        0.5, 90_000.0)
    assert coins.fee == pytest.approx(45.0) and coins.cash_delta == pytest.approx(-45_045.0)  # 0.5 x 90k + 0.1%
    book_fills(book, decision.fills)
    assert book.positions["BTC/USDT"].quantity == 0.5
    assert book.positions["BTC/USDT"].avg_price == pytest.approx(90_090.0)  # fee-inclusive cost per coin
    assert book.option_positions[deribit(100_000.0).name].quantity == -0.5
    assert book.cash == pytest.approx(100_000.0 - 45_045.0 + 0.5 * 2_000.0 * 0.999)


def test_a_spot_leg_the_cash_cannot_pay_rejects_the_whole_order():
    book = fresh(capital=40_000.0)
    decision = decide(book, buy_write())
    assert decision.status == "rejected" and decision.fills == ()
    assert decision.reason == "insufficient cash: needs 44000.00, has 40000.00"  # 45k coins less 1k premium
    assert book.positions == {} and book.option_positions == {}


def test_orders_without_a_spot_leg_keep_their_wire_format():
    assert "spot_quantity" not in order(leg(deribit())).to_dict()
