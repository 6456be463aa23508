"""Closed bars: the record that goes on the wire, aggregation of finer bars into coarser
ones, a bounded in-memory history per (symbol, timeframe), and a cleaner for live data.

Bars are keyed by their *open* time (``ts_open``, int ms UTC) and cover
``[ts_open, ts_open + timeframe_ms)``. A bucket starts at ``ts - ts % timeframe_ms``, so 1h
bars sit on the hour and 1d bars on 00:00 UTC whatever the data's first timestamp.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from common.model import RecordError, read_int, read_number, read_str
from common.ohlcv import OHLCV, BadBarError
from common.timeframes import timeframe_ms

_COLUMNS = ("ts", "open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed bar of one symbol; published on ``bar.<symbol>.<timeframe>``."""

    symbol: str
    timeframe: str
    ts_open: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def ts_close(self) -> int:
        return self.ts_open + timeframe_ms(self.timeframe)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "bar") -> "Bar":
        symbol = read_str(d, "symbol", where)
        if not symbol:
            raise RecordError(f"{where}.symbol: must not be empty")
        timeframe = read_str(d, "timeframe", where)
        try:
            tf_ms = timeframe_ms(timeframe)
        except ValueError as exc:
            raise RecordError(f"{where}.timeframe: {exc}") from None
        ts_open = read_int(d, "ts_open", where)
        if ts_open < 0 or ts_open % tf_ms:
            raise RecordError(f"{where}.ts_open: {ts_open} is not the start of a {timeframe} bar")
        prices = {name: read_number(d, name, where) for name in ("open", "high", "low", "close")}
        for name, value in prices.items():
            if value <= 0:
                raise RecordError(f"{where}.{name}: must be > 0, got {value!r}")
        volume = read_number(d, "volume", where)
        if volume < 0:
            raise RecordError(f"{where}.volume: must be >= 0, got {volume!r}")
        o, h, lo, c = prices["open"], prices["high"], prices["low"], prices["close"]
        if h < max(o, c) or lo > min(o, c):
            raise RecordError(f"{where}.high/low: do not contain open/close (o={o}, h={h}, l={lo}, c={c})")
        return cls(symbol, timeframe, ts_open, o, h, lo, c, volume)


def bars_from_ohlcv(symbol: str, timeframe: str, ohlcv: OHLCV) -> list[Bar]:
    """Records for publishing; the arrays stay the storage format."""
    return [Bar(symbol, timeframe, int(r[0]), *r[1:]) for r in ohlcv.rows()]


def concat_ohlcv(parts: Sequence[OHLCV]) -> OHLCV:
    """Join consecutive runs of bars (oldest first) into one."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return OHLCV.empty()
    if len(parts) == 1:
        return parts[0]
    return OHLCV(*(np.concatenate([getattr(p, c) for p in parts]) for c in _COLUMNS))


def _copy(ohlcv: OHLCV) -> OHLCV:
    return OHLCV(*(getattr(ohlcv, c).copy() for c in _COLUMNS))


def _aggregate_groups(rows: OHLCV, bucket_ts: np.ndarray, starts: np.ndarray) -> OHLCV:
    """One bar per group of rows; ``starts`` are the first row index of each group."""
    if starts.size == 0:
        return OHLCV.empty()
    last = np.r_[starts[1:], len(rows)] - 1
    return OHLCV(
        ts=bucket_ts[starts].astype(np.int64),
        open=rows.open[starts],
        high=np.maximum.reduceat(rows.high, starts),
        low=np.minimum.reduceat(rows.low, starts),
        close=rows.close[last],
        volume=np.add.reduceat(rows.volume, starts),
    )


class BarAggregator:
    """Turns a time-ordered stream of base bars (or ticks) of one symbol into closed bars of
    several timeframes.

    Each input row covers ``[ts, ts + base_ms)``; a tick is a row with o=h=l=c and
    ``base_ms=0``. A bar closes when a row at or after its close time arrives, when a row
    ending exactly at its close arrives (the last minute of an hour), or when
    :meth:`close_until` passes its close. Gaps in the input produce no bars: a bar holds only
    the rows that fell in its period, so a 1d bar over a gap aggregates the hours present.

    The rows of a bar still open are kept raw and reduced only when it closes, so a bar's
    values do not depend on how the stream was cut into ``add`` calls (float sums included).
    """

    def __init__(self, symbol: str, timeframes: Sequence[str], base_ms: int) -> None:
        if isinstance(base_ms, bool) or not isinstance(base_ms, int) or base_ms < 0:
            raise ValueError(f"base_ms must be an int >= 0, got {base_ms!r}")
        if not timeframes:
            raise ValueError(f"{symbol}: at least one timeframe is needed")
        self.symbol = symbol
        self.base_ms = base_ms
        self._tf_ms: dict[str, int] = {}
        for tf in timeframes:
            ms = timeframe_ms(tf)
            if base_ms and (ms < base_ms or ms % base_ms):
                raise ValueError(f"{symbol}: timeframe {tf} is not a whole multiple of the base step {base_ms} ms")
            self._tf_ms[tf] = ms
        self._pending: dict[str, OHLCV] = {tf: OHLCV.empty() for tf in self._tf_ms}
        self._last_ts: int | None = None
        self._closed_until = -(2**62)

    @property
    def timeframes(self) -> tuple[str, ...]:
        return tuple(self._tf_ms)

    def add(self, rows: OHLCV) -> dict[str, OHLCV]:
        """Feed rows (oldest first, after everything fed so far); return bars closed by them."""
        out = {tf: OHLCV.empty() for tf in self._tf_ms}
        if not len(rows):
            return out
        self._check_order(rows)
        last_end = int(rows.ts[-1]) + self.base_ms
        for tf, ms in self._tf_ms.items():
            buf = concat_ohlcv([self._pending[tf], rows])
            bucket = buf.ts - buf.ts % ms
            starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
            cut = len(buf) if last_end >= int(bucket[-1]) + ms else int(starts[-1])
            closed = _aggregate_groups(buf.slice(0, cut), bucket[:cut], starts[starts < cut])
            if len(closed):
                self._closed_until = max(self._closed_until, int(closed.ts[-1]) + ms)
            self._pending[tf] = _copy(buf.slice(cut, None))
            out[tf] = closed
        self._last_ts = int(rows.ts[-1])
        return out

    def add_tick(self, ts: int, price: float, volume: float) -> dict[str, OHLCV]:
        """One trade or price print at ``ts`` (use with ``base_ms=0``)."""
        return self.add(OHLCV.from_rows([[ts, price, price, price, price, volume]]))

    def close_until(self, ts: int) -> dict[str, OHLCV]:
        """Market time reached ``ts``: close every open bar whose period ended at or before it."""
        out = {tf: OHLCV.empty() for tf in self._tf_ms}
        for tf, ms in self._tf_ms.items():
            pending = self._pending[tf]
            if not len(pending):
                continue
            bucket_ts = int(pending.ts[0]) - int(pending.ts[0]) % ms
            if bucket_ts + ms <= ts:
                out[tf] = _aggregate_groups(pending, np.full(len(pending), bucket_ts), np.array([0]))
                self._pending[tf] = OHLCV.empty()
                self._closed_until = max(self._closed_until, bucket_ts + ms)
        return out

    def _check_order(self, rows: OHLCV) -> None:
        min_gap = self.base_ms
        gaps = np.diff(rows.ts)
        bad = np.flatnonzero(gaps < min_gap)
        if bad.size:
            i = int(bad[0]) + 1
            raise BadBarError(
                f"{self.symbol}: row {i} (ts={int(rows.ts[i])}) is less than {min_gap} ms after the "
                f"previous row (ts={int(rows.ts[i - 1])})"
            )
        first = int(rows.ts[0])
        if self._last_ts is not None and first < self._last_ts + min_gap:
            raise BadBarError(
                f"{self.symbol}: row ts={first} is out of order; the last row fed was ts={self._last_ts}"
            )
        if first < self._closed_until:
            raise BadBarError(
                f"{self.symbol}: row ts={first} falls in a bar already closed (closed until {self._closed_until})"
            )


class _BarRing:
    """The last ``capacity`` bars of one series in preallocated arrays (O(k) append)."""

    def __init__(self, capacity: int) -> None:
        self._ts = np.zeros(capacity, dtype=np.int64)
        self._values = np.zeros((5, capacity), dtype=np.float64)
        self._start = 0
        self._count = 0

    @property
    def capacity(self) -> int:
        return int(self._ts.shape[0])

    def __len__(self) -> int:
        return self._count

    def last_ts(self) -> int | None:
        return int(self._ts[(self._start + self._count - 1) % self.capacity]) if self._count else None

    def append(self, bars: OHLCV, where: str) -> None:
        n = len(bars)
        if n == 0:
            return
        last = self.last_ts()
        if last is not None and int(bars.ts[0]) <= last:
            raise BadBarError(f"{where}: bar ts={int(bars.ts[0])} is not after the last stored bar ts={last}")
        if n > 1 and np.any(np.diff(bars.ts) <= 0):
            raise BadBarError(f"{where}: bars to store are not in strictly increasing time order")
        cap = self.capacity
        keep = min(n, cap)
        idx = (self._start + self._count + np.arange(n - keep, n)) % cap
        self._ts[idx] = bars.ts[n - keep:]
        for row, col in enumerate(_COLUMNS[1:]):
            self._values[row, idx] = getattr(bars, col)[n - keep:]
        total = min(self._count + n, cap)
        self._start = (self._start + self._count + n - total) % cap
        self._count = total

    def tail(self, limit: int) -> OHLCV:
        k = min(limit, self._count)
        idx = (self._start + self._count - k + np.arange(k)) % self.capacity
        v = self._values[:, idx]
        return OHLCV(self._ts[idx], v[0], v[1], v[2], v[3], v[4])


class BarStore:
    """Closed-bar history per (symbol, timeframe), bounded to the last ``capacity`` bars so a
    long-running feed keeps flat memory; the REP warm-up answers come from here."""

    def __init__(self, capacity: int = 5000) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._rings: dict[tuple[str, str], _BarRing] = {}

    def append(self, symbol: str, timeframe: str, bars: OHLCV) -> None:
        """Store newly closed bars (oldest first, each after the last stored one)."""
        ring = self._rings.get((symbol, timeframe))
        if ring is None:
            ring = self._rings[(symbol, timeframe)] = _BarRing(self.capacity)
        ring.append(bars, where=f"{symbol} {timeframe}")

    def history(self, symbol: str, timeframe: str, limit: int | None = None) -> OHLCV:
        """The last ``limit`` closed bars (all kept when None), oldest first; empty if none."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be an int >= 1 or None, got {limit!r}")
        ring = self._rings.get((symbol, timeframe))
        if ring is None:
            return OHLCV.empty()
        return ring.tail(self.capacity if limit is None else limit)

    def count(self, symbol: str, timeframe: str) -> int:
        ring = self._rings.get((symbol, timeframe))
        return len(ring) if ring is not None else 0


def find_bar_problems(bars: OHLCV) -> list[tuple[int, str]]:
    """Every bar that must not reach a strategy, as ``(index, reason)`` sorted by index.

    A bar with bad values is judged first; the time-order check then compares each bar with
    the latest earlier bar that had sound values, so one bad timestamp is one problem, not a
    cascade.
    """
    n = len(bars)
    reasons: list[str | None] = [None] * n
    for name in ("open", "high", "low", "close", "volume"):
        col = getattr(bars, name)
        for i in np.flatnonzero(~np.isfinite(col)):
            reasons[i] = reasons[i] or f"{name} is not a finite number ({col[i]})"
    with np.errstate(invalid="ignore"):
        for name in ("open", "high", "low", "close"):
            col = getattr(bars, name)
            for i in np.flatnonzero(col <= 0):
                reasons[i] = reasons[i] or f"{name} must be > 0, got {col[i]}"
        for i in np.flatnonzero(bars.volume < 0):
            reasons[i] = reasons[i] or f"volume must be >= 0, got {bars.volume[i]}"
        for i in np.flatnonzero(bars.high < bars.low):
            reasons[i] = reasons[i] or f"high {bars.high[i]} < low {bars.low[i]}"
        outside = (bars.low > np.minimum(bars.open, bars.close)) | (bars.high < np.maximum(bars.open, bars.close))
        for i in np.flatnonzero(outside):
            reasons[i] = reasons[i] or (
                f"high/low do not contain open/close "
                f"(o={bars.open[i]}, h={bars.high[i]}, l={bars.low[i]}, c={bars.close[i]})"
            )
    sound = np.array([r is None for r in reasons], dtype=bool)
    ts = bars.ts.astype(np.int64)
    floor = np.iinfo(np.int64).min
    running = np.maximum.accumulate(np.where(sound, ts, floor)) if n else ts
    previous = np.r_[floor, running[:-1]] if n else ts
    for i in np.flatnonzero(sound & (ts <= previous)):
        if ts[i] == previous[i]:
            reasons[i] = f"duplicate ts {int(ts[i])} (an earlier bar has the same time)"
        else:
            reasons[i] = f"out of order: ts {int(ts[i])} is before an earlier bar's ts {int(previous[i])}"
    return [(i, r) for i, r in enumerate(reasons) if r is not None]


def sanitize_bars(bars: OHLCV) -> tuple[OHLCV, list[str]]:
    """Drop the bars a venue should not have sent, and say why for each, so a live feed can
    log the problems and carry on with the sound bars."""
    problems = find_bar_problems(bars)
    if not problems:
        return bars, []
    keep = np.ones(len(bars), dtype=bool)
    keep[[i for i, _ in problems]] = False
    clean = OHLCV(*(getattr(bars, c)[keep] for c in _COLUMNS))
    return clean, [f"bar {i} (ts={int(bars.ts[i])}): dropped, {reason}" for i, reason in problems]
