"""Options risk limits: drawdown, net delta and net vega per portfolio value."""
import pytest

from options.contracts import OptionContract, OptionPosition, ProposedTrade
from options.risk import OptionsRiskError, OptionsRiskLimits, check_options_trade, max_quantity

EXPIRY = 1_798_185_600_000
CALL = OptionContract("deribit", "BTC", EXPIRY, 100_000.0, True, 1.0)
LONG = OptionPosition(CALL, 0.5, 4000.0, 0, {"delta": 0.6, "vega": 100.0})  # 0.3 coins delta, 50 USD vega


def trade(side: int, quantity: float, delta: float, vega: float, action: str = "open") -> ProposedTrade:
    return ProposedTrade(action, CALL, side, quantity, 4000.0, {"delta": delta, "vega": vega}, "test")


def test_delta_limit_blocks_growth_but_not_reduction():
    ok, reason = check_options_trade(OptionsRiskLimits(), [LONG], trade(1, 1.0, 0.8, 0.0), 100_000.0, spot=100_000.0)
    assert not ok and reason == "risk limit: net delta would be 1.100 x value > limit 1"  # (0.3 + 0.8) * 100k / 100k
    assert check_options_trade(OptionsRiskLimits(), [LONG], trade(1, 0.5, 0.8, 0.0), 100_000.0, spot=100_000.0)[0]
    over = OptionsRiskLimits(max_delta_ratio=0.1)
    assert check_options_trade(over, [LONG], trade(-1, 0.1, 0.6, 0.0), 100_000.0, spot=100_000.0)[0]


def test_vega_limit():
    ok, reason = check_options_trade(OptionsRiskLimits(), [LONG], trade(1, 20.0, 0.0, 100.0), 100_000.0, spot=100_000.0)
    assert not ok and "net vega would be 0.021" in reason  # (50 + 2000) / 100k
    assert check_options_trade(OptionsRiskLimits(), [LONG], trade(1, 19.0, 0.0, 100.0), 100_000.0, spot=100_000.0)[0]


def test_drawdown_blocks_opens_but_never_closes():
    limits = OptionsRiskLimits()
    ok, reason = check_options_trade(limits, [], trade(1, 0.1, 0.5, 10.0), 100_000.0, spot=100_000.0,
                                     peak_value=130_000.0)
    assert not ok and reason.startswith("risk limit: drawdown 23.1% >= 20%")
    assert check_options_trade(limits, [LONG], trade(-1, 0.5, 0.6, 100.0, "close"), 100_000.0, spot=100_000.0,
                               peak_value=130_000.0) == (True, "close: reduces risk")


def test_bad_limits_and_inputs_raise():
    with pytest.raises(OptionsRiskError, match=r"limits\.max_drawdown_pct: must be a finite number > 0"):
        OptionsRiskLimits(max_drawdown_pct=-5.0)
    with pytest.raises(OptionsRiskError, match=r"limits\.max_vega: unknown key"):
        OptionsRiskLimits.from_dict({"max_vega": 0.1})
    assert OptionsRiskLimits.from_dict({"max_vega_ratio": 0.05}).max_vega_ratio == 0.05
    with pytest.raises(OptionsRiskError, match="spot"):
        check_options_trade(OptionsRiskLimits(), [], trade(1, 0.1, 0.5, 1.0), 100_000.0, spot=float("nan"))


# max_quantity: the check solved for size. Value 100k, spot 100k: the delta limit is 1 coin of
# net delta, the vega limit 2,000 USD per vol point.
def test_max_quantity_is_the_delta_bound_on_an_empty_book():
    size = max_quantity(OptionsRiskLimits(), [], {"delta": 0.5, "vega": 500.0}, 100_000.0, spot=100_000.0)
    assert size.greek == "delta" and size.quantity == pytest.approx(2.0)  # 1 coin / 0.5; vega allows 4


def test_max_quantity_lets_a_trade_cross_an_opposite_book():
    short = OptionPosition(CALL, -1.0, 4000.0, 0, {"delta": 0.6, "vega": 0.0})  # -0.6 coins
    size = max_quantity(OptionsRiskLimits(), [short], {"delta": 0.5}, 100_000.0, spot=100_000.0)
    assert size.quantity == pytest.approx((1.0 + 0.6) / 0.5)  # 3.2: from -0.6 up to +1


def test_max_quantity_vega_binds_and_the_check_agrees_at_the_bound():
    limits = OptionsRiskLimits()
    size = max_quantity(limits, [LONG], {"delta": 0.1, "vega": 1500.0}, 100_000.0, spot=100_000.0)
    assert size.greek == "vega" and size.quantity == pytest.approx((2000.0 - 50.0) / 1500.0)  # 1.3
    at = ProposedTrade("open", CALL, 1, size.quantity, 4000.0, {"delta": 0.1, "vega": 1500.0}, "t")
    over = ProposedTrade("open", CALL, 1, size.quantity * 1.01, 4000.0, {"delta": 0.1, "vega": 1500.0}, "t")
    assert check_options_trade(limits, [LONG], at, 100_000.0, spot=100_000.0)[0]
    assert not check_options_trade(limits, [LONG], over, 100_000.0, spot=100_000.0)[0]


def test_coins_held_count_one_delta_each_in_sizing_and_check():
    size = max_quantity(OptionsRiskLimits(), [], {"delta": 0.5}, 100_000.0, spot=100_000.0, spot_coins=0.8)
    assert size.quantity == pytest.approx((1.0 - 0.8) / 0.5)  # 0.4
    buy_write = ProposedTrade("open", CALL, -1, 1.0, 4000.0, {"delta": 0.3}, "t", spot_coins=1.0)  # +0.7 coins
    ok, reason = check_options_trade(OptionsRiskLimits(), [], buy_write, 100_000.0, spot=100_000.0, spot_coins=0.5)
    assert not ok and reason == "risk limit: net delta would be 1.200 x value > limit 1"


def test_max_quantity_is_zero_without_value():
    assert max_quantity(OptionsRiskLimits(), [], {"delta": 0.5}, 0.0, spot=100_000.0).quantity == 0.0
