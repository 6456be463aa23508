"""The /status, /healthz and equity documents: the portfolio's own values of its books, cloned
from its snapshot and deltas."""
from __future__ import annotations

import json
import math

import pytest

from common.model import RecordError
from common.state_store import Journal
from services.views.status import (
    HEARTBEAT_LOST_MS,
    CloneGap,
    StatusInputError,
    apply_delta,
    build_health,
    build_status,
    clone_from_snapshot,
    equity_curves,
    json_safe,
    last_decision,
)
from tests.support.builders import book, clone
from tests.trading.test_portfolio import run_every_kind_of_fill

SERVICES = ("marketdata", "signals-spot", "signals-options", "portfolio", "pricer")


def portfolio_with_trades(tmp_path):
    return run_every_kind_of_fill(Journal(tmp_path / "journal.jsonl")).p


def snapshot_body(p, seq=0, stream="s1"):
    return json.loads(json.dumps({"stream": stream, "seq": seq, **p.records_message(p.books)}))  # as it travels


def delta_body(p, seq, stream="s1"):
    return json.loads(json.dumps({"stream": stream, "seq": seq, **p.records_message(p.take_changed())}))


def without_decisions(strategies):
    return {sid: {k: v for k, v in view.items() if k != "last_decision"} for sid, view in strategies.items()}


def test_status_shows_exactly_the_portfolios_own_views_marks_and_totals(tmp_path):
    p = portfolio_with_trades(tmp_path)
    doc = build_status(clone_from_snapshot(snapshot_body(p)), 7, {"ok": True})
    own = p.snapshot()
    assert without_decisions(doc["strategies"]) == own["strategies"]
    assert doc["totals"] == own["totals"] and doc["prices"] == own["prices"] and doc["market_ts"] == p.market_ts
    assert doc["cycle_count"] == 7 and json.loads(json.dumps(doc)) == doc  # plain JSON all the way down


def test_build_status_values_books_at_the_clones_marks_and_totals_per_category():
    books = {"momentum-btc": book("momentum-btc", "spot", 500.0, 1000.0, {"BTC/USDT": (0.01, 40_000.0)}),
             "deribit-vol-btc": book("deribit-vol-btc", "deribit", 900.0, 1000.0, option_value=150.0)}
    doc = build_status(clone(books, {"BTC/USDT": 60_000.0}), 7, {"ok": True})
    # 500 cash + 0.01 BTC * 60,000 = 1,100 -> +10 %; options 900 + 150 = 1,050
    spot = doc["strategies"]["momentum-btc"]
    assert (spot["portfolio_value"], spot["pnl"], spot["pnl_pct"]) == (
        pytest.approx(1_100.0), pytest.approx(100.0), pytest.approx(10.0))
    pos = spot["positions"]["BTC/USDT"]
    assert (pos["current_price"], pos["value"], pos["unrealized_pnl"]) == (60_000.0, pytest.approx(600.0),
                                                                           pytest.approx(200.0))
    totals = doc["totals"]
    assert totals["spot"]["value"] == pytest.approx(1_100.0) and totals["deribit"]["value"] == pytest.approx(1_050.0)
    assert (totals["total"]["initial"], totals["total"]["pnl"], totals["total"]["pnl_pct"]) == (
        2_000.0, pytest.approx(150.0), pytest.approx(7.5))
    unpriced = build_status(clone(books, {}), 7, {"ok": True})["strategies"]["momentum-btc"]
    assert unpriced["portfolio_value"] == pytest.approx(500.0 + 0.01 * 40_000.0)  # never priced: at cost


def test_build_status_before_the_first_snapshot_says_so():
    doc = build_status(None, 0, {"ok": False})
    assert doc["strategies"] == {} and doc["market_ts"] is None
    assert "waiting" in doc["note"]


def test_deltas_in_order_keep_the_clone_equal_to_the_portfolio(tmp_path):
    p = portfolio_with_trades(tmp_path)
    p.take_changed()
    held = clone_from_snapshot(snapshot_body(p, seq=3))
    p.mark({"BTC/USDT": p.prices["BTC/USDT"] * 1.01}, p.market_ts + 1)
    p._move_book("vol", "vol-renamed")
    delta = delta_body(p, 4)
    assert (set(delta["books"]), delta["removed"]) == ({"vol-renamed"}, ["vol"])  # only the changed books travel
    held = apply_delta(held, delta)
    assert held.seq == 4 and without_decisions(build_status(held, 0, {})["strategies"]) == p.snapshot()["strategies"]
    assert apply_delta(held, delta) is held  # a delta the clone already holds changes nothing


def test_a_missed_delta_or_a_new_stream_asks_for_a_snapshot(tmp_path):
    p = portfolio_with_trades(tmp_path)
    held = clone_from_snapshot(snapshot_body(p, seq=3))
    with pytest.raises(CloneGap, match="deltas 4..5 missed"):
        apply_delta(held, delta_body(p, 6))
    with pytest.raises(CloneGap, match="new stream 's2'"):
        apply_delta(held, delta_body(p, 1, stream="s2"))
    bad = delta_body(p, 4)
    bad["books"] = {"mom": {**snapshot_body(p)["books"]["mom"], "cash": None}}
    with pytest.raises(CloneGap, match=r"book_delta 4\.books\.mom\.cash"):
        apply_delta(held, bad)
    with pytest.raises(CloneGap, match=r"prices\.BTC/USDT"):
        apply_delta(held, {**delta_body(p, 4), "prices": {"BTC/USDT": float("nan")}})


def test_a_bad_snapshot_names_its_key():
    body = {"stream": "s", "seq": 0, "market_ts": 0, "journal_seq": 0, "prices": {}, "books": [1], "removed": []}
    with pytest.raises(RecordError, match=r"book_snapshot\.books"):
        clone_from_snapshot(body)
    with pytest.raises(RecordError, match=r"book_snapshot\.removed"):
        clone_from_snapshot({**body, "books": {}, "removed": "all"})


def test_health_declares_a_service_lost_after_two_missed_beats():
    now = 100_000
    beats = {"marketdata": {"received_ms": now - 500, "pid": 1, "mode": "sim", "stale": False, "clock_slips": 2},
             "signals-spot": {"received_ms": now - HEARTBEAT_LOST_MS, "pid": 2},
             "portfolio": {"received_ms": now - 100, "pid": 3}}
    health = build_health(beats, now, last_tick_ms=now - 250)
    services = health["services"]
    assert services["marketdata"]["alive"] and services["portfolio"]["alive"]
    assert not services["signals-spot"]["alive"]
    assert services["signals-spot"]["last_heartbeat_age_s"] == 3.0
    assert services["pricer"] == {"alive": False, "last_heartbeat_age_s": None}
    assert health["ok"] is False
    assert health["feed"]["last_tick_age_s"] == 0.25
    assert health["feed"]["clock_slips"] == 2


def test_health_is_not_ok_when_the_feed_is_stale():
    now = 10_000
    beats = {name: {"received_ms": now} for name in SERVICES}
    assert build_health(beats, now)["ok"] is True
    beats["marketdata"] = {"received_ms": now, "stale": True}
    assert build_health(beats, now)["ok"] is False


def test_health_is_not_ok_while_a_live_service_reports_a_problem():
    now = 10_000
    beats = {name: {"received_ms": now, "problems": []} for name in SERVICES}
    assert build_health(beats, now)["ok"] is True
    beats["portfolio"]["problems"] = ["persist: state.json: [Errno 28] No space left on device"]
    health = build_health(beats, now)
    assert health["ok"] is False
    assert health["services"]["portfolio"]["problems"] == ["persist: state.json: [Errno 28] No space left on device"]
    assert health["services"]["portfolio"]["alive"] is True


def test_equity_curves_sum_categories_carrying_the_last_known_value():
    views = {"a": {"category": "spot", "initial_capital": 1000.0, "portfolio_value": 1030.0},
             "b": {"category": "spot", "initial_capital": 500.0, "portfolio_value": 480.0},
             "c": {"category": "deribit", "initial_capital": 2000.0, "portfolio_value": 2100.0}}
    points = [{"ts": 7_200_000, "values": {"a": 1010.0, "c": 2050.0}},  # out of order on purpose
              {"ts": 3_600_000, "values": {"a": 1000.0, "b": 500.0, "c": 2000.0}}]
    curves = equity_curves(points, views, live_ts=9_000_000)
    assert curves["ts"] == [3_600_000, 7_200_000, 9_000_000]
    assert curves["strategies"]["a"] == [1000.0, 1010.0, 1030.0]
    assert curves["strategies"]["b"] == [500.0, None, 480.0]
    # spot at 7.2M: a 1010 + b carried at 500
    assert curves["categories"]["spot"] == [1500.0, 1510.0, 1510.0]
    assert curves["categories"]["deribit"] == [2000.0, 2050.0, 2100.0]
    assert curves["categories"]["total"] == [3500.0, 3560.0, 3610.0]
    assert list(curves["categories"]) == ["spot", "deribit", "total"]


def test_equity_curves_start_a_new_strategy_at_its_initial_capital():
    views = {"a": {"category": "ibkr", "initial_capital": 800.0, "portfolio_value": None}}
    curves = equity_curves([{"ts": 1, "values": {}}], views)
    assert curves["categories"]["ibkr"] == [800.0] and curves["strategies"]["a"] == [None]


def test_equity_curves_do_not_append_a_live_point_older_than_the_log():
    views = {"a": {"category": "spot", "initial_capital": 1.0, "portfolio_value": 2.0}}
    assert equity_curves([{"ts": 10, "values": {"a": 1.5}}], views, live_ts=10)["ts"] == [10]


@pytest.mark.parametrize("point", [{"ts": "1", "values": {}}, {"ts": True, "values": {}}, {"ts": 1, "values": []}])
def test_equity_curves_name_a_bad_point(point):
    with pytest.raises(StatusInputError, match=r"equity point \[1\]"):
        equity_curves([{"ts": 0, "values": {}}, point], {})


def test_json_safe_turns_non_finite_numbers_into_null():
    doc = json_safe({"a": [1.0, math.nan], "b": {"c": math.inf}, 3: "x"})
    assert doc == {"a": [1.0, None], "b": {"c": None}, "3": "x"}
    json.dumps(doc, allow_nan=False)


def test_every_strategy_in_status_carries_its_last_decision_and_why():
    snapshot = clone({"momentum-btc": book("momentum-btc", "spot", 500.0, 1000.0, {"BTC/USDT": (0.01, 40_000.0)}),
                      "deribit-vol-btc": book("deribit-vol-btc", "deribit", 900.0, 1000.0, option_value=150.0),
                      "deribit-wheel-btc": book("deribit-wheel-btc", "deribit", 1000.0, 1000.0)},
                     {"BTC/USDT": 40_000.0}, market_ts=5)
    decisions = {
        "momentum-btc": {"status": "ok", "ts": 3_600_000, "decision": "hold", "reason": "momentum says hold at 40000"},
        "deribit-vol-btc": {"status": "ok", "ts": 7_200_000, "decision": "no trade",
                            "reason": "venue minimum: 0.1 contract(s) (0.1 BTC) of X needs $8,500.00 > budget $250.00"},
        "deribit-wheel-btc": "garbage",
    }
    doc = build_status(snapshot, 1, {}, decisions)
    strategies = doc["strategies"]
    assert strategies["momentum-btc"]["last_decision"] == {"decision": "hold", "ts": 3_600_000,
                                                           "reason": "momentum says hold at 40000"}
    vol = strategies["deribit-vol-btc"]["last_decision"]
    assert vol["decision"] == "no trade" and vol["reason"].startswith("venue minimum") and vol["ts"] == 7_200_000
    assert strategies["deribit-wheel-btc"]["last_decision"]["decision"] == "none yet"
    assert build_status(snapshot, 1, {})["strategies"]["momentum-btc"]["last_decision"]["decision"] == "none yet"
    json.dumps(json_safe(doc))


def test_a_failing_strategy_shows_its_error_and_failure_count():
    entry = {"status": "error: x", "ts": 7, "decision": "error", "reason": "mod:fn: failed on 9 bars: KeyError: 'a'",
             "failures": 3}
    assert last_decision(entry) == {"decision": "error", "reason": "mod:fn: failed on 9 bars: KeyError: 'a'", "ts": 7,
                                    "failures": 3}
    assert "failures" not in last_decision({**entry, "failures": "3"})
