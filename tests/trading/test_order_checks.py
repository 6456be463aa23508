"""The portfolio's own prices for spot orders: the tape of ticks, the band, the market-time rule."""
from __future__ import annotations

import math

import pytest

from common.model import SpotOrder
from trading.order_checks import OK, REJECTED, RETRY, PriceTape, backdated_reason, band_reason, check_spot_order

HOUR = 3_600_000
T = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def tape_with(*ticks: tuple[str, float, int], span_ms: int = HOUR) -> PriceTape:
    tape = PriceTape(span_ms)
    for symbol, price, ts in ticks:
        tape.record(symbol, price, ts)
    return tape


def order(price: float, ts: int, symbol: str = "BTC/USDT", signal: int = 1) -> SpotOrder:
    return SpotOrder(f"s:{ts}", "s", symbol, signal, price, ts)


def check(o: SpotOrder, tape: PriceTape, *, symbols=("BTC/USDT",), market_ts: int = T, lag_ms: int = HOUR,
          band_pct: float = 5.0):
    return check_spot_order(o, tape, symbols=symbols, market_ts=market_ts, lag_ms=lag_ms, band_pct=band_pct)


def test_tape_answers_the_newest_tick_at_or_before_a_time():
    tape = tape_with(("BTC/USDT", 100.0, T), ("BTC/USDT", 101.0, T + 60_000), ("BTC/USDT", 102.0, T + 120_000))
    assert tape.price_at("BTC/USDT", T + 60_000) == (T + 60_000, 101.0)
    assert tape.price_at("BTC/USDT", T + 119_999) == (T + 60_000, 101.0)
    assert tape.price_at("BTC/USDT", T - 1) is None
    assert tape.price_at("ETH/USDT", T) is None


def test_tape_answers_the_tick_nearest_a_time_on_either_side():
    tape = tape_with(("BTC/USDT", 100.0, T), ("BTC/USDT", 101.0, T + 60_000), ("BTC/USDT", 102.0, T + 120_000))
    assert tape.nearest("BTC/USDT", T + 89_999) == (T + 60_000, 101.0)
    assert tape.nearest("BTC/USDT", T + 90_001) == (T + 120_000, 102.0)
    assert tape.nearest("BTC/USDT", T + 90_000) == (T + 60_000, 101.0)  # a tie: the earlier
    assert tape.nearest("BTC/USDT", T - HOUR) == (T, 100.0)
    assert tape.nearest("BTC/USDT", T + HOUR) == (T + 120_000, 102.0)
    assert tape.nearest("ETH/USDT", T) is None
    assert tape.last("BTC/USDT") == (T + 120_000, 102.0)


def test_tape_keeps_no_bad_price_and_no_tick_older_than_the_last():
    tape = tape_with(("BTC/USDT", 100.0, T))
    for price in (0.0, -1.0, math.nan, math.inf):
        assert tape.record("BTC/USDT", price, T + 1) is False
    assert tape.record("BTC/USDT", 99.0, T - 1) is False  # late: the tape never goes back
    assert tape.record("BTC/USDT", 100.5, T) is True  # the same time again: the newer word wins
    assert tape.last("BTC/USDT") == (T, 100.5)


def test_tape_forgets_ticks_older_than_its_span_but_the_one_at_its_start():
    tape = PriceTape(10 * 60_000)
    for i in range(200):
        tape.record("BTC/USDT", 100.0 + i, T + i * 60_000)
    now = T + 199 * 60_000
    assert tape.price_at("BTC/USDT", now - 10 * 60_000) == (now - 10 * 60_000, 289.0)
    assert tape.price_at("BTC/USDT", T) is None  # pruned


def test_backdated_allows_one_bar_in_flight_and_no_more():
    assert backdated_reason(T - HOUR, T, HOUR) is None
    why = backdated_reason(T - HOUR - 1, T, HOUR)
    assert why is not None and "back-dated" in why and str(HOUR + 1) in why


def test_band_is_a_percentage_of_the_mark_or_of_the_floor():
    assert band_reason(105.0, 100.0, 5.0, "p") is None
    assert "+5.01%" in band_reason(105.01, 100.0, 5.0, "p")
    assert band_reason(3.0, 2.0, 5.0, "p", floor=20.0) is None  # |3-2| = 1 <= 5% of 20
    assert band_reason(3.01, 2.0, 5.0, "p", floor=20.0) is not None
    assert "not a finite number" in band_reason(math.nan, 2.0, 5.0, "p")


def test_fills_at_its_own_tick_not_the_declared_price():
    tape = tape_with(("BTC/USDT", 90_000.0, T - 60_000), ("BTC/USDT", 90_100.0, T), ("BTC/USDT", 95_000.0, T + 60_000))
    got = check(order(92_000.0, T), tape, market_ts=T + 60_000)
    assert (got.status, got.price) == (OK, 90_100.0)  # 92,000 is 2.1% off: inside the band, not the price


@pytest.mark.parametrize("declared, fragment", [
    (0.01, "-100.00% from the portfolio's mark 90000"),  # ETH-at-a-cent, here on BTC
    (1e-304, "-100.00% from"),
    (95_000.0, "+5.56% from"),
])
def test_a_price_outside_the_band_is_refused(declared, fragment):
    got = check(order(declared, T), tape_with(("BTC/USDT", 90_000.0, T)))
    assert got.status == REJECTED and fragment in got.reason and "band ±5%" in got.reason


def test_a_symbol_the_strategy_does_not_trade_is_refused():
    tape = tape_with(("BTC/USDT", 90_000.0, T), ("ETH/USDT", 3_000.0, T))
    got = check(order(3_000.0, T, "ETH/USDT"), tape)
    assert got.status == REJECTED and "'ETH/USDT' is not traded by s (it trades BTC/USDT)" in got.reason
    got = check(order(1.0, T, "FAKE/USDT"), tape, symbols=())
    assert got.status == REJECTED and "unknown symbol 'FAKE/USDT'" in got.reason


def test_a_pair_strategy_trades_both_of_its_symbols():
    tape = tape_with(("BTC/USDT", 90_000.0, T), ("ETH/USDT", 3_000.0, T))
    got = check(order(3_000.0, T, "ETH/USDT"), tape, symbols=("BTC/USDT", "ETH/USDT"))
    assert (got.status, got.price) == (OK, 3_000.0)


def test_back_dated_and_future_orders_are_refused():
    tape = tape_with(("BTC/USDT", 90_000.0, T - 2 * HOUR), ("BTC/USDT", 91_000.0, T))
    got = check(order(90_000.0, T - 2 * HOUR), tape)
    assert got.status == REJECTED and "back-dated" in got.reason
    got = check(order(91_000.0, T + HOUR + 1), tape)
    assert got.status == REJECTED and "dated in the future" in got.reason


def test_an_order_a_little_ahead_of_the_ticks_or_before_any_price_is_retried():
    tape = tape_with(("BTC/USDT", 90_000.0, T))
    got = check(order(90_000.0, T + 60_000), tape)
    assert got.status == RETRY and "no BTC/USDT tick at the order time" in got.reason
    got = check(order(90_000.0, T), PriceTape(HOUR))
    assert got.status == RETRY and "no price for BTC/USDT from the feed yet" in got.reason


def test_an_order_older_than_every_tick_kept_is_refused():
    got = check(order(90_000.0, T - 60_000), tape_with(("BTC/USDT", 90_000.0, T)))
    assert got.status == REJECTED and "no BTC/USDT price at or before" in got.reason


def test_the_tape_span_must_be_a_non_negative_integer():
    with pytest.raises(ValueError, match="span_ms"):
        PriceTape(-1)
