"""A state.json written before option positions were records (main at ac2bc6d: 19-key dicts)
loads into OptionPosition records and saves back to exactly the same keys and values."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from common.model import RecordError
from options.contracts import OptionPosition
from trading.portfolio import Portfolio, StrategyMeta
from trading.risk import RiskLimits

FIXTURE = Path(__file__).parent / "fixtures" / "state_v1_options.json"
LIMITS = RiskLimits(max_drawdown_pct=50.0, max_position_pct=95.0, max_consecutive_losses=5,
                    circuit_breaker_ms=86_400_000, daily_loss_pct=50.0)
METAS = [StrategyMeta("mom", "spot", "spot", 1_000.0, LIMITS, "momentum"),
         StrategyMeta("vol", "options", "deribit", 50_000.0, LIMITS, "vol_mean_reversion")]
CALL, PUT = "BTC-30JAN26-95000-C", "BTC-4JAN26-85000-P"


def saved() -> dict:
    return json.loads(FIXTURE.read_text())


def loaded(state: dict) -> Portfolio:
    p = Portfolio(METAS, fee_rate=0.001, slippage_rate=0.0005)
    p.load_state(state)
    return p


def test_an_old_state_file_loads_into_records_and_saves_back_identical():
    state = saved()
    p = loaded(copy.deepcopy(state))
    call, put = (p.books["vol"].option_positions[name] for name in (CALL, PUT))
    assert isinstance(call, OptionPosition) and isinstance(put, OptionPosition)
    # 0.3 at 1,500 then 0.1 at 1,600: quantity-weighted entry; marked by the pricer at 1,650.5.
    assert (call.quantity, call.entry_premium, call.current_mark, call.mark_source) == (0.4, 1_525.0, 1_650.5, "pricer")
    assert call.value_usd == pytest.approx(0.4 * 1_650.5)
    assert call.unrealized_pnl == pytest.approx(0.4 * 1_650.5 - 0.4 * 1_526.525)  # fee 0.1% on each opening
    assert (put.quantity, put.open_cash_per_contract, put.score) == (-0.2, pytest.approx(699.3), 0.7)
    assert put.greeks == {"delta": -0.3} and put.marked_ts == put.entry_ts
    again = json.loads(json.dumps(p.to_state()))
    assert again == {k: v for k, v in state.items() if k != "version"}  # save_state stamps the version
    for name in (CALL, PUT):  # the same keys, in the same order, as the file
        assert list(again["strategies"]["vol"]["option_positions"][name]) == \
            list(state["strategies"]["vol"]["option_positions"][name])


def test_the_positions_reply_carries_the_same_position_dicts_as_the_state_file():
    state = saved()
    view = loaded(copy.deepcopy(state)).positions_view("vol", "BTC/USDT").to_dict()
    assert view["option_positions"] == list(state["strategies"]["vol"]["option_positions"].values())


@pytest.mark.parametrize("key", ["open_cash_per_contract", "current_mark", "marked_ts", "entry_ts", "quantity"])
def test_an_old_state_file_missing_a_position_field_is_refused_naming_it(key):
    state = saved()
    del state["strategies"]["vol"]["option_positions"][CALL][key]
    with pytest.raises(RecordError, match=rf"^state\.strategies\.vol\.option_positions\.{CALL}\.{key}: missing$"):
        loaded(state)
