"""Signal engines, plural: each runs only its strategies, options read the pricer's published
chains (asking only when none is recent), one positions_batch per options batch, and
supervisord gets one program per engine."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.bus import Envelope
from common.timeframes import DAY_MS, HOUR_MS
from config.settings import parse_config
from services.pricer import PricerService
from services.runtime import ServiceRuntime
from services.signals import SignalEngine, engine_name, in_background
from services.supervisor_conf import engine_programs, render, write
from tests.support.stack import stack_config

CFG = parse_config(stack_config())
TS = CFG.feed.start_ms + 5 * DAY_MS


class Recorder:
    """Stands in for a requester, a publisher and a log: records what was asked of it."""

    def __init__(self, answer: Any = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answer = answer

    def request(self, kind: str, body: Any = None, **_kw: Any) -> Any:
        self.calls.append((kind, body))
        if self.answer is None:
            raise AssertionError(f"not expected to be asked: {kind}")
        return self.answer(kind, body)

    def publish(self, topic: str, type_: str, body: Any) -> None:
        self.calls.append((topic, body))

    def warning(self, event: str, **fields: Any) -> None:
        self.calls.append((event, fields))


class FakeRuntime:
    def __init__(self) -> None:
        self.publisher = Recorder()
        self.log = Recorder()
        self.problems: dict[str, str] = {}


def ticked_pricer(ts: int = TS) -> tuple[PricerService, FakeRuntime]:
    rt = FakeRuntime()
    pricer = PricerService(CFG, rt)  # type: ignore[arg-type]
    for symbol, price in (("BTC/USDT", 90_000.0), ("ETH/USDT", 3_000.0)):
        pricer.on_message(f"tick.{symbol}", Envelope(1, "tick", "x", ts, "marketdata", 1,
                                                     {"symbol": symbol, "price": price, "ts": ts}))
    return pricer, rt


def book(sid: str) -> dict[str, Any]:
    capital = CFG.strategy(sid).capital
    return {"strategy_id": sid, "ts": TS, "cash": capital, "capital": capital, "portfolio_value": capital,
            "peak_value": capital, "option_positions": [], "spot_quantity": 0.0, "spot_cost_basis": 0.0}


@pytest.fixture
def options_engine():
    rt = ServiceRuntime("signals-test")
    try:
        yield SignalEngine(CFG, rt, "options")
    finally:
        rt.close()


def test_each_engine_runs_only_its_strategies():
    rt = ServiceRuntime("signals-test")
    try:
        spot, options = SignalEngine(CFG, rt, "spot"), SignalEngine(CFG, rt, "options")
        assert [sc.id for sc in spot.spot] == [sc.id for sc in CFG.spot_strategies()] and spot.options == []
        assert [sc.id for sc in options.options] == [sc.id for sc in CFG.options_strategies()] and options.spot == []
        assert spot.status()["engine"] == "spot" and SignalEngine(CFG, rt).status()["engine"] == "all"
        assert {sym for sym, _tf in options.needs_warmup} == {"BTC/USDT", "ETH/USDT"}
    finally:
        rt.close()


def test_pricer_publishes_every_chain_and_iv_once_per_options_interval():
    pricer, rt = ticked_pricer()
    pricer.publish_chains()
    topics = [topic for topic, _body in rt.publisher.calls]
    needs = sorted({(sc.venue, sc.underlying) for sc in CFG.options_strategies()})
    assert sorted(t for t in topics if t.startswith("chain.")) == [f"chain.{v}.{u}" for v, u in needs]
    assert sorted(t for t in topics if t.startswith("iv.")) == ["iv.BTC", "iv.ETH"]
    chain = dict(rt.publisher.calls)["chain.deribit.BTC"]
    assert chain["ts"] == TS and chain["size"] > 100 and chain["spot"] == 90_000.0
    pricer.publish_chains()  # the same interval: nothing new
    assert len(rt.publisher.calls) == len(topics)
    pricer.market_ts += 1_200_000  # the options interval (1200 s) later: published again
    pricer.publish_chains()
    assert len(rt.publisher.calls) == 2 * len(topics)


def test_pricer_without_spot_publishes_nothing_and_says_why():
    rt = FakeRuntime()
    pricer = PricerService(CFG, rt)  # type: ignore[arg-type]
    pricer.market_ts = TS
    pricer.publish_chains()
    assert rt.publisher.calls == []
    assert rt.log.calls[0][0] == "chain_not_published" and "no spot price" in rt.log.calls[0][1]["error"]


def published(engine: SignalEngine, ts: int = TS) -> None:
    pricer, rt = ticked_pricer(ts)
    pricer.publish_chains()
    for topic, body in rt.publisher.calls:
        kind = topic.split(".")[0]
        engine.on_message(topic, Envelope(1, kind, "x", ts, "pricer", 1, body))


def test_options_batch_reads_published_chains_and_asks_the_portfolio_once(options_engine):
    engine = options_engine
    published(engine)
    engine.market_ts = TS
    engine.pricer = Recorder()  # asking it fails the test
    engine.portfolio = Recorder(lambda kind, body: {"books": {sid: book(sid) for sid in body["strategy_ids"]}})
    ids = [sc.id for sc in engine.options]
    engine.queue_options(ids)
    decisions = engine.decide_pending_options()
    assert engine.portfolio.calls == [("positions_batch", {"strategy_ids": ids})]
    assert len(decisions) == 20
    assert not [d for d in decisions if d.skipped and ("pricer" in d.skipped or "portfolio" in d.skipped)]


def test_a_stale_published_chain_is_asked_for_instead(options_engine):
    engine = options_engine
    published(engine, TS)
    engine.market_ts = TS + 2 * 1_200_000 + 1  # older than two options intervals
    pricer, _rt = ticked_pricer(engine.market_ts)
    engine.pricer = Recorder(lambda kind, body: pricer.on_chain(body) if kind == "chain" else pricer.on_iv(body))
    market, problem = engine._options_market({("BTC", "deribit")})
    assert problem is None and [kind for kind, _b in engine.pricer.calls] == ["chain", "iv"]
    assert market.chain("BTC", "deribit").ts == engine.market_ts


def test_bad_published_bodies_are_dropped_and_counted(options_engine):
    engine = options_engine
    engine.on_message("chain.deribit.BTC", Envelope(1, "chain", "x", TS, "pricer", 1, ["not", "a", "chain"]))
    engine.on_message("iv.BTC", Envelope(1, "iv", "x", TS, "pricer", 1, {"underlying": "BTC", "ts": True}))
    assert engine.published == {}
    assert engine.rt.stats.dropped == {"bad_chain": 1, "bad_iv": 1}


def test_a_strategy_acked_during_the_batch_reads_its_own_book_again(options_engine):
    engine = options_engine
    sid = engine.options[0].id
    engine.portfolio = Recorder(lambda kind, body: {"books": {s: book(s) for s in body["strategy_ids"]}}
                                if kind == "positions_batch" else book(body["strategy_id"]))
    engine.read_books([sid])
    assert engine.book_of(sid) == book(sid)
    engine.acked_in_batch.add(sid)
    assert engine.book_of(sid) == book(sid)
    assert [kind for kind, _b in engine.portfolio.calls] == ["positions_batch", "positions"]


def test_a_failed_batch_read_skips_with_the_reason(options_engine):
    from common.bus import RequestFailed

    engine = options_engine
    sid = engine.options[0].id

    def down(kind, body):
        raise RequestFailed("no reply after 2 tries")

    engine.portfolio = Recorder(down)
    engine.read_books([sid])
    with pytest.raises(RequestFailed, match="portfolio unavailable: no reply after 2 tries"):
        engine.book_of(sid)


def test_engine_name_comes_from_the_flag_or_the_only_engine(capsys):
    assert engine_name(CFG, ["--engine", "options"]) == "options"
    with pytest.raises(SystemExit):
        engine_name(CFG, [])
    assert "--engine NAME is needed: the config has 2 engines (spot, options)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        engine_name(CFG, ["--engine", "spt"])
    assert 'unknown engine "spt"' in capsys.readouterr().err
    one = parse_config({**stack_config(), "engines": {"all": {"strategies": "hash:0/1", "pub": "tcp://127.0.0.1:7001",
                                                             "rep": "tcp://127.0.0.1:7002"}}})
    assert engine_name(one, []) == "all"


def test_only_engines_without_spot_strategies_run_in_the_background():
    assert {e.name: in_background(CFG, e.name) for e in CFG.engines} == {"spot": False, "options": True}
    options_id = next(s.id for s in CFG.strategies if s.is_options)
    raw = {**stack_config(), "engines": {  # one spot strategy among options: the engine is on the fill path
        "mixed": {"strategies": [options_id, CFG.spot_strategies()[0].id], "pub": "tcp://127.0.0.1:5590",
                  "rep": "tcp://127.0.0.1:5591"},
        "rest": {"strategies": [s.id for s in CFG.strategies if s.id not in (options_id, CFG.spot_strategies()[0].id)],
                 "pub": "tcp://127.0.0.1:5592", "rep": "tcp://127.0.0.1:5593"}}}
    mixed = parse_config(raw)
    assert not in_background(mixed, "mixed") and not in_background(mixed, "rest")


def test_supervisord_gets_one_program_per_engine(tmp_path: Path):
    assert engine_programs(CFG) == ("signals-spot", "signals-options")
    text = render(CFG, Path("/srv/go"), "/venv/bin/python")
    assert text.count("[program:") == 2
    assert "[program:signals-options]\ncommand=/venv/bin/python -m services.signals --engine options\n" in text
    assert "directory=/srv/go\n" in text and "stdout_logfile=/srv/go/run/logs/%(program_name)s.log" in text
    conf = tmp_path / "supervisord.conf"
    path = write(CFG, conf, "/venv/bin/python")
    assert path == tmp_path / "run" / "engines.conf" and path.read_text() == render(CFG, tmp_path, "/venv/bin/python")


def test_portfolio_answers_every_book_of_a_batch_in_one_reply(tmp_path):
    from common.bus import RequestError
    from services.portfolio import MAX_POSITIONS_BATCH, PortfolioService
    from tests.support.stack import stack_security

    raw = stack_config()
    raw["state_file"] = str(tmp_path / "state" / "state.json")
    cfg = parse_config(raw)
    rt = ServiceRuntime("portfolio", stack_security(raw, tmp_path, "portfolio"))
    try:
        svc = PortfolioService(cfg, rt)
        ids = [sc.id for sc in CFG.options_strategies()][:3]
        reply = svc.on_positions_batch({"strategy_ids": ids})
        assert list(reply["books"]) == ids
        assert reply["books"] == {sid: svc.on_positions({"strategy_id": sid}) for sid in ids}
        assert reply["books"][ids[0]]["cash"] == CFG.strategy(ids[0]).capital
        for body, code, message in [
            ({"strategy_ids": []}, "bad_request",
             f"expected a list of 1..{MAX_POSITIONS_BATCH} strategy ids, got list"),
            ({"strategy_ids": "x"}, "bad_request", "got str"),
            (None, "bad_request", "got NoneType"),
            ({"strategy_ids": [ids[0], "nope"]}, "unknown_strategy", "no strategy 'nope' in this portfolio"),
        ]:
            with pytest.raises(RequestError) as caught:
                svc.on_positions_batch(body)
            assert caught.value.code == code and message in str(caught.value), caught.value
        svc.stop()
    finally:
        rt.close()


def test_a_bad_iv_reply_skips_the_batch_naming_the_field(options_engine):
    engine = options_engine
    published(engine)
    engine.market_ts = TS
    ts, body = engine.published["BTC"]
    engine.published["BTC"] = (ts, {k: v for k, v in body.items() if k != "atm_iv"})
    engine.pricer = Recorder()  # asking it fails the test
    engine.portfolio = Recorder()  # so does asking for books of a batch that cannot be decided
    engine.queue_options([sc.id for sc in engine.options if sc.underlying == "BTC"])
    decisions = engine.decide_pending_options()
    assert decisions and {d.skipped for d in decisions} == {"pricer sent a bad reply: iv reply (BTC).atm_iv: missing"}
    assert not engine.outbox


def test_a_positions_reply_with_a_bad_field_is_a_failure_naming_it(options_engine):
    engine = options_engine
    published(engine)
    engine.market_ts = TS
    engine.pricer = Recorder()
    sid = engine.options[0].id
    engine.portfolio = Recorder(lambda kind, body: {"books": {sid: book(sid) | {"cash": "lots"}}})
    engine.queue_options([sid])
    assert engine.decide_pending_options() == []
    assert engine.strategy_status[sid]["status"] == \
        f'error: RecordError: positions reply ({sid}).cash: expected a number, got "lots"'
    assert engine.failures[sid] == 1 and not engine.outbox


@pytest.mark.parametrize("close", [TS, TS + HOUR_MS], ids=["daily", "hourly"])
def test_an_options_engine_waits_out_a_close_then_steps(options_engine, monkeypatch, close):
    """Its batch would share the close's two cores with the spot engine's orders: no step (and no
    request) from 30 ms before a bar's close, the first one once the burst is over. The spot
    strategies' hourly closes count, though this engine's own bars are daily: it watched only
    those, and stepped through every hourly close's fills."""
    import services.signals as signals
    from common.clock import MarketClock

    assert "1h" in {sc.timeframe for sc in CFG.spot_strategies()}
    assert {sc.timeframe for sc in CFG.options_strategies()} == {"1d"}
    engine = options_engine
    published(engine)
    engine.market_ts = TS
    engine.portfolio = Recorder(lambda kind, body: {"books": {sid: book(sid) for sid in body["strategy_ids"]}})
    engine.closes.use(MarketClock(close, 1_000_000.0, 3_600))  # the bars closing at ``close``: at wall 1,000,000 ms
    engine.queue_options([sc.id for sc in engine.options])
    for wall, held in ((1_000_000.0 - 20, True), (1_000_000.0 + 100, True), (1_000_000.0 + 200, False)):
        monkeypatch.setattr(signals, "wall_ms", lambda wall=wall: wall)
        assert engine.options_step() is not held
        assert len(engine.options_pending) == (20 if held else 19)
    assert [kind for kind, _b in engine.portfolio.calls] == ["positions_batch"]
