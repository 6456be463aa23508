"""One valuation for every reader: the portfolio's views, its records on the bus (read back by
the gateway) and its totals all value a book with ``book_valuation``; only changed books travel."""
from __future__ import annotations

import json

import pytest

from common.model import RecordError, SpotOrder
from common.state_store import Journal
from tests.trading.test_portfolio import T0, Run, new_portfolio, run_every_kind_of_fill
from trading.portfolio import book_record, book_view, category_totals, read_book_record


def test_a_record_read_back_gives_the_portfolios_own_view_of_every_kind_of_book(tmp_path):
    run = run_every_kind_of_fill(Journal(tmp_path / "journal.jsonl"))
    p = run.p
    assert any(b.option_positions for b in p.books.values()) and any(b.positions for b in p.books.values())
    for sid, held in p.books.items():
        record = json.loads(json.dumps(book_record(held, p.category_of(sid))))  # as it travels
        book, category = read_book_record(record, f"books.{sid}")
        assert book_view(book, category, p.prices, p.market_ts) == p.strategy_view(sid)
        assert p.strategy_view(sid)["portfolio_value"] == pytest.approx(p.value_of(sid))


def test_the_view_values_at_the_marks_it_is_given():
    run = Run(None)
    run.p.record_tick("BTC/USDT", 40_000.0, T0)
    run.p.commit([run.p.decide_spot(_buy(T0)).fill])
    held = run.p.books["mom"]
    (qty, cost), cash = (held.positions["BTC/USDT"].quantity, held.positions["BTC/USDT"].avg_price), held.cash
    view = book_view(held, "spot", {"BTC/USDT": 50_000.0}, T0)
    assert view["portfolio_value"] == pytest.approx(cash + qty * 50_000.0)
    assert view["positions"]["BTC/USDT"]["unrealized_pnl"] == pytest.approx(qty * (50_000.0 - cost))
    never_priced = book_view(held, "spot", {}, T0)  # at cost: worth the cash paid
    assert never_priced["portfolio_value"] == pytest.approx(cash + qty * cost)
    assert never_priced["positions"]["BTC/USDT"]["current_price"] is None


def test_the_drawdown_shown_is_taken_at_the_value_shown():
    p = new_portfolio()
    p.record_tick("BTC/USDT", 100.0, T0)
    p.commit([p.decide_spot(_buy(T0, 100.0)).fill])
    p.mark({"BTC/USDT": 100.0}, T0)
    held = p.books["mom"]
    value = book_view(held, "spot", {"BTC/USDT": 90.0}, T0)
    peak = held.risk.peak_value
    assert value["risk_state"]["peak_value"] == peak
    assert value["risk_state"]["drawdown_pct"] == pytest.approx((peak - value["portfolio_value"]) / peak * 100.0)
    assert value["risk_state"]["drawdown_pct"] > 5.0


def test_only_books_whose_record_changed_are_listed():
    p = new_portfolio()
    assert p.take_changed() == {"mom", "wheel", "vol"}  # created
    p.mark({"BTC/USDT": 100.0}, T0)
    assert p.take_changed() == set()
    p.record_tick("BTC/USDT", 100.0, T0 + 1)
    p.commit([p.decide_spot(_buy(T0 + 1, 100.0)).fill])
    assert p.take_changed() == {"mom"}
    p.mark({"BTC/USDT": 101.0}, T0 + 2)  # a new mark moves values, not records
    assert p.take_changed() == set()
    _, liquidations = p.mark({"BTC/USDT": 50.0}, T0 + 3)  # the kill switch trips: its flag travels
    assert p.books["mom"].risk.kill_switch and p.take_changed() == {"mom"}
    p.commit(liquidations)
    assert p.take_changed() == {"mom"}


def test_a_renamed_book_travels_as_removed_under_its_old_id():
    p = new_portfolio()
    p.take_changed()
    p._move_book("vol", "vol2")
    message = p.records_message(p.take_changed())
    assert (list(message["books"]), message["removed"]) == (["vol2"], ["vol"])
    assert message["books"]["vol2"]["strategy_id"] == "vol2"


def test_totals_equal_the_totals_of_the_views(tmp_path):
    p = run_every_kind_of_fill(Journal(tmp_path / "journal.jsonl")).p
    snapshot = p.snapshot()
    assert p.totals() == snapshot["totals"] == category_totals(snapshot["strategies"].values())
    assert p.totals()["total"]["value"] == pytest.approx(sum(p.value_of(sid) for sid in p.books))


def test_a_bad_record_names_its_key_path():
    p = new_portfolio()
    record = book_record(p.books["mom"], "spot")
    with pytest.raises(RecordError, match=r"books\.mom\.cash"):
        read_book_record({**record, "cash": "lots"}, "books.mom")
    with pytest.raises(RecordError, match=r"books\.mom\.category"):
        read_book_record({k: v for k, v in record.items() if k != "category"}, "books.mom")
    with pytest.raises(RecordError, match=r"books\.mom\.option_positions\.X"):
        read_book_record({**record, "option_positions": {"X": {"current_value_usd": 1.0}}}, "books.mom")


def _buy(ts: int, price: float = 40_000.0) -> SpotOrder:
    return SpotOrder(f"mom:{ts}", "mom", "BTC/USDT", 1, price, ts)
