"""The /status, /healthz and equity documents: live marks over a cached snapshot."""
from __future__ import annotations

import json
import math

import pytest

from services.views.status import (
    HEARTBEAT_LOST_MS,
    StatusInputError,
    build_health,
    build_status,
    equity_curves,
    json_safe,
    last_decision,
    revalue,
)

SERVICES = ("marketdata", "signals-spot", "signals-options", "portfolio", "pricer")


def spot_view(sid="momentum-btc", cash=500.0, qty=0.01, avg=40_000.0, category="spot", initial=1000.0):
    return {
        "id": sid, "type": "spot", "category": category, "cash": cash, "initial_capital": initial,
        "positions": {"BTC/USDT": {"quantity": qty, "avg_price": avg, "current_price": avg,
                                   "value": qty * avg, "unrealized_pnl": 0.0, "opened_ts": 1}} if qty else {},
        "option_positions": {}, "trade_count": 1, "portfolio_value": cash + qty * avg,
        "pnl": cash + qty * avg - initial, "pnl_pct": None,
        "risk_state": {"kill_switch": False, "circuit_breaker": False}, "recent_trades": [],
    }


def options_view(sid="deribit-vol-btc", cash=900.0, value_usd=150.0):
    view = spot_view(sid, cash=cash, qty=0.0, category="deribit")
    view["type"] = "options"
    greeks = {"delta": 0.4, "gamma": 1e-5, "theta": -12.0, "vega": 80.0}
    view["option_positions"] = {"BTC-25DEC26-78000-C": {"quantity": 1.0, "current_value_usd": value_usd,
                                                        "greeks": greeks}}
    return view


def test_revalue_marks_spot_at_the_live_price():
    out = revalue(spot_view(), {"BTC/USDT": 50_000.0})
    # 500 cash + 0.01 BTC * 50,000 = 1,000 -> pnl 0; at 60,000: 1,100 -> +10 %
    assert out["portfolio_value"] == pytest.approx(1_000.0)
    out = revalue(spot_view(), {"BTC/USDT": 60_000.0})
    assert out["portfolio_value"] == pytest.approx(1_100.0)
    assert out["pnl"] == pytest.approx(100.0)
    assert out["pnl_pct"] == pytest.approx(10.0)
    pos = out["positions"]["BTC/USDT"]
    assert (pos["current_price"], pos["value"], pos["unrealized_pnl"]) == (
        60_000.0, pytest.approx(600.0), pytest.approx(200.0))


def test_revalue_keeps_the_snapshot_untouched():
    view = spot_view()
    revalue(view, {"BTC/USDT": 60_000.0})
    assert view["positions"]["BTC/USDT"]["current_price"] == 40_000.0


def test_revalue_without_any_price_carries_the_position_at_cost():
    view = spot_view()
    view["positions"]["BTC/USDT"]["current_price"] = None
    assert revalue(view, {})["portfolio_value"] == pytest.approx(500.0 + 0.01 * 40_000.0)


def test_revalue_adds_the_option_marks_and_keeps_their_greeks():
    out = revalue(options_view(cash=900.0, value_usd=150.0), {})
    assert out["portfolio_value"] == pytest.approx(1_050.0)
    assert out["pnl_pct"] == pytest.approx(5.0)
    assert out["option_positions"]["BTC-25DEC26-78000-C"]["greeks"]["theta"] == -12.0


def test_revalue_names_a_view_missing_cash():
    view = spot_view()
    del view["cash"]
    with pytest.raises(StatusInputError, match="momentum-btc.*'cash'"):
        revalue(view, {})


def test_build_status_marks_every_strategy_and_totals_per_category():
    snapshot = {"market_ts": 1_767_225_600_000, "journal_seq": 3, "prices": {"BTC/USDT": 40_000.0},
                "strategies": {"momentum-btc": spot_view(), "deribit-vol-btc": options_view()}}
    doc = build_status(snapshot, {"BTC/USDT": 60_000.0}, 7, {"ok": True})
    assert doc["cycle_count"] == 7 and doc["market_ts"] == 1_767_225_600_000
    assert doc["prices"] == {"BTC/USDT": 60_000.0}
    assert doc["strategies"]["momentum-btc"]["portfolio_value"] == pytest.approx(1_100.0)
    totals = doc["totals"]
    assert totals["spot"]["value"] == pytest.approx(1_100.0)
    assert totals["deribit"]["value"] == pytest.approx(1_050.0)
    assert totals["total"]["initial"] == 2_000.0
    assert totals["total"]["pnl"] == pytest.approx(150.0)
    assert totals["total"]["pnl_pct"] == pytest.approx(7.5)
    assert json.loads(json.dumps(doc)) == doc  # plain JSON all the way down


def test_build_status_before_the_first_snapshot_says_so():
    doc = build_status(None, {"BTC/USDT": 1.0}, 0, {"ok": False})
    assert doc["strategies"] == {} and doc["market_ts"] is None
    assert "waiting" in doc["note"]


def test_build_status_rejects_a_snapshot_without_strategies():
    with pytest.raises(StatusInputError, match="snapshot.strategies"):
        build_status({"strategies": [1, 2]}, {}, 0, {})


def test_health_declares_a_service_lost_after_two_missed_beats():
    now = 100_000
    beats = {"marketdata": {"received_ms": now - 500, "pid": 1, "mode": "sim", "stale": False},
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
    snapshot = {"market_ts": 5, "prices": {"BTC/USDT": 40_000.0},
                "strategies": {"momentum-btc": spot_view(), "deribit-vol-btc": options_view(),
                               "deribit-wheel-btc": options_view("deribit-wheel-btc")}}
    decisions = {
        "momentum-btc": {"status": "ok", "ts": 3_600_000, "decision": "hold", "reason": "momentum says hold at 40000"},
        "deribit-vol-btc": {"status": "ok", "ts": 7_200_000, "decision": "no trade",
                            "reason": "venue minimum: 0.1 contract(s) (0.1 BTC) of X needs $8,500.00 > budget $250.00"},
        "deribit-wheel-btc": "garbage",
    }
    doc = build_status(snapshot, {}, 1, {}, decisions)
    strategies = doc["strategies"]
    assert strategies["momentum-btc"]["last_decision"] == {"decision": "hold", "ts": 3_600_000,
                                                           "reason": "momentum says hold at 40000"}
    vol = strategies["deribit-vol-btc"]["last_decision"]
    assert vol["decision"] == "no trade" and vol["reason"].startswith("venue minimum") and vol["ts"] == 7_200_000
    assert strategies["deribit-wheel-btc"]["last_decision"]["decision"] == "none yet"
    assert build_status(snapshot, {}, 1, {})["strategies"]["momentum-btc"]["last_decision"]["decision"] == "none yet"
    json.dumps(json_safe(doc))


def test_a_failing_strategy_shows_its_error_and_failure_count():
    entry = {"status": "error: x", "ts": 7, "decision": "error", "reason": "mod:fn: failed on 9 bars: KeyError: 'a'",
             "failures": 3}
    assert last_decision(entry) == {"decision": "error", "reason": "mod:fn: failed on 9 bars: KeyError: 'a'", "ts": 7,
                                    "failures": 3}
    assert "failures" not in last_decision({**entry, "failures": "3"})
