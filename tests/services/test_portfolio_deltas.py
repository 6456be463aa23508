"""The portfolio service's stream to the gateway (clone pattern): numbered deltas carrying the
marks and only the changed books, a totals message for the engines, and a full book_snapshot
current to the last delta, from which a clone plus the later deltas is the portfolio itself."""
from __future__ import annotations

import msgpack
import pytest

from services.views.status import apply_delta, build_status, clone_from_snapshot
from tests.support.builders import T0 as T
from tests.support.builders import tick


@pytest.fixture
def published(portfolio_60x, monkeypatch):
    sent: list[tuple[str, str, dict]] = []
    monkeypatch.setattr(portfolio_60x.rt.publisher, "publish",
                        lambda topic, type_, body: sent.append((topic, type_, on_the_wire(body))))
    return sent


def on_the_wire(body):
    return msgpack.unpackb(msgpack.packb(body, use_bin_type=True), raw=False)


def deltas(sent):
    return [body for topic, type_, body in sent if (topic, type_) == ("portfolio.delta", "book_delta")]


def test_deltas_are_numbered_and_carry_only_the_books_that_changed(portfolio_60x, published):  # noqa: F811
    portfolio_60x.publish_delta()
    first = deltas(published)[-1]
    assert first["seq"] == 1 and set(first["books"]) == set(portfolio_60x.portfolio.books)  # created on start
    tick(portfolio_60x, "BTC/USDT", 90_000.0, T)
    portfolio_60x.mark()
    portfolio_60x.publish_delta()
    quiet = deltas(published)[-1]
    assert (quiet["seq"], quiet["books"], quiet["removed"]) == (2, {}, [])  # a mark alone moves no record
    assert quiet["prices"]["BTC/USDT"] == 90_000.0 and quiet["stream"] == first["stream"]
    ack = portfolio_60x.on_order({"order_id": "momentum-btc:x", "strategy_id": "momentum-btc", "symbol": "BTC/USDT",
                            "signal": 1, "price": 90_000.0, "ts_event": T})
    assert ack["status"] == "filled"
    portfolio_60x.publish_delta()
    traded = deltas(published)[-1]
    assert traded["seq"] == 3 and list(traded["books"]) == ["momentum-btc"]
    assert traded["books"]["momentum-btc"]["positions"]["BTC/USDT"]["quantity"] == ack["fill"]["quantity"]
    totals = [body for topic, type_, body in published if (topic, type_) == ("portfolio.totals", "totals")][-1]
    portfolio = portfolio_60x.portfolio
    assert totals["totals"] == portfolio.totals() and totals["journal_seq"] == portfolio.journal_seq


def test_a_snapshot_and_the_deltas_after_it_clone_the_portfolio(portfolio_60x, published):  # noqa: F811
    portfolio_60x.publish_delta()
    tick(portfolio_60x, "BTC/USDT", 90_000.0, T)
    portfolio_60x.mark()
    clone = clone_from_snapshot(on_the_wire(portfolio_60x.on_book_snapshot()))
    assert clone.seq == 1  # current to the last delta; the changes since come in delta 2
    portfolio_60x.on_order({"order_id": "momentum-btc:x", "strategy_id": "momentum-btc", "symbol": "BTC/USDT",
                      "signal": 1, "price": 90_000.0, "ts_event": T})
    tick(portfolio_60x, "BTC/USDT", 93_000.0, T + 1)
    portfolio_60x.mark()
    portfolio_60x.publish_delta()
    clone = apply_delta(clone, deltas(published)[-1])
    shown = {sid: {k: v for k, v in view.items() if k != "last_decision"}
             for sid, view in build_status(clone, 0, {})["strategies"].items()}
    assert shown == portfolio_60x.portfolio.snapshot()["strategies"]
    assert shown["momentum-btc"]["positions"]["BTC/USDT"]["current_price"] == 93_000.0
