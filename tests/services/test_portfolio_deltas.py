"""The portfolio service's stream to the gateway (clone pattern): numbered deltas carrying the
marks and only the changed books, a totals message for the engines, and a full book_snapshot
current to the last delta, from which a clone plus the later deltas is the portfolio itself."""
from __future__ import annotations

import msgpack
import pytest

from services.views.status import apply_delta, build_status, clone_from_snapshot
from tests.services.test_portfolio_marking import T, service, tick  # noqa: F401 (service: the fixture)


@pytest.fixture
def published(service, monkeypatch):  # noqa: F811
    sent: list[tuple[str, str, dict]] = []
    monkeypatch.setattr(service.rt.publisher, "publish",
                        lambda topic, type_, body: sent.append((topic, type_, on_the_wire(body))))
    return sent


def on_the_wire(body):
    return msgpack.unpackb(msgpack.packb(body, use_bin_type=True), raw=False)


def deltas(sent):
    return [body for topic, type_, body in sent if (topic, type_) == ("portfolio.delta", "book_delta")]


def test_deltas_are_numbered_and_carry_only_the_books_that_changed(service, published):  # noqa: F811
    service.publish_delta()
    first = deltas(published)[-1]
    assert first["seq"] == 1 and set(first["books"]) == set(service.portfolio.books)  # created on start
    tick(service, "BTC/USDT", 90_000.0, T)
    service.mark()
    service.publish_delta()
    quiet = deltas(published)[-1]
    assert (quiet["seq"], quiet["books"], quiet["removed"]) == (2, {}, [])  # a mark alone moves no record
    assert quiet["prices"]["BTC/USDT"] == 90_000.0 and quiet["stream"] == first["stream"]
    ack = service.on_order({"order_id": "momentum-btc:x", "strategy_id": "momentum-btc", "symbol": "BTC/USDT",
                            "signal": 1, "price": 90_000.0, "ts_event": T})
    assert ack["status"] == "filled"
    service.publish_delta()
    traded = deltas(published)[-1]
    assert traded["seq"] == 3 and list(traded["books"]) == ["momentum-btc"]
    assert traded["books"]["momentum-btc"]["positions"]["BTC/USDT"]["quantity"] == ack["fill"]["quantity"]
    totals = [body for topic, type_, body in published if (topic, type_) == ("portfolio.totals", "totals")][-1]
    assert totals["totals"] == service.portfolio.totals() and totals["journal_seq"] == service.portfolio.journal_seq


def test_a_snapshot_and_the_deltas_after_it_clone_the_portfolio(service, published):  # noqa: F811
    service.publish_delta()
    tick(service, "BTC/USDT", 90_000.0, T)
    service.mark()
    clone = clone_from_snapshot(on_the_wire(service.on_book_snapshot()))
    assert clone.seq == 1  # current to the last delta; the changes since come in delta 2
    service.on_order({"order_id": "momentum-btc:x", "strategy_id": "momentum-btc", "symbol": "BTC/USDT",
                      "signal": 1, "price": 90_000.0, "ts_event": T})
    tick(service, "BTC/USDT", 93_000.0, T + 1)
    service.mark()
    service.publish_delta()
    clone = apply_delta(clone, deltas(published)[-1])
    shown = {sid: {k: v for k, v in view.items() if k != "last_decision"}
             for sid, view in build_status(clone, 0, {})["strategies"].items()}
    assert shown == service.portfolio.snapshot()["strategies"]
    assert shown["momentum-btc"]["positions"]["BTC/USDT"]["current_price"] == 93_000.0
