"""Every metric against its formula, written out plainly on a small curve."""
from __future__ import annotations

import math

import numpy as np
import pytest

from backtest.metrics import (
    YEAR_MS,
    bar_returns,
    drawdown_curve,
    max_drawdown_duration,
    monthly_returns,
    objective_value,
    performance,
    round_trips,
    running_peak,
)
from common.model import Fill

DAY = 86_400_000
CAPITAL = 100.0
EQUITY = np.array([110.0, 99.0, 120.0, 90.0, 95.0, 121.0, 100.0])
CLOSE_TS = np.arange(1, EQUITY.size + 1, dtype=np.int64) * DAY  # daily bars from the epoch


def plain_returns() -> list[float]:
    previous = [CAPITAL, *EQUITY[:-1]]
    return [e / p - 1 for e, p in zip(EQUITY, previous)]


def test_returns_sharpe_and_sortino_follow_their_formulas():
    r = plain_returns()
    assert bar_returns(EQUITY, CAPITAL) == pytest.approx(r)
    n = len(r)
    mean = sum(r) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1))
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / n)
    m = performance(EQUITY, CLOSE_TS, DAY, CAPITAL, [], 0.0, np.zeros(n, bool), 0)
    assert m["sharpe"] == pytest.approx(mean / sd * math.sqrt(365))
    assert m["sortino"] == pytest.approx(mean / downside * math.sqrt(365))


def test_a_long_curves_ratios_are_numpys_std_and_mean_to_the_bit():
    """The one-pass-fewer arithmetic is numpy's own, not a rounding of it: on 100,000 returns,
    which numpy sums pairwise, the ratios equal std(ddof=1) and mean(minimum(r, 0) ** 2) exactly."""
    rng = np.random.default_rng(7)
    equity = CAPITAL * np.exp(np.cumsum(rng.normal(0.0, 0.01, 100_000)))
    r = equity / np.r_[CAPITAL, equity[:-1]] - 1.0
    assert np.array_equal(bar_returns(equity, CAPITAL), r)
    m = performance(equity, np.arange(1, r.size + 1, dtype=np.int64) * DAY, DAY, CAPITAL, [], 0.0,
                    np.zeros(r.size, bool), 0)
    assert m["sharpe"] == float(np.mean(r)) / float(np.std(r, ddof=1)) * math.sqrt(365)
    assert m["sortino"] == float(np.mean(r)) / math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) * math.sqrt(365)


def test_return_cagr_and_drawdown():
    m = performance(EQUITY, CLOSE_TS, DAY, CAPITAL, [], 0.0, np.zeros(EQUITY.size, bool), 0)
    assert m["total_return_pct"] == pytest.approx(0.0)
    assert m["final_equity"] == 100.0
    # Worst fall: from the 120 peak to 90.
    assert m["max_drawdown_pct"] == pytest.approx((120 - 90) / 120 * 100)
    assert m["return_over_max_dd"] == pytest.approx(0.0)
    years = 7 * DAY / YEAR_MS
    grown = performance(EQUITY * 1.5, CLOSE_TS, DAY, CAPITAL, [], 0.0, np.zeros(EQUITY.size, bool), 0)
    assert grown["cagr_pct"] == pytest.approx((1.5 ** (1 / years) - 1) * 100)
    assert m["start_ts"] == 0 and m["end_ts"] == 7 * DAY


def test_drawdown_duration_is_the_longest_stretch_below_a_peak():
    # Peaks: 110 (bar 0) recovered at bar 2 (120); 120 (bar 2) recovered at bar 5 (121): 3 days;
    # 121 (bar 5) never recovered, 1 day to the end.
    assert max_drawdown_duration(EQUITY, CLOSE_TS, CAPITAL, DAY) == (3, 3 * DAY)
    assert max_drawdown_duration(np.array([101.0, 102.0]), CLOSE_TS[:2], CAPITAL, DAY) == (0, 0)
    # Underwater from the capital at the first open to the end: 3 bars.
    assert max_drawdown_duration(np.array([90.0, 95.0, 99.0]), CLOSE_TS[:3], CAPITAL, DAY) == (3, 3 * DAY)


def test_the_running_peak_is_computed_once_and_shared():
    values, peak = running_peak(EQUITY, CAPITAL)
    assert values.tolist() == [100.0, 110.0, 99.0, 120.0, 90.0, 95.0, 121.0, 100.0]
    assert peak.tolist() == [100.0, 110.0, 110.0, 120.0, 120.0, 120.0, 121.0, 121.0]
    shared = drawdown_curve(EQUITY, CAPITAL, (values, peak))
    assert shared.tolist() == pytest.approx([0.0, 11 / 110, 0.0, 30 / 120, 25 / 120, 0.0, 21 / 121])
    assert np.array_equal(shared, drawdown_curve(EQUITY, CAPITAL))
    assert max_drawdown_duration(EQUITY, CLOSE_TS, CAPITAL, DAY, (values, peak)) == (3, 3 * DAY)


def test_trade_statistics():
    pnls = [10.0, -5.0, 20.0, -15.0, 0.0]
    m = performance(EQUITY, CLOSE_TS, DAY, CAPITAL, pnls, 3.5, np.array([1, 1, 0, 0, 1, 0, 0], bool), 10)
    assert m["trades"] == 5
    assert m["win_rate_pct"] == pytest.approx(2 / 5 * 100)
    assert m["profit_factor"] == pytest.approx(30 / 20)
    assert m["exposure_pct"] == pytest.approx(3 / 7 * 100)
    assert m["fees"] == 3.5 and m["fills"] == 10
    none = performance(EQUITY, CLOSE_TS, DAY, CAPITAL, [5.0], 0.0, np.zeros(7, bool), 1)
    assert none["profit_factor"] is None and none["win_rate_pct"] == 100.0


def test_flat_curve_has_no_ratios():
    flat = np.full(5, CAPITAL)
    m = performance(flat, CLOSE_TS[:5], DAY, CAPITAL, [], 0.0, np.zeros(5, bool), 0)
    assert m["sharpe"] is None and m["sortino"] is None and m["return_over_max_dd"] is None
    assert objective_value(m, "sharpe") == float("-inf")


def test_monthly_returns_chain_month_ends():
    jan31, feb28, mar1 = 1_675_123_200_000, 1_677_542_400_000, 1_677_628_800_000  # 2023, 00:00 UTC
    ts = np.array([jan31 - DAY, jan31 + DAY // 2, feb28, mar1], dtype=np.int64)  # Jan ends at 110
    equity = np.array([105.0, 110.0, 99.0, 103.95])
    assert monthly_returns(equity, ts, 100.0) == [
        (2023, 1, pytest.approx(10.0)), (2023, 2, pytest.approx(-10.0)), (2023, 3, pytest.approx(5.0))]


def _fill(side: str, pnl: float, seq: int, kind: str = "spot") -> Fill:
    return Fill(seq, f"o{seq}", "s", kind, "BTC/USDT", side, 2.0, 50.0, 0.1, -100.1 if side == "buy" else 99.9,
                pnl, seq * DAY)


def test_round_trips_pair_entries_with_exits():
    trips = round_trips([_fill("buy", 0.0, 1), _fill("sell", -0.2, 2), _fill("buy", 0.0, 3),
                         _fill("sell", 5.0, 4, "liquidation"), _fill("buy", 0.0, 5)])
    assert [t["exit_kind"] for t in trips] == ["spot", "liquidation", "open"]
    assert trips[0]["pnl"] == -0.2 and trips[0]["fees"] == pytest.approx(0.2)
    assert trips[0]["return_pct"] == pytest.approx(-0.2 / 100.1 * 100)
    assert trips[2]["exit_ts"] is None


def test_bad_input():
    with pytest.raises(ValueError, match="empty"):
        performance(np.array([]), np.array([], dtype=np.int64), DAY, CAPITAL, [], 0.0, np.array([], bool), 0)
    with pytest.raises(ValueError, match="objective"):
        objective_value({}, "calmar")
