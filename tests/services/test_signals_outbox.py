"""The outbox sends a cycle's orders in one ``orders`` request and keeps an order until the
portfolio answers it for good: unanswered or transiently refused orders ('retry', 'unavailable')
stay in line and are resent with a growing backoff; only final answers (a fill, risk, duplicate,
an invalid order) leave it, and a batch refused whole never loses one."""
from __future__ import annotations

import time

import pytest

from common.bus import RemoteError, RequestFailed
from common.model import ORDER_ERROR, ORDER_RETRY, SpotOrder
from config.settings import parse_config
from services import signals
from services.runtime import ServiceRuntime
from services.signals import PORTFOLIO_BACKOFF_CAP_SECONDS, SignalEngine
from tests.support.stack import stack_config


class ScriptedPortfolio:
    """Answers each ``orders`` request with the next scripted reply: an exception is raised, a
    dict is every order's answer, a list is one answer per order."""

    def __init__(self, *replies) -> None:
        self.replies = list(replies)
        self.sent: list[list[str]] = []  # the order ids of each request

    def request(self, kind, body=None, **_kw):
        assert kind == "orders"
        ids = [item["order"]["order_id"] for item in body["orders"]]
        self.sent.append(ids)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        answers = reply if isinstance(reply, list) else [reply] * len(ids)
        return {"acks": [{"order_id": oid, "fill": None, "reason": "", **answer} for oid, answer in zip(ids, answers)]}


class RecordingPublisher:
    def __init__(self, events: list) -> None:
        self.events = events
        self.bodies: list[tuple[str, str, dict]] = []

    def publish(self, topic, type_, body) -> None:
        self.events.append(("publish", topic))
        self.bodies.append((topic, type_, body))


@pytest.fixture
def engine():
    rt = ServiceRuntime("signals-test")
    rt.publisher = RecordingPublisher([])
    yield SignalEngine(parse_config(stack_config()), rt)
    rt.close()


def queue(engine, *ids):
    for oid in ids:
        engine.outbox[oid] = SpotOrder(oid, "momentum-btc", "BTC/USDT", 1, 50_000.0, 1)


def resend_now(engine):
    engine.portfolio_retry_at = 0.0
    return engine.flush_outbox()


@pytest.mark.parametrize("transient", [{"status": ORDER_RETRY, "reason": "not journaled: ENOSPC"},
                                       RemoteError("unavailable", "journal not writable"),
                                       RequestFailed("no reply after 2 tries")])
def test_a_transiently_refused_batch_stays_in_line_and_is_resent_until_it_fills(engine, transient, monkeypatch):
    monkeypatch.setattr(signals, "ORDER_RETRY_SECONDS", 0.1)  # not due again before the next line runs
    engine.portfolio = ScriptedPortfolio(transient, transient, {"status": "filled"})
    queue(engine, "a", "b")
    assert engine.flush_outbox() == [] and list(engine.outbox) == ["a", "b"]
    assert engine.portfolio_retry_at > time.monotonic() + 0.05  # waits: not asked again at once
    assert engine.flush_outbox() == [] and engine.portfolio.sent == [["a", "b"]]
    assert resend_now(engine) == [] and engine.portfolio_failures == 2
    acks = resend_now(engine)
    assert [a["order_id"] for a in acks] == ["a", "b"] and not engine.outbox
    assert engine.portfolio.sent == [["a", "b"]] * 3 and engine.portfolio_failures == 0
    assert engine.orders_acked == 2


def test_a_retry_is_resent_by_the_engines_wake_as_soon_as_its_backoff_is_over(engine):
    """'retry' is mostly a tick a few ms away: the resend waits for its backoff, not a clock message."""
    engine.portfolio = ScriptedPortfolio({"status": ORDER_RETRY}, {"status": "filled"})
    woken: list[float] = []
    engine.resend_within = woken.append  # the runtime's wake: sent from a clock message, it was not re-armed
    queue(engine, "a")
    assert engine.flush_outbox() == []
    assert woken == [signals.ORDER_RETRY_SECONDS]  # the wake runs again when the backoff is over
    engine.portfolio_retry_at = time.monotonic() + 10
    assert 9 < engine.resend_when_due() <= 10 and engine.portfolio.sent == [["a"]]  # not due: when it is
    engine.portfolio_retry_at = time.monotonic()  # the backoff is over
    assert engine.resend_when_due() == signals.RESEND_CHECK_SECONDS and not engine.outbox
    assert engine.portfolio.sent == [["a"], ["a"]]


def test_a_cycles_orders_go_in_one_request(engine):
    engine.portfolio = ScriptedPortfolio({"status": "filled"})
    queue(engine, "a", "b", "c")
    assert [a["order_id"] for a in engine.flush_outbox()] == ["a", "b", "c"]
    assert engine.portfolio.sent == [["a", "b", "c"]]


def test_a_long_outbox_goes_in_requests_of_at_most_the_limit(engine, monkeypatch):
    monkeypatch.setattr(signals, "MAX_ORDERS_PER_REQUEST", 2)
    engine.portfolio = ScriptedPortfolio(*[{"status": "filled"}] * 3)
    queue(engine, "a", "b", "c", "d", "e")
    assert len(engine.flush_outbox()) == 5 and not engine.outbox
    assert engine.portfolio.sent == [["a", "b"], ["c", "d"], ["e"]]


def test_only_the_orders_answered_retry_stay_and_the_answered_ones_leave(engine):
    engine.portfolio = ScriptedPortfolio([{"status": "filled"}, {"status": ORDER_RETRY, "reason": "pricer down"},
                                          {"status": "rejected", "reason": "kill switch"}], {"status": "filled"})
    queue(engine, "a", "b", "c")
    assert [a["order_id"] for a in engine.flush_outbox()] == ["a", "c"]
    assert list(engine.outbox) == ["b"] and engine.portfolio_retry_at > time.monotonic()
    assert [a["order_id"] for a in resend_now(engine)] == ["b"] and not engine.outbox
    assert engine.portfolio.sent == [["a", "b", "c"], ["b"]] and engine.orders_acked == 3


def test_an_order_the_batch_calls_invalid_is_dropped_and_the_others_are_acked(engine):
    engine.portfolio = ScriptedPortfolio([{"status": ORDER_ERROR, "code": "bad_order", "reason": "orders[0].price"},
                                          {"status": "filled"}])
    queue(engine, "a", "b")
    assert [a["status"] for a in engine.flush_outbox()] == [ORDER_ERROR, "filled"]
    assert not engine.outbox and engine.orders_acked == 1


@pytest.mark.parametrize("refusal", [RemoteError("unknown_type", "no handler for 'orders'"),
                                     RemoteError("bad_request", "orders.orders"), {"acks": "none"}])
def test_a_refused_or_garbled_batch_is_never_dropped(engine, refusal):
    if isinstance(refusal, dict):
        engine.portfolio.request = lambda *_a, **_k: refusal
    else:
        engine.portfolio = ScriptedPortfolio(refusal)
    queue(engine, "a", "b")
    assert engine.flush_outbox() == [] and list(engine.outbox) == ["a", "b"]
    assert engine.portfolio_retry_at > time.monotonic() + 0.5  # the slow backoff: it needs a fix, not a tick


@pytest.mark.parametrize("failure, waits", [
    ({"status": ORDER_RETRY}, [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28]),  # a tick on its way: soon
    (RequestFailed("no reply"), [1, 2, 4, 8, 10, 10, 10, 10, 10]),  # the request itself timed out
])
def test_the_backoff_doubles_per_failure_up_to_its_cap(engine, failure, waits):
    engine.portfolio = ScriptedPortfolio(*[failure] * 9)
    queue(engine, "a")
    seen = []
    for _ in range(9):
        before = time.monotonic()
        resend_now(engine)
        seen.append(engine.portfolio_retry_at - before)
    assert all(wait <= got < wait + 0.05 for got, wait in zip(seen, waits)), seen
    assert PORTFOLIO_BACKOFF_CAP_SECONDS == 10
    assert list(engine.outbox) == ["a"]


def recorded_cycle(engine) -> list:
    """The engine at market 2 h with a portfolio that fills everything: one event list records
    each ``orders`` request (and its size) and each publication, in order."""
    events: list = []
    portfolio = ScriptedPortfolio({"status": "filled"})
    real_request = portfolio.request
    portfolio.request = lambda kind, body=None, **kw: (events.append(("orders", len(body["orders"]))),
                                                       real_request(kind, body, **kw))[1]
    engine.portfolio = portfolio
    engine.rt.publisher = RecordingPublisher(events)
    engine.market_ts = 7_200_000
    return events


def test_a_cycle_sends_its_orders_before_it_publishes_its_signals(engine, monkeypatch):
    """Close -> fill waits for the decisions only: the signals and the cycle line go out after."""
    from common.model import Signal
    from trading.engine import SpotDecision

    events = recorded_cycle(engine)

    def decide(sid, strategy, symbol, timeframe, *_args):
        signal = Signal(sid, strategy, symbol, timeframe, 1, 100.0, 3_600_000, 7_200_000)
        return SpotDecision(sid, signal, SpotOrder(f"{sid}:3600000", sid, symbol, 1, 100.0, 7_200_000))

    monkeypatch.setattr(signals, "evaluate_spot", decide)
    ids = [sc.id for sc in engine.spot[:3]]
    engine.run_cycle(ids)
    assert events == [("orders", 3)] + [("publish", f"ack.{sid}") for sid in ids] \
        + [("publish", f"signal.{sid}") for sid in ids] + [("publish", "cycle")]
    assert not engine.outbox and engine.orders_acked == 3 and engine.unpublished == []


def test_each_final_answer_is_published_with_when_it_was_sent_and_answered(engine):
    """ack.<strategy_id>: what a tap times close -> ack by; a 'retry' is not final and is not published."""
    engine.portfolio = ScriptedPortfolio([{"status": "filled"}, {"status": ORDER_RETRY, "reason": "no tick yet"},
                                          {"status": "rejected", "reason": "risk: kill switch"}])
    queue(engine, "a", "b", "c")
    before = time.time_ns() / 1e6
    engine.flush_outbox()
    after = time.time_ns() / 1e6
    published = engine.rt.publisher.bodies
    assert [(topic, type_) for topic, type_, _ in published] == [("ack.momentum-btc", "ack")] * 2
    first, second = (body for _, _, body in published)
    assert {k: first[k] for k in ("order_id", "strategy_id", "status", "reason")} == {
        "order_id": "a", "strategy_id": "momentum-btc", "status": "filled", "reason": ""}
    assert (second["order_id"], second["status"], second["reason"]) == ("c", "rejected", "risk: kill switch")
    assert before <= first["sent_ms"] <= first["acked_ms"] <= after
    assert list(engine.outbox) == ["b"]
    from common.messages import message_problems
    assert all(message_problems(topic, type_, "signals-spot", body) == [] for topic, type_, body in published)


def test_a_refused_cycle_order_stays_its_strategys_last_decision(engine, monkeypatch):
    """The decision is noted for /status once the orders are answered, and the refusal after it."""
    from common.model import Signal
    from trading.engine import SpotDecision

    engine.portfolio = ScriptedPortfolio([{"status": "rejected", "reason": "kill switch: drawdown 61.0% >= 60%"},
                                          {"status": "filled"}])
    engine.market_ts = 7_200_000

    def decide(sid, strategy, symbol, timeframe, *_args):
        signal = Signal(sid, strategy, symbol, timeframe, 1, 100.0, 3_600_000, 7_200_000)
        return SpotDecision(sid, signal, SpotOrder(f"{sid}:3600000", sid, symbol, 1, 100.0, 7_200_000))

    monkeypatch.setattr(signals, "evaluate_spot", decide)
    refused, filled = (sc.id for sc in engine.spot[:2])
    engine.run_cycle([refused, filled])
    assert engine.strategy_status[refused]["decision"] == "refused by portfolio"
    assert engine.strategy_status[refused]["reason"] == f"{refused}:3600000: kill switch: drawdown 61.0% >= 60%"
    assert engine.strategy_status[filled]["decision"] == "buy" and engine.strategy_status[filled]["status"] == "ok"


def test_a_strategy_that_certainly_holds_is_decided_after_the_orders_are_sent(engine, monkeypatch):
    """The close's orders wait only for the strategies that may trade; a hold is decided once
    they are answered, and the signals still go out in the order the strategies were due."""
    from common.model import Signal
    from trading.engine import SpotDecision

    events = recorded_cycle(engine)
    ids = [sc.id for sc in engine.spot[:3]]
    holding = ids[1]
    monkeypatch.setattr(engine, "holds", lambda sc: sc.id == holding)

    def decide(sid, strategy, symbol, timeframe, *_args):
        events.append(("decide", sid))
        signal = Signal(sid, strategy, symbol, timeframe, 0 if sid == holding else 1, 100.0, 3_600_000, 7_200_000)
        order = None if sid == holding else SpotOrder(f"{sid}:3600000", sid, symbol, 1, 100.0, 7_200_000)
        return SpotDecision(sid, signal, order)

    monkeypatch.setattr(signals, "evaluate_spot", decide)
    engine.run_cycle(ids)
    assert events[:4] == [("decide", ids[0]), ("decide", ids[2]), ("orders", 2), ("decide", holding)]
    assert [e for e in events if e[0] == "publish" and e[1].startswith("signal.")] == \
        [("publish", f"signal.{sid}") for sid in ids]
    assert engine.strategy_status[holding]["signal"] == 0 and engine.strategy_status[ids[0]]["signal"] == 1
