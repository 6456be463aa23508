"""Portfolio with option books: option orders commit, marks value them, expiry settles them."""
import pytest

from options.contracts import OptionContract
from options.venues import DERIBIT
from trading.option_book import OptionLeg, OptionOrder
from trading.portfolio import Portfolio, StrategyMeta
from trading.risk import RiskLimits

TS = 1_767_225_600_000
EXPIRY = DERIBIT.listed_expiries(TS, 40)[-1]
LIMITS = RiskLimits(max_drawdown_pct=50.0, max_position_pct=95.0, max_consecutive_losses=5,
                    circuit_breaker_ms=86_400_000, daily_loss_pct=50.0)
PUT = OptionContract("deribit", "BTC", EXPIRY, 85_000.0, False, 1.0)


def portfolio() -> Portfolio:
    p = Portfolio([StrategyMeta("w", "options", "deribit", 50_000.0, LIMITS, "wheel")], fee_rate=0.0,
                  slippage_rate=0.0)
    p.reconcile(TS)
    p.mark({"BTC/USDT": 90_000.0}, TS)
    return p


def sell_put(p: Portfolio) -> None:
    leg = OptionLeg(PUT, -1, 0.1, 2_000.0, {"delta": -0.3}, 0.7, "wheel", "open")
    decision = p.decide_options(OptionOrder("w:1:open", "w", TS, 90_000.0, (leg,)))
    assert decision.status == "filled" and decision.fills[0].seq == p.journal_seq + 1
    p.commit(decision.fills)


def test_option_fills_move_cash_and_positions_and_marks_move_value():
    p = portfolio()
    sell_put(p)
    assert p.books["w"].cash == 50_200.0 and p.value_of("w") == pytest.approx(50_000.0)
    p.mark_options({PUT.name: {"mark_usd": 1_500.0, "delta": -0.25, "source": "sim"}}, TS + 1)
    view = p.strategy_view("w")
    assert view["option_value"] == -150.0 and view["portfolio_value"] == pytest.approx(50_050.0)
    assert view["option_positions"][PUT.name]["current_value_usd"] == -150.0
    assert p.open_option_contracts() == [PUT.to_dict()]


def test_expired_wheel_put_is_assigned_on_the_first_mark_after_expiry():
    p = portfolio()
    sell_put(p)
    events, fills = p.mark({"BTC/USDT": 80_000.0}, EXPIRY - 1)
    assert fills == []
    events, fills = p.mark({"BTC/USDT": 80_000.0}, EXPIRY + 60_000)
    assert [(f.kind, f.seq) for f in fills] == [("settlement", 2), ("spot", 3)]
    p.commit(fills)
    book = p.books["w"]
    assert book.option_positions == {} and book.positions["BTC/USDT"].avg_price == 85_000.0
    assert book.cash == pytest.approx(50_200.0 - 8_500.0)
    assert p.value_of("w") == pytest.approx(50_200.0 - 8_500.0 + 0.1 * 80_000.0)
    assert p.mark({"BTC/USDT": 80_000.0}, EXPIRY + 120_000)[1] == []  # settled once


def test_a_late_mark_settles_at_the_price_of_the_expiry_not_its_own():
    """Marks wait out close bursts: the first after an expiry can come hours of market time
    later. The put was in the money at the expiry (84,000) and is out of it at the mark (86,000):
    it is assigned, at the expiry's price."""
    p = portfolio()
    sell_put(p)
    assert p.record_tick("BTC/USDT", 84_000.0, EXPIRY - 30_000)
    assert p.record_tick("BTC/USDT", 84_500.0, EXPIRY + 3 * 60_000)
    _, fills = p.mark({"BTC/USDT": 86_000.0}, EXPIRY + 5 * 3_600_000)
    settlement, delivery = fills
    assert (settlement.price, settlement.extra["settle_spot"], settlement.extra["settle_spot_ts"]) == \
        (1_000.0, 84_000.0, EXPIRY - 30_000)
    assert settlement.ts_event == EXPIRY + 5 * 3_600_000
    assert (delivery.side, delivery.quantity, delivery.price) == ("buy", pytest.approx(0.1), 85_000.0)
