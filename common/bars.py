"""Closed bars: the record that goes on the wire, aggregation of finer bars into coarser
ones, a bounded in-memory history per (symbol, timeframe), and a cleaner for live data.

Bars are keyed by their *open* time (``ts_open``, int ms UTC) and cover
``[ts_open, ts_open + timeframe_ms)``. A bucket starts at ``ts - ts % timeframe_ms``, so 1h
bars sit on the hour and 1d bars on 00:00 UTC whatever the data's first timestamp.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass
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
        # Built by hand, as Signal's: asdict deep-copies, and marketdata publishes one per bar at the close.
        return {"symbol": self.symbol, "timeframe": self.timeframe, "ts_open": self.ts_open, "open": self.open,
                "high": self.high, "low": self.low, "close": self.close, "volume": self.volume}

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


_EMPTY = OHLCV.empty()  # what an add that closed nothing returns (shared: an empty array cannot change)
_FIRST = np.zeros(1, dtype=np.intp)

VECTOR_MIN_ROWS = 256
"""Chunks of at least this many rows (history warm-up, a backtest) are reduced as arrays;
shorter ones (a live step) go row by row. Both give the same bars to the bit."""

_Row = tuple[int, float, float, float, float, float]


def _aggregate_groups(rows: OHLCV, bucket_ts: np.ndarray, starts: np.ndarray) -> OHLCV:
    """One bar per group of rows; ``starts`` are the first row index of each group."""
    last = np.r_[starts[1:], len(rows)] - 1
    return OHLCV(
        ts=bucket_ts[starts].astype(np.int64),
        open=rows.open[starts],
        high=np.maximum.reduceat(rows.high, starts),
        low=np.minimum.reduceat(rows.low, starts),
        close=rows.close[last],
        volume=np.add.reduceat(rows.volume, starts),
    )


def _volume_sum(volumes: array[float]) -> float:
    """The sum ``np.add.reduceat`` gives over a group (the first value plus numpy's pairwise
    sum of the rest, not a left-to-right sum), so a bar kept row by row equals the same bar
    reduced from a chunk's arrays."""
    if len(volumes) == 1:
        return volumes[0]
    return float(np.add.reduceat(np.frombuffer(volumes), _FIRST)[0])


def _ohlcv_of(bars: list[_Row]) -> OHLCV:
    if not bars:
        return _EMPTY
    ts, open_, high, low, close, volume = zip(*bars)
    return OHLCV(np.array(ts, dtype=np.int64), np.array(open_), np.array(high), np.array(low),
                 np.array(close), np.array(volume))


class _FormingBar:
    """The bar still open in one timeframe, as plain Python numbers updated row by row. Its
    rows' volumes are kept (a C array of doubles: numpy reads it without a copy) so the sum at
    close is the array reduction's."""

    __slots__ = ("ts", "open", "high", "low", "close", "volumes")

    def __init__(self, ts: int, open_: float, high: float, low: float, close: float, volumes: array[float]) -> None:
        self.ts = ts
        self.open = open_
        self.high = high
        self.low = low
        self.close = close
        self.volumes = volumes

    def closed(self) -> _Row:
        return (self.ts, self.open, self.high, self.low, self.close, _volume_sum(self.volumes))

    def as_rows(self) -> OHLCV:
        """Rows that reduce to this bar: one per volume, every price column constant."""
        k = len(self.volumes)
        return OHLCV(np.full(k, self.ts, dtype=np.int64), np.full(k, self.open), np.full(k, self.high),
                     np.full(k, self.low), np.full(k, self.close), np.array(self.volumes))


class BarAggregator:
    """Turns a time-ordered stream of base bars (or ticks) of one symbol into closed bars of
    several timeframes.

    Each input row covers ``[ts, ts + base_ms)``; a tick is a row with o=h=l=c and
    ``base_ms=0``. A bar closes when a row at or after its close time arrives, when a row
    ending exactly at its close arrives (the last minute of an hour), or when
    :meth:`close_until` passes its close. Gaps in the input produce no bars: a bar holds only
    the rows that fell in its period, so a 1d bar over a gap aggregates the hours present.

    A bar still open is kept as plain numbers (open, high, low, close and its rows' volumes),
    so a live step costs O(new rows) without numpy calls on tiny arrays; its volume is summed
    when it closes, so a bar's values do not depend on how the stream was cut into ``add``
    calls (float sums included).
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
        self._forming: dict[str, _FormingBar | None] = dict.fromkeys(self._tf_ms)
        self._last_ts: int | None = None
        self._closed_until = -(2**62)

    @property
    def timeframes(self) -> tuple[str, ...]:
        return tuple(self._tf_ms)

    def add(self, rows: OHLCV) -> dict[str, OHLCV]:
        """Feed rows (oldest first, after everything fed so far); return bars closed by them."""
        n = len(rows)
        if not n:
            return dict.fromkeys(self._tf_ms, _EMPTY)
        if n < VECTOR_MIN_ROWS:
            ts = rows.ts.tolist()
            self._check_order(ts)
            out = self._add_rows(ts, rows.open.tolist(), rows.high.tolist(), rows.low.tolist(),
                                 rows.close.tolist(), rows.volume.tolist())
        else:
            self._check_order(rows.ts)
            out = {tf: self._add_chunk(tf, ms, rows) for tf, ms in self._tf_ms.items()}
        self._last_ts = int(rows.ts[-1])
        return out

    def add_tick(self, ts: int, price: float, volume: float) -> dict[str, OHLCV]:
        """One trade or price print at ``ts`` (use with ``base_ms=0``)."""
        t, p = int(ts), float(price)
        self._check_order([t])
        out = self._add_rows([t], [p], [p], [p], [p], [float(volume)])
        self._last_ts = t
        return out

    def close_until(self, ts: int) -> dict[str, OHLCV]:
        """Market time reached ``ts``: close every open bar whose period ended at or before it."""
        out = dict.fromkeys(self._tf_ms, _EMPTY)
        for tf, ms in self._tf_ms.items():
            bar = self._forming[tf]
            if bar is not None and bar.ts + ms <= ts:
                self._forming[tf] = None
                out[tf] = self._emit(ms, [bar.closed()])
        return out

    def _add_rows(self, ts: list[int], open_: list[float], high: list[float], low: list[float],
                  close: list[float], volume: list[float]) -> dict[str, OHLCV]:
        """The row-by-row path for a few rows."""
        base_ms = self.base_ms
        out = {}
        for tf, ms in self._tf_ms.items():
            bar = self._forming[tf]
            closed: list[_Row] = []
            for i, t in enumerate(ts):
                bucket = t - t % ms
                if bar is not None and bar.ts != bucket:
                    closed.append(bar.closed())
                    bar = None
                if bar is None:
                    bar = _FormingBar(bucket, open_[i], high[i], low[i], close[i], array("d", (volume[i],)))
                else:
                    if high[i] > bar.high:
                        bar.high = high[i]
                    if low[i] < bar.low:
                        bar.low = low[i]
                    bar.close = close[i]
                    bar.volumes.append(volume[i])
                if t + base_ms >= bucket + ms:
                    closed.append(bar.closed())
                    bar = None
            self._forming[tf] = bar
            out[tf] = self._emit(ms, closed)
        return out

    def _add_chunk(self, tf: str, ms: int, rows: OHLCV) -> OHLCV:
        """The array path for a long chunk: reduce every group at once, the open bar's rows first."""
        bar = self._forming[tf]
        if bar is not None:
            rows = concat_ohlcv([bar.as_rows(), rows])
        bucket = rows.ts - rows.ts % ms
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        groups = _aggregate_groups(rows, bucket, starts)
        if int(rows.ts[-1]) + self.base_ms >= int(bucket[-1]) + ms:
            self._forming[tf] = None
        else:
            self._forming[tf] = _FormingBar(
                int(groups.ts[-1]), float(groups.open[-1]), float(groups.high[-1]), float(groups.low[-1]),
                float(groups.close[-1]), array("d", rows.volume[int(starts[-1]):].tolist()),
            )
            groups = groups.slice(0, -1)
        if len(groups):
            self._closed_until = max(self._closed_until, int(groups.ts[-1]) + ms)
        return groups

    def _emit(self, ms: int, closed: list[_Row]) -> OHLCV:
        if closed:
            self._closed_until = max(self._closed_until, closed[-1][0] + ms)
        return _ohlcv_of(closed)

    def _check_order(self, ts: list[int] | np.ndarray) -> None:
        min_gap = self.base_ms
        if isinstance(ts, list):
            bad = next((i for i in range(1, len(ts)) if ts[i] - ts[i - 1] < min_gap), None)
        else:
            found = np.flatnonzero(np.diff(ts) < min_gap)
            bad = int(found[0]) + 1 if found.size else None
        if bad is not None:
            raise BadBarError(
                f"{self.symbol}: row {bad} (ts={int(ts[bad])}) is less than {min_gap} ms after the "
                f"previous row (ts={int(ts[bad - 1])})"
            )
        first = int(ts[0])
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

    def _check_after_last(self, ts: int, where: str) -> None:
        last = self.last_ts()
        if last is not None and ts <= last:
            raise BadBarError(f"{where}: bar ts={ts} is not after the last stored bar ts={last}")

    def _advance(self, n: int) -> None:
        """Count ``n`` bars written after the newest; the oldest beyond ``capacity`` drop out."""
        total = min(self._count + n, self.capacity)
        self._start = (self._start + self._count + n - total) % self.capacity
        self._count = total

    def append(self, bars: OHLCV, where: str) -> None:
        n = len(bars)
        if n == 0:
            return
        self._check_after_last(int(bars.ts[0]), where)
        if n > 1 and np.any(np.diff(bars.ts) <= 0):
            raise BadBarError(f"{where}: bars to store are not in strictly increasing time order")
        cap = self.capacity
        keep = min(n, cap)
        first = n - keep  # bars older than the last `cap` would be overwritten at once: skip them
        pos = (self._start + self._count + first) % cap
        head = min(keep, cap - pos)  # how many fit before the arrays' end; the rest wrap to index 0
        self._write(pos, bars, first, first + head)
        if head < keep:
            self._write(0, bars, first + head, n)
        self._advance(n)

    def append_bar(self, ts: int, values: tuple[float, float, float, float, float], where: str) -> None:
        """``append`` of one bar given as numbers (open, high, low, close, volume): a live bar
        is stored without building arrays for it."""
        self._check_after_last(ts, where)
        pos = (self._start + self._count) % self.capacity
        self._ts[pos] = ts
        self._values[:, pos] = values
        self._advance(1)

    def _write(self, pos: int, bars: OHLCV, lo: int, hi: int) -> None:
        """Bars ``lo:hi`` into slots ``pos:pos + hi - lo`` (slices, no index arrays: a step stores one bar)."""
        dst = slice(pos, pos + hi - lo)
        self._ts[dst] = bars.ts[lo:hi]
        self._values[:, dst] = (bars.open[lo:hi], bars.high[lo:hi], bars.low[lo:hi], bars.close[lo:hi],
                                bars.volume[lo:hi])

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

    def _ring(self, symbol: str, timeframe: str) -> _BarRing:
        ring = self._rings.get((symbol, timeframe))
        if ring is None:
            ring = self._rings[(symbol, timeframe)] = _BarRing(self.capacity)
        return ring

    def append(self, symbol: str, timeframe: str, bars: OHLCV) -> None:
        """Store newly closed bars (oldest first, each after the last stored one)."""
        self._ring(symbol, timeframe).append(bars, where=f"{symbol} {timeframe}")

    def append_bar(self, bar: Bar) -> None:
        """Store one newly closed bar (after the last stored one of its series)."""
        self._ring(bar.symbol, bar.timeframe).append_bar(
            bar.ts_open, (bar.open, bar.high, bar.low, bar.close, bar.volume), where=f"{bar.symbol} {bar.timeframe}")

    def last_ts(self, symbol: str, timeframe: str) -> int | None:
        """The open time of the newest stored bar of the series, None when it has none."""
        ring = self._rings.get((symbol, timeframe))
        return None if ring is None else ring.last_ts()

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
