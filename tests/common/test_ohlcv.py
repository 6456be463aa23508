"""OHLCV.validate: sound bars pass whole; each kind of bad bar is named at its first index."""
from __future__ import annotations

import numpy as np
import pytest

from common.ohlcv import OHLCV, BadBarError

HOUR = 3_600_000


def bars(n: int = 6) -> OHLCV:
    close = 100.0 + np.arange(n, dtype=np.float64)
    open_ = close - 0.5
    return OHLCV(np.arange(n, dtype=np.int64) * HOUR, open_, close + 1.0, open_ - 1.0, close, np.ones(n))


def test_sound_bars_are_returned_unchanged() -> None:
    data = bars()
    assert data.validate() is data
    assert OHLCV.empty().validate() is not None


@pytest.mark.parametrize(("column", "index", "value", "message"), [
    ("close", 3, np.nan, r"bars\[3\] \(ts=10800000\): close is not a finite number"),
    ("high", 2, np.inf, r"bars\[2\] \(ts=7200000\): high is not a finite number"),
    ("low", 4, -np.inf, r"bars\[4\] \(ts=14400000\): low is not a finite number"),
    ("volume", 1, np.nan, r"bars\[1\] \(ts=3600000\): volume is not a finite number"),
    ("volume", 5, np.inf, r"bars\[5\] \(ts=18000000\): volume is not a finite number"),
    ("open", 0, 0.0, r"bars\[0\] \(ts=0\): open must be > 0, got 0.0"),
    ("low", 2, -1.0, r"bars\[2\] \(ts=7200000\): low must be > 0, got -1.0"),
    ("volume", 3, -2.0, r"bars\[3\] \(ts=10800000\): volume must be >= 0, got -2.0"),
    ("high", 1, 100.8, r"bars\[1\] \(ts=3600000\): high/low do not contain open/close"),
    ("low", 4, 104.0, r"bars\[4\] \(ts=14400000\): high/low do not contain open/close"),
])
def test_a_bad_value_is_named_at_its_bar(column: str, index: int, value: float, message: str) -> None:
    data = bars()
    getattr(data, column)[index] = value
    with pytest.raises(BadBarError, match=message):
        data.validate()


def test_the_first_of_several_bad_bars_is_named() -> None:
    data = bars()
    data.close[4] = np.nan
    data.open[2] = -3.0
    with pytest.raises(BadBarError, match=r"bars\[4\].*close is not a finite number"):
        data.validate()  # finiteness is checked before sign, as before the fast path


@pytest.mark.parametrize("ts", [[0, HOUR, HOUR, 3 * HOUR], [0, 2 * HOUR, HOUR, 3 * HOUR]])
def test_timestamps_must_strictly_increase(ts: list[int]) -> None:
    data = bars(4)
    data = OHLCV(np.asarray(ts, dtype=np.int64), data.open, data.high, data.low, data.close, data.volume)
    with pytest.raises(BadBarError, match=r"bars\[2\] \(ts=\d+\): timestamps must strictly increase"):
        data.validate()


def test_a_short_column_is_named() -> None:
    data = bars()
    short = OHLCV(data.ts, data.open, data.high, data.low[:-1], data.close, data.volume)
    with pytest.raises(BadBarError, match="bars: column low has 5 values, ts has 6"):
        short.validate()
