import json

import numpy as np
import pytest

from common.model import Fill, RecordError, SpotOrder
from common.state_store import Journal, load_state, save_state
from trading.ledger import (
    RECENT_ORDER_IDS,
    RECENT_TRADES,
    MissingPriceError,
    apply_fill,
    book_from_dict,
    book_to_dict,
    decide_spot_order,
    liquidation_orders,
    new_book,
    portfolio_value,
    rebuild_books_from_journal,
    record_no_fill,
)
from trading.risk import RiskLimits, update_on_mark, update_on_trade_closed

T0 = 1_767_225_600_000
LIMITS = RiskLimits()
COSTS = {"fee_rate": 0.001, "slippage_rate": 0.0, "max_position_pct": 95.0, "risk_limits": LIMITS}


def order(signal: int, price: float, ts: int = T0, sid: str = "mom", symbol: str = "BTC/USDT", oid: str | None = None):
    return SpotOrder(oid or f"{sid}:{ts}", sid, symbol, signal, price, ts)


def decide(book, o, seq=1, **overrides):
    return decide_spot_order(book, o, seq=seq, **{**COSTS, **overrides})


def test_buy_then_sell_with_hand_computed_fee_honest_numbers():
    book = new_book("mom", "spot", 1000.0, T0)
    decision = decide(book, order(1, 50_000.0), seq=7)
    assert (decision.status, decision.reason) == ("filled", "entry")
    buy = decision.fill
    # notional = min(1000, 95% of 1000) = 950; quantity = 950 / (50000 * 1.001) = 19/1001
    assert buy.quantity == pytest.approx(19 / 1001, rel=1e-15)
    assert buy.price == 50_000.0
    assert buy.fee == pytest.approx(950 - 19 / 1001 * 50_000, rel=1e-12)  # 0.949050949...
    assert buy.fee == pytest.approx(0.9490509490509, rel=1e-12)
    assert (buy.cash_delta, buy.realized_pnl, buy.seq, buy.kind, buy.side) == (-950.0, 0.0, 7, "spot", "buy")
    assert book.cash == 1000.0  # decide does not mutate
    apply_fill(book, buy)
    assert book.cash == 50.0
    position = book.positions["BTC/USDT"]
    assert position.avg_price == pytest.approx(50_050.0, rel=1e-15)  # fee-inclusive cost per unit
    assert position.opened_ts == T0

    sell = decide(book, order(-1, 55_000.0, ts=T0 + 1), seq=8).fill
    # proceeds = 19/1001 * 55000 * 0.999 = 1043955/1001; cost = 950
    assert sell.quantity == buy.quantity
    assert sell.fee == pytest.approx(1045000 / 1001 * 0.001, rel=1e-12)
    assert sell.cash_delta == pytest.approx(1043955 / 1001, rel=1e-12)
    assert sell.realized_pnl == pytest.approx(93005 / 1001, rel=1e-12)  # 92.912087912...
    apply_fill(book, sell)
    assert book.cash == pytest.approx(1094005 / 1001, rel=1e-12)  # 1092.912087912...
    assert book.positions == {}
    # Fee-honest: the realized P&L of the round trip is exactly its change in cash.
    assert sell.realized_pnl == pytest.approx(book.cash - 1000.0, rel=1e-12)
    assert book.trade_count == 2
    assert book.recent_order_ids == {f"mom:{T0}": 7, f"mom:{T0 + 1}": 8}


def test_slippage_moves_both_prices_against_the_trader():
    book = new_book("mom", "spot", 1000.0, T0)
    buy = decide(book, order(1, 50_000.0), slippage_rate=0.0005).fill
    assert buy.price == pytest.approx(50_025.0)
    assert buy.quantity == pytest.approx(950 / (50_025 * 1.001), rel=1e-14)
    apply_fill(book, buy)
    sell = decide(book, order(-1, 50_000.0, ts=T0 + 1), seq=2, slippage_rate=0.0005).fill
    assert sell.price == pytest.approx(49_975.0)
    expected_proceeds = 950 / (50_025 * 1.001) * 49_975 * 0.999
    assert sell.realized_pnl == pytest.approx(expected_proceeds - 950, rel=1e-12)
    assert sell.realized_pnl < 0


def test_buy_size_is_capped_by_risk_limits_position_pct_and_by_cash():
    book = new_book("mom", "spot", 1000.0, T0)
    fill = decide(book, order(1, 100.0), max_position_pct=100.0, risk_limits=RiskLimits(max_position_pct=50.0)).fill
    assert fill.cash_delta == -500.0
    apply_fill(book, fill)
    # Book value at cost is 1000; 95% = 950 but only 500 cash is left.
    fill = decide(book, order(1, 10.0, ts=T0 + 1, symbol="ETH/USDT"), seq=2, max_position_pct=95.0).fill
    assert fill.cash_delta == -500.0
    apply_fill(book, fill)
    assert book.cash == 0.0


def test_noop_duplicate_and_insufficient_cash():
    book = new_book("mom", "spot", 1000.0, T0)
    assert decide(book, order(-1, 100.0)).status == "noop"
    assert decide(book, order(-1, 100.0)).reason == "no position"
    buy = decide(book, order(1, 100.0)).fill
    apply_fill(book, buy)
    dup = decide(book, order(1, 100.0))
    assert (dup.status, dup.fill) == ("duplicate", None)
    assert dup.reason == f"order mom:{T0} already filled as seq 1"
    long_again = decide(book, order(1, 100.0, ts=T0 + 1), seq=2)
    assert (long_again.status, long_again.reason) == ("noop", "already long")
    record_no_fill(book, f"mom:{T0 + 1}")
    retry = decide(book, order(1, 100.0, ts=T0 + 1), seq=2)
    assert (retry.status, retry.reason) == ("duplicate", f"order mom:{T0 + 1} already answered without a fill")

    poor = new_book("poor", "spot", 1000.0, T0)
    poor.cash = 0.99
    result = decide(poor, order(1, 100.0, sid="poor"))
    assert (result.status, result.reason, result.fill) == ("rejected", "insufficient cash", None)


def test_entries_rejected_but_exits_allowed_while_kill_switch_is_on():
    book = new_book("mom", "spot", 1000.0, T0)
    apply_fill(book, decide(book, order(1, 100.0)).fill)
    events = update_on_mark(book.risk, LIMITS, portfolio_value(book, {"BTC/USDT": 35.0}), T0 + 1)
    assert book.risk.kill_switch and events
    rejected = decide(book, order(1, 35.0, ts=T0 + 2, symbol="ETH/USDT"), seq=2)
    assert rejected.status == "rejected"
    assert rejected.reason.startswith("kill switch: drawdown")
    exit_ = decide(book, order(-1, 35.0, ts=T0 + 2), seq=2)
    assert exit_.status == "filled"
    apply_fill(book, exit_.fill)
    assert book.positions == {}


def test_entries_rejected_during_circuit_breaker():
    book = new_book("mom", "spot", 1000.0, T0)
    for i in range(LIMITS.max_consecutive_losses):
        update_on_trade_closed(book.risk, LIMITS, -1.0, T0)
    result = decide(book, order(1, 100.0, ts=T0 + 5))
    assert result.status == "rejected"
    assert result.reason == "circuit breaker until 2026-01-02T00:00:00+00:00"
    assert decide(book, order(1, 100.0, ts=T0 + LIMITS.circuit_breaker_ms)).status == "filled"


def test_liquidation_closes_every_position_at_the_mark_with_fees():
    book = new_book("mom", "spot", 1000.0, T0)
    apply_fill(book, decide(book, order(1, 100.0), max_position_pct=50.0, fee_rate=0.0).fill)
    apply_fill(book, decide(book, order(1, 10.0, symbol="ETH/USDT", ts=T0 + 1), seq=2, max_position_pct=50.0,
                            fee_rate=0.0).fill)
    prices = {"BTC/USDT": 80.0, "ETH/USDT": 12.0}
    fills = liquidation_orders(book, prices, T0 + 9, fee_rate=0.001, slippage_rate=0.0, first_seq=3)
    assert [(f.instrument, f.seq, f.kind, f.side, f.order_id) for f in fills] == [
        ("BTC/USDT", 3, "liquidation", "sell", f"mom:liquidate:{T0 + 9}:BTC/USDT"),
        ("ETH/USDT", 4, "liquidation", "sell", f"mom:liquidate:{T0 + 9}:ETH/USDT"),
    ]
    # BTC: 5 units bought for 500 sold at 80 less 0.1%: 399.6 - 500
    assert fills[0].realized_pnl == pytest.approx(5 * 80 * 0.999 - 500)
    assert fills[1].realized_pnl == pytest.approx(50 * 12 * 0.999 - 500)
    for f in fills:
        apply_fill(book, f)
    assert book.positions == {}
    assert book.cash == pytest.approx(399.6 + 599.4)
    with pytest.raises(MissingPriceError, match="ETH/USDT"):
        liquidation_orders(new_book_with(book_symbol="ETH/USDT"), {}, T0, fee_rate=0.0, slippage_rate=0.0, first_seq=1)


def new_book_with(book_symbol: str):
    book = new_book("mom", "spot", 1000.0, T0)
    apply_fill(book, decide(book, order(1, 10.0, symbol=book_symbol)).fill)
    return book


def test_portfolio_value():
    book = new_book("mom", "spot", 1000.0, T0)
    apply_fill(book, decide(book, order(1, 100.0), fee_rate=0.0, max_position_pct=50.0).fill)
    assert portfolio_value(book, {"BTC/USDT": 120.0}) == pytest.approx(500 + 5 * 120)
    assert portfolio_value(book, {"BTC/USDT": 120.0}, option_value=-30.0) == pytest.approx(1070.0)
    with pytest.raises(MissingPriceError, match="no usable price for held BTC/USDT"):
        portfolio_value(book, {"BTC/USDT": float("nan")})


def test_bad_orders_raise():
    book = new_book("mom", "spot", 1000.0, T0)
    with pytest.raises(ValueError, match="does not match book 'mom'"):
        decide(book, order(1, 100.0, sid="other"))
    with pytest.raises(ValueError, match="price must be"):
        decide(book, order(1, float("nan")))
    with pytest.raises(ValueError, match="signal must be"):
        decide(book, order(0, 100.0))
    with pytest.raises(ValueError, match="fee_rate"):
        decide(book, order(1, 100.0), fee_rate=-0.1)
    with pytest.raises(ValueError, match="max_position_pct"):
        decide(book, order(1, 100.0), max_position_pct=0.0)
    with pytest.raises(ValueError, match="seq"):
        decide(book, order(1, 100.0), seq=0)
    with pytest.raises(ValueError, match="options book"):
        decide(new_book("opt", "options", 1000.0, T0), order(1, 100.0, sid="opt"))
    with pytest.raises(ValueError, match="kind"):
        new_book("x", "futures", 1000.0, T0)
    with pytest.raises(ValueError, match="capital"):
        new_book("x", "spot", 0.0, T0)


def test_apply_fill_refuses_impossible_fills():
    book = new_book("mom", "spot", 1000.0, T0)
    sell = Fill(1, "o", "mom", "spot", "BTC/USDT", "sell", 1.0, 10.0, 0.0, 10.0, 0.0, T0)
    with pytest.raises(ValueError, match="holds none"):
        apply_fill(book, sell)
    with pytest.raises(ValueError, match="does not match book"):
        apply_fill(new_book("other", "spot", 1000.0, T0), sell)


def test_option_fills_move_cash_and_bookkeeping_only():
    book = new_book("opt", "options", 1000.0, T0)
    fill = Fill(1, "opt:1", "opt", "option", "BTC-25DEC26-78000-C", "sell", 1.0, 120.0, 0.3, 119.7, 0.0, T0,
                {"contracts": -1})
    apply_fill(book, fill)
    assert (book.cash, book.positions, book.option_positions, book.trade_count) == (1119.7, {}, {}, 1)
    assert book.recent_trades[-1]["extra"] == {"contracts": -1}


def test_recent_trades_and_order_ids_are_bounded_lru():
    book = new_book("mom", "spot", 1e9, T0)
    for i in range(300):
        record_no_fill(book, f"noop:{i}")
    assert list(book.recent_order_ids)[0] == "noop:44"  # the oldest of the last 256
    record_no_fill(book, "noop:44")  # touched again: becomes the youngest
    record_no_fill(book, "noop:300")
    assert len(book.recent_order_ids) == RECENT_ORDER_IDS
    assert "noop:44" in book.recent_order_ids and "noop:45" not in book.recent_order_ids
    assert list(book.recent_order_ids)[-2:] == ["noop:44", "noop:300"]
    for i in range(60):
        o = order(1 if i % 2 == 0 else -1, 100.0, ts=T0 + i)
        apply_fill(book, decide(book, o, seq=i + 1).fill)
    assert len(book.recent_trades) == RECENT_TRADES
    assert [t["seq"] for t in book.recent_trades] == list(range(11, 61))
    assert book.trade_count == 60


def test_book_dict_round_trip_is_exact_through_json():
    book = new_book("mom", "spot", 1000.0, T0)
    apply_fill(book, decide(book, order(1, 50_000.0)).fill)
    record_no_fill(book, "mom:x")
    book.option_positions["BTC-25DEC26-78000-C"] = {"contracts": -1.0, "entry": 120.0}
    update_on_mark(book.risk, LIMITS, 990.0, T0 + 1)
    d = json.loads(json.dumps(book_to_dict(book)))
    assert book_from_dict(d, "strategies.mom") == book


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(cash="x"), r'^strategies\.mom\.cash: expected a number, got "x"$'),
        (lambda d: d.update(cash=None), r"^strategies\.mom\.cash: expected a number, got null$"),
        (lambda d: d.pop("trade_count"), r"^strategies\.mom\.trade_count: missing$"),
        (lambda d: d.update(kind="perp"), r"^strategies\.mom\.kind: must be one of"),
        (lambda d: d["positions"]["BTC/USDT"].update(quantity=-1.0),
         r"^strategies\.mom\.positions\.BTC/USDT\.quantity: must be > 0"),
        (lambda d: d["positions"]["BTC/USDT"].update(symbol="ETH/USDT"),
         r"^strategies\.mom\.positions\.BTC/USDT\.symbol: 'ETH/USDT' does not match its key"),
        (lambda d: d["risk"].update(kill_switch="no"),
         r'^strategies\.mom\.risk\.kill_switch: expected true or false, got "no"$'),
        (lambda d: d["recent_trades"][0].update(fee="1"), r"^strategies\.mom\.recent_trades\[0\]\.fee"),
        (lambda d: d["recent_order_ids"].update({"a": "b"}),
         r'^strategies\.mom\.recent_order_ids\.a: expected an integer, got "b"$'),
        (lambda d: d.update(recent_trades={}), r"^strategies\.mom\.recent_trades: expected a list"),
        (lambda d: d.update(option_positions={"C": 3}), r"^strategies\.mom\.option_positions\.C: expected an object"),
    ],
)
def test_book_from_dict_names_the_bad_field(mutate, message):
    book = new_book("mom", "spot", 1000.0, T0)
    apply_fill(book, decide(book, order(1, 50_000.0)).fill)
    d = json.loads(json.dumps(book_to_dict(book)))
    mutate(d)
    with pytest.raises(RecordError, match=message):
        book_from_dict(d, "strategies.mom")


def test_journal_alone_rebuilds_the_books_after_500_random_orders(tmp_path):
    """The chaos test's promise in miniature: state.json and the journal always agree."""
    rng = np.random.default_rng(20260101)
    limits = RiskLimits(max_drawdown_pct=30.0, max_consecutive_losses=3, circuit_breaker_ms=6 * 3_600_000)
    initial = {"mom": ("spot", 1000.0, T0), "rsi": ("spot", 5000.0, T0), "pairs": ("spot", 250.0, T0)}
    books = {sid: new_book(sid, kind, cap, ts) for sid, (kind, cap, ts) in initial.items()}
    prices = {"BTC/USDT": 50_000.0, "ETH/USDT": 3_000.0}
    journal = Journal(tmp_path / "fills.jsonl")
    seq = journal.last_seq
    statuses = set()
    for i in range(500):
        ts = T0 + i * 900_000
        for symbol in prices:
            prices[symbol] *= float(np.exp(rng.normal(0.0, 0.02)))
        sid = list(books)[int(rng.integers(len(books)))]
        book = books[sid]
        symbol = list(prices)[int(rng.integers(len(prices)))]
        # Now and then resend an earlier order, as a retrying engine would.
        bar_ts = ts - 900_000 if rng.random() < 0.1 else ts
        o = SpotOrder(f"{sid}:{bar_ts}:{symbol}", sid, symbol, int(rng.choice([1, -1])), prices[symbol], ts)
        decision = decide_spot_order(book, o, fee_rate=0.001, slippage_rate=0.0005, max_position_pct=95.0,
                                     risk_limits=limits, seq=seq + 1)
        statuses.add(decision.status)
        fills = [decision.fill] if decision.fill else []
        if not fills and decision.status != "duplicate":
            record_no_fill(book, o.order_id)
        for fill in fills:
            journal.append([fill.to_dict()])
            apply_fill(book, fill)
            seq = fill.seq
            if fill.realized_pnl:
                update_on_trade_closed(book.risk, limits, fill.realized_pnl, ts)
        update_on_mark(book.risk, limits, portfolio_value(book, prices), ts)
        if book.risk.kill_switch and book.positions:
            liquidation = liquidation_orders(book, prices, ts, fee_rate=0.001, slippage_rate=0.0005, first_seq=seq + 1)
            journal.append([f.to_dict() for f in liquidation])
            for fill in liquidation:
                apply_fill(book, fill)
            seq += len(liquidation)
    assert statuses == {"filled", "noop", "duplicate", "rejected"}
    assert any(b.risk.kill_switch for b in books.values())
    journal.close()

    save_state(tmp_path / "state.json", {"strategies": {sid: book_to_dict(b) for sid, b in books.items()}})
    saved = load_state(tmp_path / "state.json")
    from_state = {sid: book_from_dict(d, f"strategies.{sid}") for sid, d in saved["strategies"].items()}
    with Journal(tmp_path / "fills.jsonl") as reopened:
        assert reopened.last_seq == seq
        fills = [Fill.from_dict(r, f"journal[{r['seq']}]") for r in reopened.read()]
    rebuilt = rebuild_books_from_journal(fills, initial)
    assert sum(b.trade_count for b in rebuilt.values()) == seq > 100
    for sid, live in books.items():
        for other in (from_state[sid], rebuilt[sid]):
            assert other.cash == live.cash
            assert other.positions == live.positions
            assert other.trade_count == live.trade_count
            assert other.recent_trades == live.recent_trades
        assert from_state[sid] == live
        assert live.cash >= 0


def test_rebuild_rejects_a_fill_for_an_unknown_strategy():
    fill = Fill(1, "o", "ghost", "spot", "BTC/USDT", "buy", 1.0, 10.0, 0.0, -10.0, 0.0, T0)
    with pytest.raises(ValueError, match="journal fill seq 1: unknown strategy 'ghost'"):
        rebuild_books_from_journal([fill], {"mom": ("spot", 1000.0, T0)})
