"""The portfolio service in process: ticks fill orders of their time, market time never goes back,
and a book that cannot be marked is a problem /healthz sees until a mark values it again."""
from __future__ import annotations

import math

import pytest

from services.portfolio import MARK_SECONDS, ORDER_TRANSIT_SECONDS, order_transit_ms
from services.runtime import HOUSEKEEPING_MAX_DELAY_SECONDS
from tests.support.builders import T0 as T
from tests.support.builders import tick

HOUR = 3_600_000


def test_the_transit_allowance_is_wall_seconds_at_the_feed_speed(portfolio_60x):
    assert ORDER_TRANSIT_SECONDS == 30.0
    assert order_transit_ms(portfolio_60x.cfg) == 30 * 60 * 1000  # speed 60: thirty market minutes
    assert portfolio_60x.portfolio.order_lag_ms("momentum-btc") == HOUR + 1_800_000


def test_the_tape_outlasts_the_longest_a_mark_is_held_back(portfolio_60x):
    """An expiry settles at the tape's tick nearest it, in the first mark after it: that mark
    may be held out of close bursts, and the tape must still hold the expiry's ticks then."""
    assert ORDER_TRANSIT_SECONDS > MARK_SECONDS + HOUSEKEEPING_MAX_DELAY_SECONDS
    assert portfolio_60x.portfolio.tape.span_ms >= order_transit_ms(portfolio_60x.cfg)


def test_an_order_fills_at_the_tick_of_its_time_even_before_the_mark(portfolio_60x):
    tick(portfolio_60x, "BTC/USDT", 90_000.0, T)
    ack = portfolio_60x.on_order({"order_id": "momentum-btc:x", "strategy_id": "momentum-btc", "symbol": "BTC/USDT",
                            "signal": 1, "price": 91_000.0, "ts_event": T})
    assert ack["status"] == "filled" and ack["fill"]["price"] == 90_000.0


def test_a_retry_answer_records_nothing_so_the_resend_is_decided_afresh(portfolio_60x):
    tick(portfolio_60x, "BTC/USDT", 90_000.0, T)
    order = {"order_id": "momentum-btc:y", "strategy_id": "momentum-btc", "symbol": "BTC/USDT", "signal": 1,
             "price": 90_000.0, "ts_event": T + 60_000}
    assert portfolio_60x.on_order(order)["status"] == "retry"
    tick(portfolio_60x, "BTC/USDT", 90_100.0, T + 60_000)
    ack = portfolio_60x.on_order(order)
    assert ack["status"] == "filled" and ack["fill"]["price"] == 90_100.0


def test_a_tick_older_than_the_last_is_dropped(portfolio_60x):
    tick(portfolio_60x, "BTC/USDT", 90_000.0, T)
    tick(portfolio_60x, "BTC/USDT", 1.0, T - 67 * 24 * HOUR)  # a rewound market
    assert portfolio_60x.pending_ticks == {"BTC/USDT": 90_000.0}
    assert portfolio_60x.rt.stats.dropped["stale_tick"] == 1


def test_a_book_that_cannot_be_marked_is_a_problem_until_it_can(portfolio_60x):
    tick(portfolio_60x, "BTC/USDT", 90_000.0, T)
    fill = portfolio_60x.on_order({"order_id": "momentum-btc:z", "strategy_id": "momentum-btc", "symbol": "BTC/USDT",
                             "signal": 1, "price": 90_000.0, "ts_event": T})["fill"]
    portfolio_60x.portfolio.books["rsi-btc"].cash = math.inf
    tick(portfolio_60x, "BTC/USDT", 99_000.0, T + 60_000)
    portfolio_60x.mark()
    assert portfolio_60x.rt.problems["marking"] == "rsi-btc: valuation: value is inf"
    book = portfolio_60x.portfolio.books["momentum-btc"]  # the others are marked
    assert book.risk.last_value == pytest.approx(book.cash + fill["quantity"] * 99_000.0)
    portfolio_60x.portfolio.books["rsi-btc"].cash = 10_000.0
    tick(portfolio_60x, "BTC/USDT", 99_000.0, T + 120_000)
    portfolio_60x.mark()
    assert "marking" not in portfolio_60x.rt.problems
