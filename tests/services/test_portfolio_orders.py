"""Group commit: the orders of one cycle arrive in one ``orders`` request, their fills are
journaled with one fsync before any of them is acknowledged, and journal-before-ack and
exactly-once still hold (a failed journal answers every order ``retry``, a resend is a duplicate)."""
from __future__ import annotations

import errno
import os

import pytest

from common.bus import Envelope, RequestError
from common.model import MAX_ORDERS_PER_REQUEST, ORDER_ERROR, ORDER_RETRY
from options.contracts import OptionContract
from options.venues import DERIBIT
from tests.support.builders import journal, portfolio_service, spot_order, tick
from tests.support.stack import stack_config
from trading.option_book import OptionLeg, OptionOrder
from trading.option_order_checks import OptionMarket, OptionQuote

PRICES = {"BTC/USDT": 50_000.0, "ETH/USDT": 3_000.0, "SOL/USDT": 150.0}


@pytest.fixture
def svc(tmp_path):
    raw = stack_config()
    raw["state_file"] = str(tmp_path / "state.json")
    with portfolio_service(raw, tmp_path) as service:
        service.portfolio.mark(PRICES, service.cfg.feed.start_ms)
        yield service


def ticks_at(svc, ts: int) -> None:
    """marketdata's ticks of every symbol at ``ts``: the prices the portfolio fills orders of that time at."""
    for symbol, price in PRICES.items():
        tick(svc, symbol, price, ts)


def spot_orders(svc, ts: int, count: int = 6, signal: int = 1) -> list[dict]:
    """One buy per spot strategy (the first ``count``), as the engine queues them for a bar, with
    the market's ticks of that time already in."""
    ticks_at(svc, ts)
    out = []
    for sc in list(svc.cfg.spot_strategies())[:count]:
        out.append(spot_order(sc.id, sc.symbol, PRICES[sc.symbol], ts, signal))
    return out


def batch(orders: list[dict], kind: str = "order") -> dict:
    return {"orders": [{"type": kind, "order": o} for o in orders]}


@pytest.fixture
def fsyncs(monkeypatch):
    """Counts every fsync the process makes while the test runs."""
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def test_one_bar_of_orders_is_one_fsync_instead_of_one_per_fill(svc, fsyncs) -> None:
    ts = svc.cfg.feed.start_ms
    singles = spot_orders(svc, ts)
    assert len({o["strategy_id"] for o in singles}) == 6
    before = len(fsyncs)
    answers = [svc.on_order(o) for o in singles]  # before: one request, one fsync per fill
    assert [a["status"] for a in answers] == ["filled"] * 6
    assert len(fsyncs) - before == 6
    before = len(fsyncs)
    reply = svc.on_orders(batch(spot_orders(svc, ts + 3_600_000, signal=-1)))  # after: the bar's orders at once
    assert [a["status"] for a in reply["acks"]] == ["filled"] * 6
    assert len(fsyncs) - before == 1


def test_acks_come_in_order_after_every_fill_is_journaled(svc) -> None:
    ts = svc.cfg.feed.start_ms
    orders = spot_orders(svc, ts)
    reply = svc.on_orders(batch(orders))
    assert [a["order_id"] for a in reply["acks"]] == [o["order_id"] for o in orders]
    seqs = [a["fill"]["seq"] for a in reply["acks"]]
    assert seqs == [1, 2, 3, 4, 5, 6]  # numbered one after another in the one append
    lines = journal(svc)
    assert [line["seq"] for line in lines] == seqs
    assert [line["order_id"] for line in lines] == [o["order_id"] for o in orders]
    assert [line.get("more", False) for line in lines] == [True] * 5 + [False]  # one append: torn, it goes whole
    assert svc.portfolio.journal_seq == 6 and svc.fills_made == 6


def test_two_orders_of_one_strategy_take_two_rounds_and_the_second_sees_the_first(svc, fsyncs) -> None:
    ts = svc.cfg.feed.start_ms
    [buy] = spot_orders(svc, ts, count=1)
    sell = {**buy, "order_id": f"{buy['strategy_id']}:{ts + 1}", "signal": -1, "ts_event": ts + 1}
    ticks_at(svc, ts + 1)
    before = len(fsyncs)
    reply = svc.on_orders(batch([buy, sell, buy]))
    assert [a["status"] for a in reply["acks"]] == ["filled", "filled", "duplicate"]
    assert reply["acks"][1]["fill"]["side"] == "sell"  # decided on the book the buy left
    assert len(fsyncs) - before == 2  # the duplicate writes nothing
    assert [line["seq"] for line in journal(svc)] == [1, 2]


def test_a_batch_that_cannot_be_journaled_is_answered_retry_and_resending_it_fills_once(svc, monkeypatch) -> None:
    ts = svc.cfg.feed.start_ms
    orders = spot_orders(svc, ts)

    def full(_records):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(svc.journal, "append", full)
    cash = {sid: book.cash for sid, book in svc.portfolio.books.items()}
    reply = svc.on_orders(batch(orders))
    assert {a["status"] for a in reply["acks"]} == {ORDER_RETRY}
    assert reply["acks"][0]["reason"] == "not journaled: [Errno 28] No space left on device"
    assert {sid: book.cash for sid, book in svc.portfolio.books.items()} == cash and svc.portfolio.journal_seq == 0
    monkeypatch.undo()
    assert [a["status"] for a in svc.on_orders(batch(orders))["acks"]] == ["filled"] * 6
    assert [a["status"] for a in svc.on_orders(batch(orders))["acks"]] == ["duplicate"] * 6  # exactly once
    assert [line["seq"] for line in journal(svc)] == [1, 2, 3, 4, 5, 6]


def test_a_later_round_that_fails_keeps_the_earlier_acks_and_retries_the_rest(svc, monkeypatch) -> None:
    ts = svc.cfg.feed.start_ms
    first, second = spot_orders(svc, ts, count=2)
    again = {**first, "order_id": f"{first['strategy_id']}:{ts + 1}", "signal": -1, "ts_event": ts + 1}
    ticks_at(svc, ts + 1)
    real, calls = svc.journal.append, []

    def fail_second(records):
        calls.append(len(records))
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        real(records)

    monkeypatch.setattr(svc.journal, "append", fail_second)
    acks = svc.on_orders(batch([first, second, again]))["acks"]
    assert [a["status"] for a in acks] == ["filled", "filled", ORDER_RETRY] and calls == [2, 1]
    assert svc.portfolio.journal_seq == 2


def test_spot_and_option_orders_share_one_batch(svc, fsyncs, monkeypatch) -> None:
    ts = svc.cfg.feed.start_ms
    options_id = next(sc.id for sc in svc.cfg.options_strategies() if sc.venue == "deribit" and sc.underlying == "BTC")
    expiry = DERIBIT.listed_expiries(ts, 60)[-1]
    contract = OptionContract("deribit", "BTC", expiry, 60_000.0, True, 1.0)
    leg = OptionLeg(contract, 1, 0.1, 2_000.0, {"delta": 0.4}, 0.5, "test", "open")  # at most its own score
    option = OptionOrder(f"{options_id}:{ts}:call", options_id, ts, 50_000.0, (leg,)).to_dict()
    market = OptionMarket(ts, {"BTC": 50_000.0}, {contract.name: OptionQuote(2_000.0, {"delta": 0.4})})
    monkeypatch.setattr(svc, "decide_option_order",  # the pricer's chain, as it would list and price the call
                        lambda order, seq: svc.portfolio.decide_options_at_market(order, market, seq))
    [spot] = spot_orders(svc, ts, count=1)
    before = len(fsyncs)
    acks = svc.on_orders({"orders": [{"type": "order", "order": spot},
                                     {"type": "option_order", "order": option}]})["acks"]
    assert [a["status"] for a in acks] == ["filled", "filled"], acks
    assert acks[0]["fill"]["seq"] == 1 and [f["seq"] for f in acks[1]["fills"]] == [2]
    assert len(fsyncs) - before == 1


@pytest.mark.parametrize("body", [None, [], {"orders": []}, {"orders": "x"},
                                  {"orders": [{}] * (MAX_ORDERS_PER_REQUEST + 1)}])
def test_a_body_that_is_not_a_list_of_orders_is_refused_whole(svc, body) -> None:
    with pytest.raises(RequestError, match=r"orders.orders: expected a list of 1..1000 orders") as err:
        svc.on_orders(body)
    assert err.value.code == "bad_request"


def test_a_bad_item_is_answered_in_its_place_and_the_others_fill(svc) -> None:
    ts = svc.cfg.feed.start_ms
    good, other = spot_orders(svc, ts, count=2)
    items = [{"type": "order", "order": good}, {"type": "trade", "order": other},
             {"type": "order", "order": {**other, "strategy_id": "nobody"}}, "junk",
             {"type": "order", "order": {**other, "price": -1}}]
    acks = svc.on_orders({"orders": items})["acks"]
    assert acks[0]["status"] == "filled"
    assert acks[1] == {"order_id": other["order_id"], "status": ORDER_ERROR, "code": "bad_order",
                       "reason": "orders[1].type: expected 'order' or 'option_order', got 'trade'"}
    assert (acks[2]["code"], acks[2]["reason"]) == ("unknown_strategy", "orders[2].order.strategy_id: no strategy "
                                                                        "'nobody' in this portfolio")
    assert (acks[3]["order_id"], acks[3]["code"]) == (None, "bad_order")
    assert acks[4]["code"] == "bad_order" and "price" in acks[4]["reason"]
    assert [line["order_id"] for line in journal(svc)] == [good["order_id"]]


def clock_message(body) -> Envelope:
    return Envelope(1, "clock", "clock", 0, "marketdata", 0, body)


def test_housekeeping_is_held_around_each_bar_close_of_the_clock(svc, monkeypatch) -> None:
    """The clock's mapping says when the bars close in wall time: 1h bars at 3,600x close every
    wall second, so a save waits from 30 ms before to 150 ms after each close."""
    assert not svc.near_close()  # no clock yet: nothing is held
    hour = 3_600_000
    svc.on_message("clock", clock_message({"ts": 5 * hour, "market_origin": 5 * hour, "wall_origin": 1_000_000,
                                           "speed": 3600}))
    for wall_ms, held in ((1_000_000, True), (1_000_149, True), (1_000_151, False), (1_000_969, False),
                          (1_000_971, True)):
        monkeypatch.setattr("services.portfolio.wall_ms", lambda w=wall_ms: float(w))
        assert svc.near_close() is held, wall_ms


@pytest.mark.parametrize("body", [None, "clock", {"market_origin": 0, "wall_origin": 0},
                                  {"market_origin": 0, "wall_origin": 0, "speed": 0},
                                  {"market_origin": 0, "wall_origin": 0, "speed": float("inf")},
                                  {"market_origin": "x", "wall_origin": 0, "speed": 3600}])
def test_a_bad_clock_is_dropped_and_counted(svc, body) -> None:
    svc.on_message("clock", clock_message(body))
    assert svc.closes.window is None and svc.rt.stats.dropped["bad_clock"] == 1


@pytest.fixture
def marketdata(svc):
    """A publisher of marketdata's ticks, and the portfolio's subscription to it as ``main`` makes
    it; the loop does not run here, so what is published stays queued until the portfolio reads it."""
    import zmq

    from common.bus import Publisher
    from common.bus_auth import stop_zap
    from services.runtime import bus_security

    ctx = zmq.Context()
    endpoint = svc.cfg.endpoints["marketdata"].pub
    pub = Publisher(ctx, endpoint, "marketdata", security=bus_security(svc.cfg, "marketdata"))
    svc.tick_feed = svc.rt.subscribe([endpoint], ["tick.", "clock"], svc.on_message)
    start = svc.cfg.feed.start_ms
    while not svc.tick_feed.socket.poll(20):  # the slow joiner: connected once a tick gets through
        pub.publish("tick.BTC/USDT", "tick", {"symbol": "BTC/USDT", "price": PRICES["BTC/USDT"], "ts": start})
    while (got := svc.tick_feed.receive(0)) is not None:
        svc.on_message(*got)
    try:
        yield pub
    finally:
        pub.close()
        stop_zap(ctx)
        ctx.destroy(linger=0)


def bar_orders(svc, ts: int) -> list[dict]:
    return [spot_order(sc.id, sc.symbol, PRICES[sc.symbol], ts, 1)
            for sc in svc.cfg.spot_strategies() if sc.pair is None][:3]


def test_orders_that_come_before_their_bars_tick_wait_for_it_and_fill(svc, marketdata, monkeypatch):
    """A bar's tick and its orders travel on two sockets from two processes, and the orders may be
    read first: they were answered 'retry' and sent again (a round trip and 5 ms of backoff)."""
    from services import portfolio

    monkeypatch.setattr(portfolio, "TICK_WAIT_SECONDS", 5.0)  # a loaded machine's delivery; it ends with the ticks
    ts = svc.cfg.feed.start_ms + 3_600_000
    ticks_at(svc, ts - 3_600_000)
    for symbol, price in PRICES.items():
        marketdata.publish(f"tick.{symbol}", "tick", {"symbol": symbol, "price": price, "ts": ts})
    acks = svc.on_orders(batch(bar_orders(svc, ts)))["acks"]
    assert [a["status"] for a in acks] == ["filled"] * 3, acks
    assert svc.orders_ahead_of_tick == 1 and svc.on_status()["orders_ahead_of_tick"] == 1


def test_an_order_whose_tick_does_not_come_is_answered_retry_within_the_wait(svc, marketdata):
    import time

    from services.portfolio import TICK_WAIT_SECONDS

    ts = svc.cfg.feed.start_ms + 3_600_000
    ticks_at(svc, ts - 3_600_000)
    started = time.monotonic()
    acks = svc.on_orders(batch(bar_orders(svc, ts)))["acks"]
    took = time.monotonic() - started
    assert [a["status"] for a in acks] == [ORDER_RETRY] * 3
    assert "no BTC/USDT tick at the order time" in acks[0]["reason"]
    assert svc.orders_ahead_of_tick == 1 and 0.5 * TICK_WAIT_SECONDS <= took < 0.2  # waited, a poll's ms at most
