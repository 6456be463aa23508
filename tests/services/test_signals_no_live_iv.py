"""A pricer that cannot read Deribit's vol answers ``no_live_iv``: the signal engine opens no
options trade and every options strategy says why."""
from common.bus import RemoteError
from config.settings import parse_config
from services.runtime import ServiceRuntime
from services.signals import SignalEngine
from tests.support.stack import stack_config


class NoLiveIvPricer:
    """The pricer's reply while Deribit's vol cannot be read (services/pricer.py ``_live``)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def request(self, kind: str, body: dict) -> dict:
        self.asked.append(kind)
        raise RemoteError("no_live_iv", f"no live IV for {body['underlying']}: deribit chain: HTTP 503")


def test_no_live_iv_skips_every_options_strategy_with_that_reason_and_sends_no_order():
    cfg = parse_config(stack_config())
    rt = ServiceRuntime("signals-test")
    try:
        engine = SignalEngine(cfg, rt)
        engine.pricer = NoLiveIvPricer()
        engine.market_ts = cfg.feed.start_ms
        ids = [sc.id for sc in cfg.options_strategies()]
        engine.queue_options(ids)
        decisions = engine.decide_pending_options()
        assert len(decisions) == len(ids) == 20 and not engine.outbox
        assert {d.skipped.split(" for ")[0] for d in decisions} == {"pricer refused: no_live_iv: no live IV"}
        assert engine.pricer.asked == ["chain"]  # one refusal ends the batch: no hammering
    finally:
        rt.close()
