"""The signal engine never trades options without the pricer, and does not hammer a dead one."""
import time

from common.config import parse_config
from services.runtime import ServiceRuntime
from services.signals import SignalEngine
from tests.support.stack import stack_config


def test_options_skip_with_a_reason_while_the_pricer_is_down():
    cfg = parse_config(stack_config())
    rt = ServiceRuntime("signals-test")
    try:
        engine = SignalEngine(cfg, rt)
        engine.market_ts = cfg.feed.start_ms
        ids = [sc.id for sc in cfg.options_strategies()]
        started = time.monotonic()
        decisions = engine.run_options(ids)
        assert time.monotonic() - started < 3.0  # one bounded request, not one per strategy
        assert {d.skipped.split(":")[0] for d in decisions} == {"pricer unavailable"}
        assert all(engine.strategy_status[sid]["status"].startswith("skipped: pricer unavailable") for sid in ids)
        started = time.monotonic()
        again = engine.run_options(ids)
        assert time.monotonic() - started < 0.1  # backing off: the dead pricer is not asked again yet
        assert {d.skipped for d in again} == {"pricer unavailable: waiting before asking again"}
        assert not engine.outbox
    finally:
        rt.close()
