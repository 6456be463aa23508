"""The gateway's HTTP side over a cache filled by hand (no zmq needed), its message handling,
when it posts to Discord, and its security: loopback by default, read-only, bearer token."""
from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.ports import free_port
from common.bus import Envelope
from config.settings import parse_config
from services.gateway import CycleReporter, Gateway, SummaryPost, listen_host, main
from services.gateway_cache import STATUS_TTL_MS, GatewayCache
from services.gateway_http import ROUTES, STATIC_FILES, WEB_DIR, HttpServer
from services.runtime import ServiceRuntime
from services.views.status import build_status
from tests.services.views.test_discord import known_clone, known_status

REPO = Path(__file__).resolve().parents[2]
NOW = 1_000_000
HOUR = 3_600_000


class Clock:
    """The wall clock a test moves by hand (``clock.now += ms``)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def filled_cache(now=NOW) -> GatewayCache:
    cache = GatewayCache(clock_ms=Clock(now))
    status = known_status()
    cache.clone = known_clone()
    services = ("marketdata", "signals-spot", "signals-options", "portfolio", "pricer")
    cache.heartbeats = {name: {"received_ms": now - 400, "pid": 10 + i, "uptime_s": 5.0, "errors": 0,
                               "bus": {"sent": 100 * (i + 1), "received": 7, "dropped": {"bad_envelope": i},
                                       "missed": {}}}
                        for i, name in enumerate(services)}
    cache.heartbeats["marketdata"].update(mode="sim", stale=False, market_ts=status["market_ts"], clock_slips=1)
    cache.last_tick_ms = now - 100
    cache.cycle_count = 12
    cache.cycles = {"count": 3, "timed": 2, "duration_sum_s": 0.5, "last_duration_s": 0.2}
    cache.equity_points = [{"ts": status["market_ts"] - 7_200_000, "values": {"momentum-btc": 1000.0}},
                           {"ts": status["market_ts"] - 3_600_000, "values": {"momentum-btc": 1040.0}}]
    return cache


class Served:
    def __init__(self, cache: GatewayCache, token: str | None = None, **limits):
        self.cache = cache
        self.server = HttpServer("127.0.0.1", free_port(), cache, token, **limits).start()
        self.port = self.server.port
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, method: str = "GET", headers: dict | None = None, data: bytes | None = None):
        req = urllib.request.Request(self.base + path, method=method, headers=headers or {}, data=data)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def close(self):
        self.server.stop()


@pytest.fixture
def served():
    s = Served(filled_cache())
    yield s
    s.close()


# --- data endpoints ----------------------------------------------------------------------------
def test_status_values_the_clone_at_the_portfolios_marks(served):
    code, headers, body = served.get("/status")
    doc = json.loads(body)
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert doc["cycle_count"] == 12
    assert doc["prices"]["BTC/USDT"] == 60_000.0
    assert doc["strategies"]["momentum-btc"]["portfolio_value"] == pytest.approx(1_100.0)
    [call] = doc["strategies"]["deribit-vol-btc"]["option_positions"].values()
    assert call["current_value_usd"] == 150.0
    assert doc["totals"]["total"]["value"] == pytest.approx(5_000.0)
    assert doc["health"]["ok"] is True


def test_status_follows_new_marks_within_the_rebuild_interval(served):
    served.get("/status")
    served.cache.clone = replace(served.cache.clone, prices={"BTC/USDT": 70_000.0})  # a delta's marks
    served.cache.clock_ms.now += STATUS_TTL_MS
    doc = json.loads(served.get("/status")[2])
    assert doc["strategies"]["momentum-btc"]["portfolio_value"] == pytest.approx(1_200.0)


def test_status_is_built_once_for_a_burst_of_requests_and_at_most_once_per_interval():
    cache = filled_cache()
    first = cache.status_json()
    assert cache.status_json() is first
    cache.clone = replace(cache.clone)
    cache.clock_ms.now += STATUS_TTL_MS - 1
    assert cache.status_json() is first  # a fast feed's replacements wait for the interval
    cache.clock_ms.now += 1
    second = cache.status_json()
    assert second is not first and cache.status_json() is second
    cache.clock_ms.now += STATUS_TTL_MS  # nothing replaced: rebuilt for the health ages all the same
    assert cache.status_json() is not second
    assert cache.metrics_text() is cache.metrics_text()


def test_healthz_is_503_when_a_service_is_lost(served):
    code, _h, body = served.get("/healthz")
    assert code == 200 and json.loads(body)["ok"] is True
    served.cache.heartbeats = {k: v for k, v in served.cache.heartbeats.items() if k != "pricer"}
    code, _h, body = served.get("/healthz")
    assert code == 503 and json.loads(body)["services"]["pricer"]["alive"] is False


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_are_prometheus_text_with_strategy_and_service_series(served):
    code, headers, body = served.get("/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = metric_samples(body.decode())
    mom = (("category", "spot"), ("strategy", "momentum-btc"))
    assert samples[("gotrader_strategy_equity_usd", mom)] == pytest.approx(1_100.0)
    assert samples[("gotrader_strategy_pnl_usd", mom)] == pytest.approx(100.0)
    assert samples[("gotrader_strategy_trades_total", mom)] == 0.0
    assert samples[("gotrader_strategy_positions", (mom[0], ("kind", "spot"), mom[1]))] == 1.0
    assert samples[("gotrader_category_equity_usd", (("category", "ibkr"),))] == pytest.approx(1_900.0)
    assert samples[("gotrader_service_up", (("service", "signals-spot"),))] == 1.0
    assert samples[("gotrader_service_heartbeat_age_seconds", (("service", "portfolio"),))] == 0.4
    assert samples[("gotrader_bus_messages_sent_total", (("service", "pricer"),))] == 500.0
    assert samples[("gotrader_bus_dropped_total", (("reason", "bad_envelope"), ("service", "signals-spot")))] == 1.0
    assert samples[("gotrader_cycles_total", ())] == 3.0
    assert samples[("gotrader_cycle_duration_seconds_count", ())] == 2.0
    assert samples[("gotrader_cycle_duration_seconds_sum", ())] == 0.5
    assert samples[("gotrader_feed_stale", ())] == 0.0
    assert samples[("gotrader_feed_last_tick_age_seconds", ())] == 0.1
    assert samples[("gotrader_feed_clock_slips_total", ())] == 1.0


def test_equity_endpoint_gives_curves_with_the_live_point(served):
    doc = json.loads(served.get("/api/equity")[2])
    assert doc["strategies"]["momentum-btc"] == [1000.0, 1040.0, pytest.approx(1_100.0)]
    assert doc["ts"][-1] == served.cache.clone.market_ts
    assert doc["categories"]["total"][-1] == pytest.approx(5_000.0)
    assert set(doc["categories"]) == {"spot", "deribit", "ibkr", "total"}


def test_status_before_any_snapshot_is_still_valid():
    s = Served(GatewayCache(clock_ms=Clock(NOW)))
    try:
        for path in ("/status", "/metrics", "/api/equity"):
            assert s.get(path)[0] == 200, path
        assert json.loads(s.get("/status")[2])["strategies"] == {}
    finally:
        s.close()


def test_openapi_documents_every_path(served):
    code, headers, body = served.get("/openapi.json")
    doc = json.loads(body)
    assert code == 200 and doc["openapi"].startswith("3.")
    assert set(ROUTES) | set(STATIC_FILES) <= set(doc["paths"])
    assert all("get" in item for item in doc["paths"].values())


# --- dashboard files ---------------------------------------------------------------------------
@pytest.mark.parametrize("path, content_type, marker", [
    ("/", "text/html; charset=utf-8", b"<table id=\"strategies\""),
    ("/app.js", "text/javascript; charset=utf-8", b"function lineChart"),
    ("/style.css", "text/css; charset=utf-8", b"table.data"),
])
def test_dashboard_files_are_served_with_their_content_type(served, path, content_type, marker):
    code, headers, body = served.get(path)
    assert code == 200 and headers["Content-Type"] == content_type and marker in body


def test_dashboard_loads_nothing_from_another_host():
    for name in ("index.html", "app.js", "style.css"):
        text = (WEB_DIR / name).read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), name
        assert not re.search(r"""(fetch|import)\s*\(\s*["'`](https?:)?//""", text), name
        assert "@import" not in text and "url(http" not in text, name


def test_web_dir_is_found_beside_the_module_not_the_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert WEB_DIR == REPO / "services" / "web"
    s = Served(filled_cache())
    try:
        assert s.get("/")[0] == 200
    finally:
        s.close()


# --- method, path and auth rules -------------------------------------------------------------
def test_unknown_path_is_404_json(served):
    code, _h, body = served.get("/nope?x=1")
    assert code == 404 and json.loads(body)["error"] == "no such path '/nope'"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "QUERY", "PROPFIND"])
def test_every_method_but_get_and_head_is_405(served, method):
    code, headers, body = served.get("/status", method=method, data=b"{}" if method in ("POST", "PUT") else None)
    assert code == 405 and headers["Allow"] == "GET, HEAD"
    assert "read-only" in json.loads(body)["error"]


def test_a_method_http_does_not_define_is_a_bad_request(served):
    assert served.get("/status", method="BREW")[0] == 400


def test_head_has_the_headers_and_no_body(served):
    code, headers, body = served.get("/status", method="HEAD")
    assert code == 200 and int(headers["Content-Length"]) > 100 and body == b""


def test_with_a_token_data_paths_need_the_bearer_header():
    s = Served(filled_cache(), token="s3cret")
    try:
        assert s.get("/status")[0] == 401
        assert s.get("/metrics", headers={"Authorization": "Bearer wrong"})[0] == 401
        code, headers, _b = s.get("/healthz")
        assert code == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert s.get("/status", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert s.get("/")[0] == 200  # the page shell has no data; its fetches send the token
    finally:
        s.close()


def config(**gateway):
    raw = json.loads((REPO / "config" / "default.json").read_text())
    raw["gateway"] = {**raw.get("gateway", {}), **gateway}
    return parse_config(raw, "test")


def test_the_default_config_binds_loopback_only():
    cfg = parse_config(json.loads((REPO / "config" / "default.json").read_text()), "default")
    host = listen_host(cfg, None)
    assert host == "127.0.0.1"
    server = HttpServer(host, 0, GatewayCache()).start()
    try:
        assert server.address is not None and server.address[0] == "127.0.0.1"
    finally:
        server.stop()


def test_a_wider_host_needs_allow_remote():
    with pytest.raises(ValueError, match="allow_remote"):
        listen_host(config(), "0.0.0.0")
    assert listen_host(config(host="0.0.0.0", allow_remote=True), None) == "0.0.0.0"


def test_allow_remote_without_a_token_refuses_to_start(tmp_path, monkeypatch, capsys):
    raw = json.loads((REPO / "config" / "default.json").read_text())
    raw["gateway"] = {"host": "127.0.0.1", "port": 1, "allow_remote": True}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(raw))
    monkeypatch.delenv("GO_TRADER_TOKEN", raising=False)
    assert main(["--config", str(path)]) == 2
    assert "token_missing" in capsys.readouterr().out


# --- the loop side -------------------------------------------------------------------------------
def env(type_: str, body, source="x", seq=1) -> Envelope:
    return Envelope(1, type_, "id", 0, source, seq, body)


class FakePoster:
    def __init__(self):
        self.batches: list[list[str]] = []
        self.counts = {"posted": 0}

    def submit(self, messages):
        self.batches.append(messages)
        return True


@pytest.fixture
def gateway():
    rt = ServiceRuntime("gateway-test")
    gw = Gateway(config(), rt, poster=FakePoster())
    yield gw
    rt.close()


def test_messages_replace_the_caches(gateway):
    gateway.on_message("tick.BTC/USDT", env("tick", {"symbol": "BTC/USDT", "price": 61_000.0, "ts": 5}))
    assert gateway.cache.last_tick_ms is not None
    gateway.on_message("heartbeat.signals-spot", env("heartbeat", {"cycle_count": 4}, source="signals-spot"))
    gateway.on_message("heartbeat.signals-options", env("heartbeat", {"cycle_count": 3}, source="signals-options"))
    assert gateway.cache.cycle_count == 7 and "received_ms" in gateway.cache.heartbeats["signals-spot"]
    gateway.on_message("cycle", env("cycle", {"cycle": 5, "market_ts": 9, "ran": 3, "orders": 1, "duration_ms": 40},
                                    source="signals-spot"))
    assert gateway.cache.cycle_count == 8  # the engines' cycles together: 5 spot + 3 options
    assert gateway.cache.cycles == {"count": 1, "timed": 1, "duration_sum_s": 0.04, "last_duration_s": 0.04}


def test_bad_messages_are_counted_not_raised(gateway):
    gateway.on_message("tick.X", env("tick", {"symbol": "X", "price": -1}))
    gateway.on_message("tick.X", env("tick", "not a map"))
    gateway.on_message("weird", env("weird", {}))
    gateway.on_message("cycle", env("cycle", {"cycle": "7"}))
    gateway.on_message("fill.x", env("fill", {"seq": "1"}))
    assert dict(gateway.rt.stats.dropped) == {"bad_tick": 1, "bad_body": 1, "unexpected_type": 1,
                                              "bad_cycle": 1, "bad_fill": 1}


def test_a_cycle_with_fills_posts_one_summary_once_the_snapshot_covers_them(gateway):
    gateway.cache.clone = known_clone(journal_seq=4)
    gateway.on_message("cycle", env("cycle", {"cycle": 12}))
    fill = {"seq": 5, "strategy_id": "momentum-btc", "side": "buy", "quantity": 0.01, "instrument": "BTC/USDT",
            "price": 60_000.0, "fee": 0.6}
    gateway.on_message("fill.momentum-btc", env("fill", fill))
    gateway.report_cycle()
    assert gateway.poster.batches == []  # the clone still says journal_seq 4
    gateway.cache.clone = replace(gateway.cache.clone, journal_seq=5)
    gateway.report_cycle()
    gateway.report_cycle()
    assert len(gateway.poster.batches) == 1
    text = "\n".join(gateway.poster.batches[0])
    assert text.startswith("**go-trader** cycle 12")
    assert "• momentum-btc: BUY 0.01 BTC/USDT @ $60,000.00 (fee $0.60)" in text


class FakePortfolio:
    """The portfolio's REP as the gateway asks it: ``book_snapshot`` from a real Portfolio."""

    def __init__(self, portfolio, stream="s1"):
        self.p, self.stream, self.seq, self.asked = portfolio, stream, 0, 0

    def request(self, type_, body=None, **_kw):
        assert type_ == "book_snapshot"
        self.asked += 1
        return json.loads(json.dumps({"stream": self.stream, "seq": self.seq, **self.p.records_message(self.p.books)}))

    def delta(self, seq=None):
        self.seq = self.seq + 1 if seq is None else seq
        body = {"stream": self.stream, "seq": self.seq, **self.p.records_message(self.p.take_changed())}
        return env("book_delta", json.loads(json.dumps(body)), source="portfolio", seq=self.seq)


def own_views(portfolio) -> dict:
    return portfolio.snapshot()["strategies"]


def shown_views(gateway) -> dict:
    """What /status shows of the gateway's clone now (``cache.status`` memoizes for STATUS_TTL_MS)."""
    return {sid: {k: v for k, v in view.items() if k != "last_decision"}
            for sid, view in build_status(gateway.cache.clone, 0, {})["strategies"].items()}


@pytest.fixture
def traded(tmp_path):
    from common.state_store import Journal
    from tests.trading.test_portfolio import run_every_kind_of_fill

    p = run_every_kind_of_fill(Journal(tmp_path / "journal.jsonl")).p
    p.take_changed()
    return p


def test_status_is_the_portfolios_own_valuation_when_the_gateway_has_a_newer_price(gateway, traded):
    gateway.portfolio = FakePortfolio(traded)
    gateway.fetch_snapshot()
    marked = traded.prices["BTC/USDT"]
    gateway.on_message("tick.BTC/USDT", env("tick", {"symbol": "BTC/USDT", "price": marked * 1.5, "ts": 1}))
    status = gateway.cache.status()
    assert {sid: {k: v for k, v in view.items() if k != "last_decision"}
            for sid, view in status["strategies"].items()} == own_views(traded)
    assert status["prices"] == traded.prices and status["totals"] == traded.snapshot()["totals"]
    assert status["totals"]["total"]["value"] == pytest.approx(sum(traded.value_of(sid) for sid in traded.books))


def test_deltas_follow_the_portfolio_and_a_gap_asks_for_a_new_snapshot(gateway, traded):
    fake = FakePortfolio(traded)
    gateway.portfolio = fake
    gateway.on_message("portfolio.delta", fake.delta())  # before any snapshot: waits for fetch_snapshot
    assert gateway.cache.clone is None and fake.asked == 0
    gateway.fetch_snapshot()
    assert (fake.asked, gateway.cache.clone.seq) == (1, 1)
    traded.mark({"BTC/USDT": traded.prices["BTC/USDT"] * 1.02}, traded.market_ts + 1)
    gateway.on_message("portfolio.delta", fake.delta())
    assert gateway.cache.clone.seq == 2 and fake.asked == 1 and shown_views(gateway) == own_views(traded)
    traded.mark({"BTC/USDT": traded.prices["BTC/USDT"] * 0.5}, traded.market_ts + 1)  # trips kill switches
    fake.delta()  # seq 3 is lost on the way
    gateway.on_message("portfolio.delta", fake.delta())  # seq 4: a gap
    assert fake.asked == 2 and gateway.cache.clone.seq == 4 and gateway.rt.stats.dropped["delta_gap"] == 1
    assert shown_views(gateway) == own_views(traded)
    fake.stream = "s2"  # the portfolio restarted: its numbering starts again
    gateway.on_message("portfolio.delta", fake.delta(seq=1))
    assert fake.asked == 3 and gateway.cache.clone.stream == "s2"


def test_a_bad_delta_resnapshots_and_a_failed_snapshot_clears_the_clone(gateway, traded):
    from common.bus import RequestFailed

    fake = FakePortfolio(traded)
    gateway.portfolio = fake
    gateway.fetch_snapshot()
    bad = fake.delta()
    bad.body["books"] = {"mom": {"cash": "lots"}}
    gateway.on_message("portfolio.delta", bad)
    assert fake.asked == 2 and gateway.cache.clone.seq == 1 and shown_views(gateway) == own_views(traded)

    def down(*_a, **_k):
        raise RequestFailed("portfolio: no answer")

    fake.request = down
    gateway.on_message("portfolio.delta", fake.delta(seq=9))
    assert gateway.cache.clone is None  # never a clone known to be stale; the timer asks again


def by_kind(fill: dict) -> str:
    return "spot" if fill.get("kind", "spot") == "spot" else "options"


def seqs(posts: list[SummaryPost]) -> list[tuple[str, int, list[int]]]:
    return [(p.group, p.cycle, [f["seq"] for f in p.fills]) for p in posts]


def test_reporter_waits_for_a_cycle_and_coalesces_fast_cycles():
    rep = CycleReporter(min_interval_ms=2_000)
    rep.on_fill({"seq": 1})
    assert rep.take(journal_seq=1, now_ms=0, group_of=by_kind) == []  # a liquidation between cycles waits
    rep.on_cycle(3, HOUR)
    assert rep.take(journal_seq=0, now_ms=0, group_of=by_kind) == []  # the snapshot does not cover seq 1 yet
    assert seqs(rep.take(journal_seq=1, now_ms=0, group_of=by_kind)) == [("spot", 3, [1])]
    rep.on_cycle(4, HOUR)
    rep.on_fill({"seq": 3})
    rep.on_fill({"seq": 2, "kind": "option"})
    assert rep.take(journal_seq=3, now_ms=1_999, group_of=by_kind) == []
    rep.on_cycle(5, HOUR)
    assert seqs(rep.take(journal_seq=3, now_ms=2_000, group_of=by_kind)) == [("spot", 5, [3]), ("options", 5, [2])]
    rep.on_cycle(6, HOUR)
    assert rep.take(journal_seq=3, now_ms=9_000, group_of=by_kind) == []  # per_check: no fills, no post


def test_each_group_posts_at_its_own_frequency_in_market_time():
    rep = CycleReporter(spot_freq="hourly", options_freq="daily", min_interval_ms=0)
    day = 24 * HOUR
    rep.on_cycle(1, 10 * day + 5 * HOUR + 60_000)  # the first cycle posts both: nothing was posted yet
    assert seqs(rep.take(0, 0, by_kind)) == [("spot", 1, []), ("options", 1, [])]
    rep.on_fill({"seq": 1})
    rep.on_fill({"seq": 2, "kind": "option"})
    rep.on_cycle(2, 10 * day + 5 * HOUR + 30 * 60_000)  # same hour, same day: nothing, the fills wait
    assert rep.take(2, 1, by_kind) == []
    rep.on_fill({"seq": 3})
    rep.on_cycle(3, 10 * day + 6 * HOUR)  # a new market hour: spot posts its two fills, options still waits
    assert seqs(rep.take(3, 2, by_kind)) == [("spot", 3, [1, 3])]
    rep.on_cycle(4, 11 * day)  # a new day (and hour): both
    assert seqs(rep.take(3, 3, by_kind)) == [("spot", 4, []), ("options", 4, [2])]


def test_reporter_keeps_a_bounded_backlog():
    rep = CycleReporter(max_pending=3)
    for seq in range(1, 6):
        rep.on_fill({"seq": seq})
    rep.on_cycle(1, HOUR)
    assert seqs(rep.take(5, 0, by_kind)) == [("spot", 1, [3, 4, 5])] and rep.overflow == 2
    with pytest.raises(ValueError, match="fill.seq"):
        rep.on_fill({"seq": None})


def test_requests_stay_correct_while_the_loop_replaces_the_cache(served):
    errors: list[str] = []

    def client():
        for _ in range(40):
            code, _h, body = served.get("/status")
            doc = json.loads(body)
            if code != 200 or "momentum-btc" not in doc["strategies"]:
                errors.append(f"{code}")

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    price = 60_000.0
    while any(t.is_alive() for t in threads):
        time.sleep(0.002)  # the loop replaces caches at most every few ms, not in a spin
        price += 1.0
        served.cache.clone = replace(served.cache.clone, prices={"BTC/USDT": price})
    for t in threads:
        t.join()
    assert errors == []


# --- the running stack ---------------------------------------------------------------------------
def test_a_running_stack_posts_cycle_summaries_and_never_writes_the_url(tmp_path):
    from tests.services.test_discord_webhook import SECRET_PATH, Webhook
    from tests.support.stack import Stack, stack_config

    with Webhook() as hook:
        with Stack(tmp_path, stack_config(), env={"DISCORD_WEBHOOK_URL": hook.url}) as stack:
            stack.wait_for(lambda: any("Trades (" in r["json"]["content"] for r in hook.received), timeout=60,
                           what="a Discord summary with trades")
        pieces = [r["json"]["content"] for r in hook.received]
    text = "\n".join(pieces)  # a summary with many trades spans several pieces
    assert pieces[0].startswith("**go-trader** cycle ")
    header = r"\*\*\$[\d,]+\.\d\d → \$[\d,]+\.\d\d\*\* \([+-]\$[\d,]+\.\d\d / [+-]\d+\.\d\d%\)\n"
    assert re.search(r"\nSpot: " + header, pieces[0]) and re.search(r"\nTotal: " + header, text)
    assert re.search(r"\n• [a-z0-9-]+ \([+-]\d+\.\d%\)\n", pieces[0])
    assert all(len(p) <= 2000 for p in pieces)
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    assert "very-secret-token" not in written and SECRET_PATH not in written
    assert "discord_on" in (tmp_path / "run" / "logs" / "gateway.log").read_text()
