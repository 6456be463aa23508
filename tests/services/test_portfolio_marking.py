"""The portfolio service in process: ticks fill orders of their time, market time never goes back,
and a book that cannot be marked is a problem /healthz sees until a mark values it again."""
from __future__ import annotations

import math

import pytest

from services.portfolio import ORDER_TRANSIT_SECONDS, order_transit_ms
from tests.support.builders import portfolio_service, tick
from tests.support.stack import stack_config

T = 1_767_225_600_000
HOUR = 3_600_000


@pytest.fixture
def service(tmp_path):
    raw = stack_config(speed=60)
    raw["state_file"] = str(tmp_path / "state" / "state.json")
    with portfolio_service(raw, tmp_path) as svc:
        yield svc


def test_the_transit_allowance_is_wall_seconds_at_the_feed_speed(service):
    assert ORDER_TRANSIT_SECONDS == 30.0
    assert order_transit_ms(service.cfg) == 30 * 60 * 1000  # speed 60: thirty market minutes
    assert service.portfolio.order_lag_ms("momentum-btc") == HOUR + 1_800_000


def test_an_order_fills_at_the_tick_of_its_time_even_before_the_mark(service):
    tick(service, "BTC/USDT", 90_000.0, T)
    ack = service.on_order({"order_id": "momentum-btc:x", "strategy_id": "momentum-btc", "symbol": "BTC/USDT",
                            "signal": 1, "price": 91_000.0, "ts_event": T})
    assert ack["status"] == "filled" and ack["fill"]["price"] == 90_000.0


def test_a_retry_answer_records_nothing_so_the_resend_is_decided_afresh(service):
    tick(service, "BTC/USDT", 90_000.0, T)
    order = {"order_id": "momentum-btc:y", "strategy_id": "momentum-btc", "symbol": "BTC/USDT", "signal": 1,
             "price": 90_000.0, "ts_event": T + 60_000}
    assert service.on_order(order)["status"] == "retry"
    tick(service, "BTC/USDT", 90_100.0, T + 60_000)
    ack = service.on_order(order)
    assert ack["status"] == "filled" and ack["fill"]["price"] == 90_100.0


def test_a_tick_older_than_the_last_is_dropped(service):
    tick(service, "BTC/USDT", 90_000.0, T)
    tick(service, "BTC/USDT", 1.0, T - 67 * 24 * HOUR)  # a rewound market
    assert service.pending_ticks == {"BTC/USDT": 90_000.0}
    assert service.rt.stats.dropped["stale_tick"] == 1


def test_a_book_that_cannot_be_marked_is_a_problem_until_it_can(service):
    tick(service, "BTC/USDT", 90_000.0, T)
    fill = service.on_order({"order_id": "momentum-btc:z", "strategy_id": "momentum-btc", "symbol": "BTC/USDT",
                             "signal": 1, "price": 90_000.0, "ts_event": T})["fill"]
    service.portfolio.books["rsi-btc"].cash = math.inf
    tick(service, "BTC/USDT", 99_000.0, T + 60_000)
    service.mark()
    assert service.rt.problems["marking"] == "rsi-btc: valuation: value is inf"
    book = service.portfolio.books["momentum-btc"]  # the others are marked
    assert book.risk.last_value == pytest.approx(book.cash + fill["quantity"] * 99_000.0)
    service.portfolio.books["rsi-btc"].cash = 10_000.0
    tick(service, "BTC/USDT", 99_000.0, T + 120_000)
    service.mark()
    assert "marking" not in service.rt.problems
