"""A daily implied-vol history (Deribit's DVOL index) and the IV rank over a window of it.

Rows are ``(ts, value)``: ``ts`` the int ms open of a UTC day, ``value`` that day's closing
vol as a decimal (DVOL 56.76 % is 0.5676). A day's value is known once the day has closed
(``ts + DAY_MS <= now_ts``); the history behind a decision holds only such days, so a replay
and a live run at the same market time rank against the same numbers.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from common.timeframes import DAY_MS
from options.marks import MarkSourceError
from options.vol_surface import iv_rank

DEFAULT_IV_RANK_DAYS = 365  # config options.iv_rank_days
IV_TARGET_DAYS = 30.0  # DVOL is a 30-day vol: the ATM vol it is ranked against is read at 30 days


class LiveIvUnavailable(MarkSourceError):
    """The live venue's implied vol cannot be read right now: no options trade may open on it."""


class IvHistoryError(ValueError):
    """A series that is not a daily vol history; the message names the first bad row."""


def check_daily_series(ts: ArrayLike, values: ArrayLike, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ts int64, values float64)`` after checking: same length, strictly increasing day
    opens, every value a finite number > 0."""
    t = np.asarray(ts, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or t.shape != v.shape:
        raise IvHistoryError(f"{where}: {t.size} timestamps for {v.size} values")
    bad = np.flatnonzero(~(np.isfinite(v) & (v > 0)))
    if bad.size:
        raise IvHistoryError(f"{where} row {int(bad[0])} (ts={int(t[bad[0]])}): vol must be a finite number > 0, "
                             f"got {v[bad[0]]!r}")
    step = np.flatnonzero(np.diff(t) <= 0)
    if step.size:
        i = int(step[0]) + 1
        raise IvHistoryError(f"{where} row {i}: timestamps must increase ({int(t[i - 1])} -> {int(t[i])})")
    return t, v


def merge_daily(old_ts: np.ndarray, old: np.ndarray, new_ts: np.ndarray,
                new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of two daily series by day, the new value winning a day both hold; ascending."""
    ts = np.concatenate([np.asarray(new_ts, dtype=np.int64), np.asarray(old_ts, dtype=np.int64)])
    values = np.concatenate([np.asarray(new, dtype=np.float64), np.asarray(old, dtype=np.float64)])
    keep_ts, first = np.unique(ts, return_index=True)  # first occurrence: the new series
    return keep_ts, values[first]


def completed(ts: np.ndarray, values: np.ndarray, now_ts: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose day has closed by ``now_ts``."""
    keep = np.asarray(ts) + DAY_MS <= now_ts
    return np.asarray(ts)[keep], np.asarray(values)[keep]


def history_window(ts: np.ndarray, values: np.ndarray, now_ts: int, days: int) -> np.ndarray:
    """Closing vols of the days that closed within the last ``days`` days before ``now_ts``,
    oldest first (at most ``days`` values; fewer where the series has gaps or starts later)."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise IvHistoryError(f"days: expected an integer >= 1, got {days!r}")
    close_ts = np.asarray(ts, dtype=np.int64) + DAY_MS
    keep = (close_ts <= now_ts) & (close_ts > now_ts - days * DAY_MS)
    return np.asarray(values, dtype=np.float64)[keep]


def rank_in_window(ts: np.ndarray, values: np.ndarray, now_ts: int, days: int, current: float) -> float:
    """IV rank (0..100) of ``current`` against the window's history, as the pricer answers it."""
    if not math.isfinite(current):
        raise IvHistoryError(f"current: expected a finite vol, got {current!r}")
    return iv_rank(history_window(ts, values, now_ts, days), current)
