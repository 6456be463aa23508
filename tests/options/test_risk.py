"""Options risk limits: drawdown, net delta and net vega per portfolio value."""
import pytest

from options.contracts import OptionContract, OptionPosition, ProposedTrade
from options.risk import OptionsRiskError, OptionsRiskLimits, check_options_trade

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
