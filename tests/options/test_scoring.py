"""Score parts by hand, the threshold, and the four-position cap."""
from datetime import datetime, timezone

import pytest

from common.timeframes import DAY_MS
from options.contracts import OptionContract, OptionPosition, ProposedTrade
from options.scoring import (
    CLOSE_SCORE,
    EXECUTE_THRESHOLD,
    MAX_POSITIONS,
    score_trade,
    select_trades,
    select_with_reasons,
)

E1 = int(datetime(2026, 12, 25, 8, tzinfo=timezone.utc).timestamp() * 1000)
E2 = E1 + 35 * DAY_MS
SPOT = 100_000.0


def contract(strike: float, is_call: bool, expiry: int = E1) -> OptionContract:
    return OptionContract("deribit", "BTC", expiry, strike, is_call, 1.0)


def trade(strike, is_call, side, delta, premium, expiry=E1, action="open", quantity=1.0, group=""):
    return ProposedTrade(action, contract(strike, is_call, expiry), side, quantity, premium,
                         {"delta": delta, "gamma": 0.0, "theta": 0.0, "vega": 0.0}, "test", group=group)


SHORT_PUT = OptionPosition(contract(90_000, False), -1.0, 1500.0, E1 - 40 * DAY_MS, {"delta": -0.3})  # +0.3 coins


def test_well_spread_balancing_sale_scores_all_plus_parts():
    s = score_trade(trade(105_000, True, -1, 0.25, 2000.0, expiry=E2), [SHORT_PUT], SPOT)
    # 15% from 90k: +0.4; new expiry: +0.3; net delta 0.3 -> 0.05: +0.2; premium 2% of spot sold: +0.02
    assert s.parts == pytest.approx({"strike_distance": 0.4, "expiry_spread": 0.3, "greek_balance": 0.2,
                                     "premium_efficiency": 0.02})
    assert s.total == pytest.approx(0.92)


def test_crowded_skewing_purchase_scores_negative():
    s = score_trade(trade(93_000, True, 1, 0.4, 5000.0), [SHORT_PUT], SPOT)
    # 3% from 90k: -0.3; same expiry: 0; net delta 0.3 -> 0.7: -0.3; 5% premium paid: -0.05
    assert s.parts == pytest.approx({"strike_distance": -0.3, "expiry_spread": 0.0, "greek_balance": -0.3,
                                     "premium_efficiency": -0.05})
    assert s.total == pytest.approx(-0.65)


def test_middle_distance_and_premium_cap():
    s = score_trade(trade(97_000, True, -1, 0.0, 20_000.0), [SHORT_PUT], SPOT)
    assert s.parts["strike_distance"] == 0.0  # 7%: between 5% and 10%
    assert s.parts["greek_balance"] == 0.0
    assert s.parts["premium_efficiency"] == 0.1  # 20% of spot, capped at 0.1


def test_first_trade_on_an_empty_book_passes():
    s = score_trade(trade(100_000, True, 1, 0.5, 3000.0), [], SPOT)
    assert s.total == pytest.approx(0.4 + 0.3 + 0.0 - 0.03)
    assert s.total >= EXECUTE_THRESHOLD
    [picked] = select_trades([trade(100_000, True, 1, 0.5, 3000.0)], [], SPOT)
    assert picked.score == pytest.approx(0.67)


def test_select_drops_low_scores_and_keeps_scores_on_trades():
    good = trade(105_000, True, -1, 0.25, 2000.0, expiry=E2)
    bad = trade(93_000, True, 1, 0.4, 5000.0)
    picked = select_trades([bad, good], [SHORT_PUT], SPOT)
    assert [t.contract.strike for t in picked] == [105_000]
    assert picked[0].score == pytest.approx(0.92)


def test_group_goes_in_whole_and_never_past_four_positions():
    book = [OptionPosition(contract(k, False, E1 + i * DAY_MS), -1.0, 100.0, 0, {"delta": 0.0})
            for i, k in enumerate((60_000, 70_000, 130_000))]
    strangle = [trade(80_000, False, -1, -0.2, 800.0, expiry=E2, group="strangle"),
                trade(120_000, True, -1, 0.2, 700.0, expiry=E2, group="strangle")]
    assert select_trades(strangle, book, SPOT) == []  # 3 + 2 > MAX_POSITIONS
    close = trade(60_000, False, 1, 0.0, 50.0, expiry=E1, action="close")
    picked = select_trades(strangle + [close], book, SPOT)
    assert [t.action for t in picked] == ["close", "open", "open"]
    assert picked[0].score == CLOSE_SCORE
    assert picked[1].score == picked[2].score  # one score for the structure
    assert len(book) - 1 + 2 == MAX_POSITIONS


def test_accepted_trades_join_the_book_for_later_proposals():
    first = trade(100_000, True, 1, 0.5, 3000.0)
    twin = trade(100_500, True, 1, 0.5, 3000.0, expiry=E2)
    picked = select_trades([first, twin], [], SPOT)
    # twin: 0.5% from the accepted first: -0.3, new expiry +0.3, skews delta -0.3, premium -0.03 -> -0.33
    assert [t.contract.strike for t in picked] == [100_000]


def test_bad_spot_raises():
    with pytest.raises(ValueError, match="spot"):
        score_trade(trade(100_000, True, 1, 0.5, 3000.0), [], 0.0)


def test_every_skipped_structure_says_why():
    book = [OptionPosition(contract(k, False, E1 + i * DAY_MS), -1.0, 100.0, 0, {"delta": 0.0})
            for i, k in enumerate((60_000, 70_000, 130_000))]
    strangle = [trade(80_000, False, -1, -0.2, 800.0, expiry=E2, group="strangle"),
                trade(120_000, True, -1, 0.2, 700.0, expiry=E2, group="strangle")]
    picked, skipped = select_with_reasons(strangle, book, SPOT)
    assert picked == [] and len(skipped) == 1
    assert skipped[0].startswith("position cap: open ") and "would hold 5 positions > max 4" in skipped[0]
    _, low = select_with_reasons([trade(93_000, True, 1, 0.4, 5000.0)], [SHORT_PUT], SPOT)
    assert low == [f"score below 0.3: open {contract(93_000, True).name} scores -0.650"]
