"""Technical indicators over whole float64 arrays, computed once per call and never peeking ahead.

Every output is aligned with its input and NaN during warm-up; the value at index ``i`` depends
only on ``x[: i + 1]``, so a strategy that decides on bar ``i`` with these values cannot see
the future. Inputs may start with a run of NaN (the warm-up of another indicator, e.g. the
MACD line fed to its signal EMA); any other non-finite value is an error.

Recursive smoothers (EMA, Wilder) run through :func:`_linear_recurrence`, a blocked scan in
plain numpy whose rounding does not depend on the array length: ``f(x[:k])`` equals
``f(x)[:k]`` bit for bit, which is what the no-look-ahead tests check.

Each indicator also has an incremental form (a class at the end of this module): it keeps its
state and takes one value (or bar) per ``update`` in O(1), returning the value the vectorized
function gives at that index, to rounding (within 1e-12 relative on real prices; tested
against the vectorized form). Rolling sums and moments are re-added exactly once every
``n`` updates, so their rounding does not drift over a months-long run.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_BLOCK = 64  # scan block length; fixed so results never depend on the array length
_WINDOW_ROWS = 1 << 16  # rows of a sliding-window view reduced at once (bounds memory)
_FLAT_TOLERANCE = 1e-12  # a window whose std is below this fraction of its mean is flat


def _window(n: object, name: str = "n") -> int:
    """An indicator length: a positive integer (bools and floats are rejected)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= 1, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


def _series(x: object, name: str, warmup_allowed: bool = True) -> tuple[np.ndarray, int]:
    """``x`` as a 1-D float64 array and the index of its first finite value.

    The start is ``len(x)`` when nothing is finite. Without ``warmup_allowed`` every value
    must be finite (raw bar columns).
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    finite = np.isfinite(arr)
    if not warmup_allowed:
        first = 0
    else:
        first = int(np.argmax(finite)) if finite.any() else arr.shape[0]
    bad = np.flatnonzero(~finite[first:])
    if bad.size:
        i = first + int(bad[0])
        rule = "only a leading warm-up run may be non-finite" if warmup_allowed else "every value must be finite"
        raise ValueError(f"{name}[{i}] is {arr[i]}: {rule}")
    return arr, first


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have the same length, got {lengths}")


def _linear_recurrence(u: np.ndarray, decay: float) -> np.ndarray:
    """``y[i] = decay * y[i-1] + u[i]`` with ``y[-1] = 0``, without a Python loop over ``u``.

    ``u`` is cut into rows of ``_BLOCK``; each row is scanned column by column (vectorised
    across rows), the row end values are chained by the same recurrence with ``decay**_BLOCK``
    and added back. Short inputs take the plain loop, which performs exactly the operations of
    the first row, so the result for a prefix is bit-identical to the prefix of the result.
    """
    m = u.shape[0]
    if m <= _BLOCK:
        out = np.empty(m)
        y = 0.0
        for i in range(m):
            y = y * decay + float(u[i])
            out[i] = y
        return out
    rows = -(-m // _BLOCK)
    padded = np.zeros(rows * _BLOCK)
    padded[:m] = u
    block = padded.reshape(rows, _BLOCK)
    local = np.empty_like(block)
    local[:, 0] = block[:, 0]
    for j in range(1, _BLOCK):
        local[:, j] = local[:, j - 1] * decay + block[:, j]
    row_end = _linear_recurrence(local[:, -1], decay**_BLOCK)
    powers = np.power(decay, np.arange(1, _BLOCK + 1, dtype=np.float64))
    local[1:] += row_end[:-1, None] * powers[None, :]
    return local.reshape(-1)[:m]


def _smooth(x: np.ndarray, seed_at: int, seed: float, alpha: float) -> np.ndarray:
    """Exponential smoothing ``y = (1 - alpha) * y_prev + alpha * x`` from ``y[seed_at] = seed``."""
    out = np.full(x.shape[0], np.nan)
    if seed_at >= x.shape[0]:
        return out
    decay = 1.0 - alpha
    u = alpha * x[seed_at + 1 :]
    out[seed_at] = seed
    if u.shape[0]:
        u[0] += decay * seed
        out[seed_at + 1 :] = _linear_recurrence(u, decay)
    return out


def _rolling_sum(x: np.ndarray, n: int, start: int, csum: np.ndarray | None = None) -> np.ndarray:
    """Sum of the last ``n`` values, from index ``start + n - 1`` on (a prefix-sum difference,
    written straight into the output: one pass over a long series fewer than a copy).
    ``csum`` is ``np.cumsum(x[start:])`` if the caller has it."""
    if x.shape[0] - start < n:
        return np.full(x.shape[0], np.nan)
    first = start + n - 1
    out = np.empty(x.shape[0])
    out[:first] = np.nan
    if csum is None:
        csum = np.cumsum(x[start:])
    out[first] = csum[n - 1]
    np.subtract(csum[n:], csum[: csum.shape[0] - n], out=out[first + 1 :])
    return out


def _rolling_mean_std(x: np.ndarray, n: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-pass mean and population std of each window (no cumsum cancellation).

    Reduced in chunks of windows so memory stays bounded on long arrays.
    """
    mean = np.full(x.shape[0], np.nan)
    std = np.full(x.shape[0], np.nan)
    tail = x[start:]
    if tail.shape[0] < n:
        return mean, std
    windows = sliding_window_view(tail, n)
    first = start + n - 1
    for lo in range(0, windows.shape[0], _WINDOW_ROWS):
        chunk = windows[lo : lo + _WINDOW_ROWS]
        mean[first + lo : first + lo + chunk.shape[0]] = chunk.mean(axis=1)
        std[first + lo : first + lo + chunk.shape[0]] = chunk.std(axis=1)
    return mean, std


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average of the last ``n`` values; NaN for the first ``n - 1``."""
    return smas(x, n)[0]


def smas(x: np.ndarray, *lengths: int) -> tuple[np.ndarray, ...]:
    """``sma(x, n)`` for each of ``lengths``, from one prefix sum: a crossover of two averages
    of one series checks it and sums it once."""
    windows = [_window(n) for n in lengths]
    arr, start = _series(x, "x")
    csum = np.cumsum(arr[start:])
    averages = tuple(_rolling_sum(arr, n, start, csum) for n in windows)
    for n, out in zip(windows, averages):
        out /= n
    return averages


def ema(x: np.ndarray, n: int) -> np.ndarray:
    """EMA with ``alpha = 2 / (n + 1)``, seeded with the SMA of the first ``n`` values.

    The seed is the common charting convention (TA-Lib, TradingView): it removes the bias an
    EMA started at ``x[0]`` carries for its first few dozen bars.
    """
    n = _window(n)
    arr, start = _series(x, "x")
    seed_at = start + n - 1
    if seed_at >= arr.shape[0]:
        return np.full(arr.shape[0], np.nan)
    return _smooth(arr, seed_at, float(arr[start : seed_at + 1].mean()), 2.0 / (n + 1))


def _wilder(x: np.ndarray, n: int, start: int) -> np.ndarray:
    """Wilder's smoothing (``alpha = 1 / n``) seeded with the mean of ``x[start : start + n]``."""
    seed_at = start + n - 1
    if seed_at >= x.shape[0]:
        return np.full(x.shape[0], np.nan)
    return _smooth(x, seed_at, float(x[start : seed_at + 1].mean()), 1.0 / n)


def rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's RSI in [0, 100]; 100 when the average loss is 0. First value at index ``n``."""
    n = _window(n)
    arr, start = _series(close, "close")
    change = np.full(arr.shape[0], np.nan)
    change[start + 1 :] = np.diff(arr[start:])
    gain = np.where(change > 0, change, 0.0)
    loss = np.where(change < 0, -change, 0.0)
    avg_gain = _wilder(gain, n, start + 1)
    avg_loss = _wilder(loss, n, start + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    return np.where(avg_loss == 0.0, 100.0, value)


def macd(
    close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD line (EMA fast - EMA slow), its signal EMA and the histogram (line - signal)."""
    fast, slow, signal = _window(fast, "fast"), _window(slow, "slow"), _window(signal, "signal")
    if fast >= slow:
        raise ValueError(f"fast ({fast}) must be < slow ({slow})")
    line = ema(close, fast) - ema(close, slow)
    signal_line = ema(line, signal)
    return line, signal_line, line - signal_line


def bollinger(close: np.ndarray, n: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger bands (mid, upper, lower): SMA(n) +/- k population std (ddof=0)."""
    n = _window(n)
    if not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
        raise ValueError(f"k must be a finite number > 0, got {k!r}")
    arr, start = _series(close, "close")
    mid, std = _rolling_mean_std(arr, n, start)
    return mid, mid + k * std, mid - k * std


def roc(close: np.ndarray, n: int) -> np.ndarray:
    """Rate of change over ``n`` bars, in percent: ``100 * (x[i] / x[i-n] - 1)``."""
    n = _window(n)
    arr, _ = _series(close, "close")
    out = np.full(arr.shape[0], np.nan)
    if arr.shape[0] > n:
        out[n:] = 100.0 * (arr[n:] / arr[:-n] - 1.0)
    return out


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's average true range; first value at index ``n - 1``.

    The first bar's true range is its high - low (there is no previous close), so the seed is
    the mean of the first ``n`` true ranges.
    """
    n = _window(n)
    h, _ = _series(high, "high", warmup_allowed=False)
    lo, _ = _series(low, "low", warmup_allowed=False)
    c, _ = _series(close, "close", warmup_allowed=False)
    _same_length(high=h, low=lo, close=c)
    true_range = h - lo
    if c.shape[0] > 1:
        prev = c[:-1]
        true_range[1:] = np.maximum.reduce([h[1:] - lo[1:], np.abs(h[1:] - prev), np.abs(lo[1:] - prev)])
    return _wilder(true_range, n, 0)


def vwap(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, n: int) -> np.ndarray:
    """Rolling VWAP of the typical price ``(h + l + c) / 3`` over ``n`` bars; NaN on zero volume."""
    n = _window(n)
    cols = {
        name: _series(a, name, warmup_allowed=False)[0]
        for name, a in (("high", high), ("low", low), ("close", close), ("volume", volume))
    }
    _same_length(**cols)
    typical = (cols["high"] + cols["low"] + cols["close"]) / 3.0
    traded = _rolling_sum(typical * cols["volume"], n, 0)
    volume_sum = _rolling_sum(cols["volume"], n, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(volume_sum > 0, traded / volume_sum, np.nan)


def volume_ratio(volume: np.ndarray, n: int) -> np.ndarray:
    """Volume relative to its SMA(n) (includes the current bar); NaN where that SMA is 0."""
    n = _window(n)
    arr, _ = _series(volume, "volume")
    average = sma(arr, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(average > 0, arr / average, np.nan)


def zscore(x: np.ndarray, n: int) -> np.ndarray:
    """Rolling z-score ``(x - mean) / std`` over ``n`` values (ddof=0).

    A flat window (std within rounding of 0) scores 0: the value sits on its mean, and a
    rounding-noise std must not turn into a huge z.
    """
    n = _window(n)
    arr, start = _series(x, "x")
    mean, std = _rolling_mean_std(arr, n, start)
    flat = std <= _FLAT_TOLERANCE * np.abs(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flat, 0.0, (arr - mean) / std)


# --- incremental forms ----------------------------------------------------------------------
NAN = float("nan")


def _finite(x: float, name: str) -> float:
    value = float(x)
    if not math.isfinite(value):
        raise ValueError(f"{name}: got {value}, every value fed must be finite")
    return value


class _Window:
    """The last ``n`` values in a ring, their sum, mean and centred square sum (``m2``).

    Updates are O(1): a sliding Welford step (no sum-of-squares cancellation). When the ring
    wraps (every ``n`` updates) sum and ``m2`` are recomputed exactly, amortized O(1), so
    rounding error stays that of one window however long the run.
    """

    __slots__ = ("n", "values", "pos", "count", "total", "mean", "m2")

    def __init__(self, n: int) -> None:
        self.n = n
        self.values = [0.0] * n
        self.pos = 0
        self.count = 0
        self.total = 0.0
        self.mean = 0.0
        self.m2 = 0.0

    @property
    def full(self) -> bool:
        return self.count == self.n

    def push(self, x: float) -> None:
        n = self.n
        if self.count < n:
            self.count += 1
            self.total += x
            delta = x - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (x - self.mean)
        else:
            old = self.values[self.pos]
            self.total += x - old
            mean = self.mean + (x - old) / n
            self.m2 += (x - old) * (x - mean + old - self.mean)
            self.mean = mean
        self.values[self.pos] = x
        self.pos = (self.pos + 1) % n
        if self.pos == 0:
            self.total = math.fsum(self.values)
            self.mean = self.total / n
            self.m2 = math.fsum((v - self.mean) ** 2 for v in self.values)

    def std(self) -> float:
        """Population std (ddof=0) of a full window."""
        return math.sqrt(max(self.m2, 0.0) / self.n)


class Sma:
    """Incremental :func:`sma`: NaN until ``n`` values were fed."""

    __slots__ = ("window", "value")

    def __init__(self, n: int) -> None:
        self.window = _Window(_window(n))
        self.value = NAN

    def update(self, x: float) -> float:
        w = self.window
        w.push(_finite(x, "sma"))
        self.value = w.total / w.n if w.full else NAN
        return self.value


class Smoother:
    """Exponential smoothing seeded with the mean of the first ``n`` finite values.

    ``alpha`` is ``2 / (n + 1)`` for :class:`Ema` and ``1 / n`` for Wilder's smoothing. A
    leading run of NaN is skipped (a MACD line fed to its signal EMA), as :func:`ema` does;
    a non-finite value after the first finite one is an error.
    """

    __slots__ = ("n", "alpha", "decay", "seed", "value")

    def __init__(self, n: int, alpha: float) -> None:
        self.n = _window(n)
        self.alpha = alpha
        self.decay = 1.0 - alpha
        self.seed: list[float] | None = []
        self.value = NAN

    def update(self, x: float) -> float:
        x = float(x)
        seed = self.seed
        if seed is None:
            self.value = self.value * self.decay + self.alpha * _finite(x, "ema")
        elif seed or math.isfinite(x):
            seed.append(_finite(x, "ema"))
            if len(seed) == self.n:
                self.value = math.fsum(seed) / self.n
                self.seed = None
        return self.value


class Ema(Smoother):
    """Incremental :func:`ema`."""

    __slots__ = ()

    def __init__(self, n: int) -> None:
        super().__init__(n, 2.0 / (_window(n) + 1))


def wilder(n: int) -> Smoother:
    """Wilder's smoothing (``alpha = 1 / n``), as RSI and ATR use it."""
    return Smoother(n, 1.0 / _window(n))


class Rsi:
    """Incremental :func:`rsi`: first value on the ``n + 1``-th close."""

    __slots__ = ("gain", "loss", "prev", "value")

    def __init__(self, n: int = 14) -> None:
        self.gain, self.loss = wilder(n), wilder(n)
        self.prev = NAN
        self.value = NAN

    def update(self, close: float) -> float:
        close = _finite(close, "rsi")
        if not math.isnan(self.prev):  # a change exists from the second close on
            change = close - self.prev
            avg_gain = self.gain.update(change if change > 0 else 0.0)
            avg_loss = self.loss.update(-change if change < 0 else 0.0)
            self.value = 100.0 if avg_loss == 0.0 else 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
        self.prev = close
        return self.value


class Macd:
    """Incremental :func:`macd`; ``value`` is (line, signal line, histogram)."""

    __slots__ = ("fast", "slow", "signal", "value")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        fast, slow = _window(fast, "fast"), _window(slow, "slow")
        if fast >= slow:
            raise ValueError(f"fast ({fast}) must be < slow ({slow})")
        self.fast, self.slow, self.signal = Ema(fast), Ema(slow), Ema(_window(signal, "signal"))
        self.value = (NAN, NAN, NAN)

    def update(self, close: float) -> tuple[float, float, float]:
        line = self.fast.update(close) - self.slow.update(close)
        signal_line = self.signal.update(line)
        self.value = (line, signal_line, line - signal_line)
        return self.value


class Bollinger:
    """Incremental :func:`bollinger`; ``value`` is (mid, upper, lower)."""

    __slots__ = ("window", "k", "value")

    def __init__(self, n: int = 20, k: float = 2.0) -> None:
        if not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
            raise ValueError(f"k must be a finite number > 0, got {k!r}")
        self.window = _Window(_window(n))
        self.k = k
        self.value = (NAN, NAN, NAN)

    def update(self, close: float) -> tuple[float, float, float]:
        w = self.window
        w.push(_finite(close, "bollinger"))
        if w.full:
            band = self.k * w.std()
            self.value = (w.mean, w.mean + band, w.mean - band)
        return self.value


class Roc:
    """Incremental :func:`roc`: first value on the ``n + 1``-th close."""

    __slots__ = ("n", "closes", "value")

    def __init__(self, n: int) -> None:
        self.n = _window(n)
        self.closes: deque[float] = deque(maxlen=self.n + 1)
        self.value = NAN

    def update(self, close: float) -> float:
        self.closes.append(_finite(close, "roc"))
        if len(self.closes) > self.n:
            self.value = 100.0 * (self.closes[-1] / self.closes[0] - 1.0)
        return self.value


class Atr:
    """Incremental :func:`atr` over (high, low, close) bars."""

    __slots__ = ("smooth", "prev_close", "value")

    def __init__(self, n: int = 14) -> None:
        self.smooth = wilder(n)
        self.prev_close = NAN
        self.value = NAN

    def update(self, high: float, low: float, close: float) -> float:
        h, lo, c = _finite(high, "atr high"), _finite(low, "atr low"), _finite(close, "atr close")
        prev = self.prev_close
        true_range = h - lo if math.isnan(prev) else max(h - lo, abs(h - prev), abs(lo - prev))
        self.prev_close = c
        self.value = self.smooth.update(true_range)
        return self.value


class Vwap:
    """Incremental :func:`vwap` of the typical price over (high, low, close, volume) bars."""

    __slots__ = ("traded", "volume", "value")

    def __init__(self, n: int) -> None:
        n = _window(n)
        self.traded, self.volume = _Window(n), _Window(n)
        self.value = NAN

    def update(self, high: float, low: float, close: float, volume: float) -> float:
        typical = (_finite(high, "vwap high") + _finite(low, "vwap low") + _finite(close, "vwap close")) / 3.0
        v = _finite(volume, "vwap volume")
        self.traded.push(typical * v)
        self.volume.push(v)
        total = self.volume.total
        self.value = self.traded.total / total if self.volume.full and total > 0 else NAN
        return self.value


class VolumeRatio:
    """Incremental :func:`volume_ratio`."""

    __slots__ = ("average", "value")

    def __init__(self, n: int) -> None:
        self.average = Sma(n)
        self.value = NAN

    def update(self, volume: float) -> float:
        average = self.average.update(volume)
        self.value = volume / average if average > 0 else NAN
        return self.value


class ZScore:
    """Incremental :func:`zscore`, with the same flat-window rule."""

    __slots__ = ("window", "value")

    def __init__(self, n: int) -> None:
        self.window = _Window(_window(n))
        self.value = NAN

    def update(self, x: float) -> float:
        w = self.window
        x = _finite(x, "zscore")
        w.push(x)
        if w.full:
            std = w.std()
            self.value = 0.0 if std <= _FLAT_TOLERANCE * abs(w.mean) else (x - w.mean) / std
        return self.value
