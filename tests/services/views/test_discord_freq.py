"""The seed's summary frequencies (pure) and the spot/options split of a summary."""
from __future__ import annotations

import pytest

from services.views.discord import cycle_summary, summary_due
from services.views.summary import cycle_log_fields
from tests.services.views.test_discord import FILL, known_status

HOUR = 3_600_000
DAY = 24 * HOUR


@pytest.mark.parametrize(("freq", "last", "now", "traded", "due"), [
    ("per_check", None, 5, True, True),
    ("per_check", 5, 5, True, True),
    ("per_check", None, 5, False, False),  # a cycle without trades of the group posts nothing
    ("hourly", None, 5, False, True),  # never posted: post now
    ("hourly", 2 * HOUR, 3 * HOUR - 1, True, False),  # same market hour
    ("hourly", 3 * HOUR - 1, 3 * HOUR, False, True),  # the first cycle of the next hour
    ("daily", DAY + 1, 2 * DAY - 1, True, False),
    ("daily", 2 * DAY - 1, 2 * DAY, False, True),  # UTC midnight in market time
    ("daily", DAY, DAY + 23 * HOUR, True, False),
])
def test_summary_due(freq, last, now, traded, due):
    assert summary_due(freq, last, now, traded) is due


def test_an_unknown_frequency_is_named():
    with pytest.raises(ValueError, match="expected per_check, hourly or daily, got 'weekly'"):
        summary_due("weekly", None, 0, True)


def test_a_group_summary_shows_its_categories_then_the_total():
    spot = cycle_summary(known_status(), [FILL], 12, group="spot")
    assert spot == """**go-trader** cycle 12 at 2026-01-01T00:00:00+00:00: spot
Spot: **$2,000.00 → $2,050.00** (+$50.00 / +2.50%)
• momentum-btc (+10.0%)
• rsi-eth (-5.0%)
Total: **$5,000.00 → $5,000.00** (+$0.00 / +0.00%)
Trades (1):
• momentum-btc: BUY 0.01 BTC/USDT @ $60,000.00 (fee $0.60)"""
    options = cycle_summary(known_status(), [], 12, group="options")
    assert options.splitlines()[1:] == [
        "Deribit: **$1,000.00 → $1,050.00** (+$50.00 / +5.00%)", "• deribit-vol-btc (+5.0%)",
        "IBKR: **$2,000.00 → $1,900.00** (-$100.00 / -5.00%)", "• ibkr-strangle-mbt (-5.0%)",
        "Total: **$5,000.00 → $5,000.00** (+$0.00 / +0.00%)"]


def test_the_cycle_log_fields_are_values_and_pnl_per_category_and_trades():
    totals = known_status()["totals"]
    assert cycle_log_fields(totals, 3) == {
        "spot_value": 2050.0, "spot_pnl": 50.0, "deribit_value": 1050.0, "deribit_pnl": 50.0,
        "ibkr_value": 1900.0, "ibkr_pnl": -100.0, "total_value": 5000.0, "total_pnl": 0.0, "trades": 3}
    assert cycle_log_fields(None, 0) == {"trades": 0}  # no snapshot yet
    assert cycle_log_fields({"spot": {"value": 1.234}}, 1) == {"trades": 1}  # a partial bucket is left out
