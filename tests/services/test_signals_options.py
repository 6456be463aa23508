"""The signal engine never trades options without the pricer, does not hammer a dead one, and keeps
each strategy's last decision and its reason."""
import time

from config.settings import parse_config
from services.runtime import ServiceRuntime
from services.signals import SignalEngine
from tests.support.stack import stack_config, stack_security


def test_options_skip_with_a_reason_while_the_pricer_is_down(tmp_path):
    raw = stack_config()
    cfg = parse_config(raw)
    rt = ServiceRuntime("signals-test", stack_security(raw, tmp_path, "signals"))
    try:
        engine = SignalEngine(cfg, rt)
        engine.market_ts = cfg.feed.start_ms
        ids = [sc.id for sc in cfg.options_strategies()]
        started = time.monotonic()
        engine.queue_options(ids)
        decisions = engine.decide_pending_options()
        assert time.monotonic() - started < 3.0  # one bounded request, not one per strategy
        assert {d.skipped.split(":")[0] for d in decisions} == {"pricer unavailable"}
        assert all(engine.strategy_status[sid]["status"].startswith("skipped: pricer unavailable") for sid in ids)
        last = engine.strategy_status[ids[0]]  # what the heartbeat carries to /status
        assert last["decision"] == "skipped" and last["reason"].startswith("pricer unavailable")
        assert last["ts"] == cfg.feed.start_ms
        started = time.monotonic()
        engine.queue_options(ids)
        again = engine.decide_pending_options()
        assert time.monotonic() - started < 0.1  # backing off: the dead pricer is not asked again yet
        assert {d.skipped for d in again} == {"pricer unavailable: waiting before asking again"}
        assert not engine.outbox
    finally:
        rt.close()


def test_the_service_decides_one_options_strategy_per_loop_turn(tmp_path):
    raw = stack_config()
    cfg = parse_config(raw)
    rt = ServiceRuntime("signals-test", stack_security(raw, tmp_path, "signals"))
    try:
        engine = SignalEngine(cfg, rt)
        engine.market_ts = cfg.feed.start_ms
        engine.pricer_retry_at = time.monotonic() + 60  # a dead pricer: every decision is a quick skip
        ids = [sc.id for sc in cfg.options_strategies()]
        engine.queue_options(ids + ids[:3])  # queued twice: decided once
        turns = 0
        while engine.options_pending:
            engine.options_step_one()
            turns += 1
        assert turns == len(ids) == 20
        assert engine.options_market is None  # the batch's chains are dropped once it is done
    finally:
        rt.close()


def test_an_order_the_portfolio_refuses_becomes_the_strategys_last_decision():
    from common.model import SpotOrder

    class Refusing:
        def request(self, kind, body):
            refusal = {"status": "rejected", "reason": "kill switch: drawdown 61.0% >= 60%"}
            return {"acks": [refusal] * len(body["orders"])}

    cfg = parse_config(stack_config())
    rt = ServiceRuntime("signals-test")
    try:
        engine = SignalEngine(cfg, rt)
        engine.market_ts = cfg.feed.start_ms
        engine.portfolio = Refusing()
        published: list[tuple[str, dict]] = []
        rt.publisher = type("Recording", (), {"publish": lambda _s, topic, _t, body: published.append((topic, body))})()
        order = SpotOrder("momentum-btc:1", "momentum-btc", "BTC/USDT", 1, 90_000.0, cfg.feed.start_ms)
        engine.outbox[order.order_id] = order
        engine.flush_outbox()
        last = engine.strategy_status["momentum-btc"]
        assert last["decision"] == "refused by portfolio"
        assert last["reason"] == "momentum-btc:1: kill switch: drawdown 61.0% >= 60%"
        assert not engine.outbox
        assert [(topic, body["status"], body["reason"]) for topic, body in published] == [
            ("ack.momentum-btc", "rejected", "kill switch: drawdown 61.0% >= 60%")]
    finally:
        rt.close()
