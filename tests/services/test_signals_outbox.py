"""The outbox keeps an order until the portfolio answers it for good: unanswered or transiently
refused orders ('retry', 'unavailable') stay first in line and are resent with a growing
backoff; only final refusals (risk, duplicate, bad order) are dropped."""
from __future__ import annotations

import time

import pytest

from common.bus import RemoteError, RequestFailed
from common.config import parse_config
from common.model import ORDER_RETRY, SpotOrder
from services.runtime import ServiceRuntime
from services.signals import PORTFOLIO_BACKOFF_CAP_SECONDS, SignalEngine
from tests.support.stack import stack_config


class ScriptedPortfolio:
    """Answers each order request with the next scripted reply (an exception is raised)."""

    def __init__(self, *replies) -> None:
        self.replies = list(replies)
        self.sent: list[str] = []

    def request(self, kind, body=None, **_kw):
        self.sent.append(body["order_id"])
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return {"order_id": body["order_id"], "fill": None, "reason": "", **reply}


@pytest.fixture
def engine():
    rt = ServiceRuntime("signals-test")
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
def test_a_transiently_refused_order_stays_first_and_is_resent_until_it_fills(engine, transient):
    engine.portfolio = ScriptedPortfolio(transient, transient, {"status": "filled"}, {"status": "filled"})
    queue(engine, "a", "b")
    assert engine.flush_outbox() == [] and list(engine.outbox) == ["a", "b"]
    assert engine.portfolio_retry_at > time.monotonic() + 0.05  # waits: not asked again at once
    assert engine.flush_outbox() == [] and engine.portfolio.sent == ["a"]
    assert resend_now(engine) == [] and engine.portfolio_failures == 2
    acks = resend_now(engine)
    assert [a["order_id"] for a in acks] == ["a", "b"] and not engine.outbox
    assert engine.portfolio.sent == ["a", "a", "a", "b"] and engine.portfolio_failures == 0
    assert engine.orders_acked == 2


@pytest.mark.parametrize("code", ["bad_order", "unknown_strategy", "internal"])
def test_a_final_refusal_is_dropped_and_the_next_order_goes(engine, code):
    engine.portfolio = ScriptedPortfolio(RemoteError(code, "no"), {"status": "rejected", "reason": "kill switch"})
    queue(engine, "a", "b")
    acks = engine.flush_outbox()
    assert [a["order_id"] for a in acks] == ["b"] and not engine.outbox and engine.orders_acked == 1


@pytest.mark.parametrize("failure, waits", [
    ({"status": ORDER_RETRY}, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10]),  # a tick on its way: soon
    (RequestFailed("no reply"), [1, 2, 4, 8, 10, 10, 10, 10, 10]),  # the request itself timed out
])
def test_the_backoff_doubles_per_failure_up_to_its_cap(engine, failure, waits):
    engine.portfolio = ScriptedPortfolio(*[failure] * 9)
    queue(engine, "a")
    seen = []
    for _ in range(9):
        before = time.monotonic()
        resend_now(engine)
        seen.append(round(engine.portfolio_retry_at - before, 1))
    assert seen == waits and PORTFOLIO_BACKOFF_CAP_SECONDS == 10
    assert list(engine.outbox) == ["a"]
