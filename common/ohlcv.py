"""OHLCV bars as numpy arrays: the one shape every strategy, feed and backtest shares.

Timestamps are integer milliseconds since the Unix epoch (UTC) and mark a bar's *open*
time, as exchanges and freqtrade do; a bar is closed at ``ts + timeframe_ms(timeframe)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


class BadBarError(ValueError):
    """A bar that must not reach a strategy: NaN, non-positive, inconsistent or out of order."""


@dataclass(frozen=True, slots=True)
class OHLCV:
    """Columns of closed bars, oldest first. Arrays are float64 except ``ts`` (int64 ms)."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[float]]) -> "OHLCV":
        """Build from ``[ts_ms, open, high, low, close, volume]`` rows (exchange/CSV order)."""
        arr = np.asarray(list(rows), dtype=np.float64)
        if arr.size == 0:
            return cls.empty()
        if arr.ndim != 2 or arr.shape[1] < 6:
            raise BadBarError(f"expected rows of 6 values [ts, o, h, l, c, v], got shape {arr.shape}")
        return cls(
            ts=arr[:, 0].astype(np.int64),
            open=np.ascontiguousarray(arr[:, 1]),
            high=np.ascontiguousarray(arr[:, 2]),
            low=np.ascontiguousarray(arr[:, 3]),
            close=np.ascontiguousarray(arr[:, 4]),
            volume=np.ascontiguousarray(arr[:, 5]),
        )

    @classmethod
    def empty(cls) -> "OHLCV":
        z = np.empty(0, dtype=np.float64)
        return cls(np.empty(0, dtype=np.int64), z, z, z, z, z)

    def rows(self) -> list[list[float]]:
        """Rows ``[ts, o, h, l, c, v]`` with ``ts`` as int, for messages and CSV."""
        return [
            [int(t), float(o), float(h), float(lo), float(c), float(v)]
            for t, o, h, lo, c, v in zip(self.ts.tolist(), self.open.tolist(), self.high.tolist(),
                                         self.low.tolist(), self.close.tolist(), self.volume.tolist())
        ]

    def slice(self, start: int | None = None, stop: int | None = None) -> "OHLCV":
        s = slice(start, stop)
        return OHLCV(self.ts[s], self.open[s], self.high[s], self.low[s], self.close[s], self.volume[s])

    def tail(self, n: int) -> "OHLCV":
        return self.slice(max(len(self) - n, 0), None)

    def validate(self, where: str = "bars") -> "OHLCV":
        """Raise BadBarError naming the first bad bar; return self when all are sound."""
        n = len(self)
        cols = {"open": self.open, "high": self.high, "low": self.low, "close": self.close, "volume": self.volume}
        for name, col in cols.items():
            if col.shape[0] != n:
                raise BadBarError(f"{where}: column {name} has {col.shape[0]} values, ts has {n}")
        if n == 0 or self._sound():
            return self
        self._raise_first_bad(where, cols)
        return self

    def _sound(self) -> bool:
        """Every bar sound, judged by whole-column reductions and comparisons (a third of the
        per-bar search's time on a million bars, where it ran before every backtest); False
        leaves it to ``_raise_first_bad`` to name the bar. Open and close within [low, high]
        with low > 0 and high < inf bounds them too, so only low's min and high's max are
        taken. A NaN makes a column's min and max NaN, and NaN compares False."""
        low, high, volume = self.low, self.high, self.volume
        if not (low.min() > 0 and high.max() < np.inf and volume.min() >= 0 and volume.max() < np.inf):
            return False
        return bool((low <= self.open).all() and (low <= self.close).all() and (high >= self.open).all()
                    and (high >= self.close).all() and (self.ts[1:] > self.ts[:-1]).all())

    def _raise_first_bad(self, where: str, cols: dict[str, np.ndarray]) -> None:
        """BadBarError naming the first bad bar, when ``_sound`` found one."""
        for name, col in cols.items():
            bad = np.flatnonzero(~np.isfinite(col))
            if bad.size:
                i = int(bad[0])
                raise BadBarError(f"{where}[{i}] (ts={int(self.ts[i])}): {name} is not a finite number")
        for name in ("open", "high", "low", "close"):
            bad = np.flatnonzero(cols[name] <= 0)
            if bad.size:
                i = int(bad[0])
                raise BadBarError(f"{where}[{i}] (ts={int(self.ts[i])}): {name} must be > 0, got {cols[name][i]}")
        bad = np.flatnonzero(self.volume < 0)
        if bad.size:
            i = int(bad[0])
            raise BadBarError(f"{where}[{i}] (ts={int(self.ts[i])}): volume must be >= 0, got {self.volume[i]}")
        lo_body = np.minimum(self.open, self.close)
        hi_body = np.maximum(self.open, self.close)
        bad = np.flatnonzero((self.low > lo_body) | (self.high < hi_body))
        if bad.size:
            i = int(bad[0])
            raise BadBarError(
                f"{where}[{i}] (ts={int(self.ts[i])}): high/low do not contain open/close "
                f"(o={self.open[i]}, h={self.high[i]}, l={self.low[i]}, c={self.close[i]})"
            )
        bad = np.flatnonzero(np.diff(self.ts) <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise BadBarError(
                f"{where}[{i}] (ts={int(self.ts[i])}): timestamps must strictly increase, "
                f"previous is {int(self.ts[i - 1])}"
            )
