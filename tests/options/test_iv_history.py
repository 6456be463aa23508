"""Daily implied-vol history: merging, the window behind a decision, and the IV rank."""
from __future__ import annotations

import numpy as np
import pytest

from options.iv_history import (
    IvHistoryError,
    check_daily_series,
    completed,
    history_window,
    merge_daily,
    rank_in_window,
)

DAY = 86_400_000
T0 = 1_700_006_400_000 - 1_700_006_400_000 % DAY


def days(n: int, first: int = 0) -> np.ndarray:
    return T0 + (first + np.arange(n, dtype=np.int64)) * DAY


def test_merge_keeps_every_day_once_and_the_new_value_wins():
    ts, v = merge_daily(days(3), np.array([0.5, 0.6, 0.7]), days(2, 2), np.array([0.9, 1.0]))
    assert ts.tolist() == days(4).tolist() and v.tolist() == [0.5, 0.6, 0.9, 1.0]


def test_window_holds_only_days_closed_within_it():
    ts, v = days(10), np.arange(1, 11) / 10
    now = T0 + 10 * DAY  # day 9 has just closed
    assert history_window(ts, v, now, 3).tolist() == [0.8, 0.9, 1.0]
    assert history_window(ts, v, now - 1, 3).tolist() == [0.7, 0.8, 0.9]  # day 9 still open
    assert completed(ts, v, now - 1)[0].size == 9
    assert history_window(ts, v, now, 365).size == 10


def test_rank_in_window_by_hand():
    ts, v = days(5), np.array([0.4, 0.8, 0.6, 0.5, 0.7])
    assert rank_in_window(ts, v, T0 + 5 * DAY, 4, 0.65) == pytest.approx((0.65 - 0.5) / (0.8 - 0.5) * 100)


@pytest.mark.parametrize("ts, values, message", [
    (days(2), [0.5, float("nan")], r"row 1 \(ts=.*\): vol must be a finite number > 0"),
    (days(2), [0.5, -0.1], "row 1"),
    (days(2)[::-1], [0.5, 0.6], "row 1: timestamps must increase"),
    (days(3), [0.5, 0.6], "3 timestamps for 2 values"),
])
def test_bad_series_are_refused_naming_the_row(ts, values, message):
    with pytest.raises(IvHistoryError, match=message):
        check_daily_series(ts, values, "dvol")


def test_bad_window_and_current_are_refused():
    with pytest.raises(IvHistoryError, match="days: expected an integer >= 1"):
        history_window(days(2), np.ones(2), T0, 0)
    with pytest.raises(IvHistoryError, match="current: expected a finite vol"):
        rank_in_window(days(2), np.ones(2), T0, 5, float("nan"))
