"""Bar builders shared by the strategy tests."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pytest

from common.ohlcv import OHLCV
from common.timeframes import HOUR_MS

T0_MS = 1_609_459_200_000  # 2021-01-01T00:00Z


def bars_from_close(close: Sequence[float], volume: Sequence[float] | None = None, t0: int = T0_MS) -> OHLCV:
    """Hourly bars whose open is the previous close and whose high/low just contain the body."""
    c = np.asarray(close, dtype=np.float64)
    o = np.concatenate([c[:1], c[:-1]])
    v = np.full(c.shape[0], 10.0) if volume is None else np.asarray(volume, dtype=np.float64)
    ts = t0 + HOUR_MS * np.arange(c.shape[0], dtype=np.int64)
    return OHLCV(ts, o, np.maximum(o, c), np.minimum(o, c), c, v)


def random_bars(n: int, seed: int, t0: int = T0_MS) -> OHLCV:
    """A seeded hourly random walk with wicks and lognormal volume (about BTC's hourly vol)."""
    rng = np.random.default_rng(seed)
    c = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, n)))
    o = np.concatenate([[30_000.0], c[:-1]])
    high = np.maximum(o, c) * (1.0 + rng.uniform(0.0, 0.004, n))
    low = np.minimum(o, c) * (1.0 - rng.uniform(0.0, 0.004, n))
    ts = t0 + HOUR_MS * np.arange(n, dtype=np.int64)
    return OHLCV(ts, o, high, low, c, rng.lognormal(3.0, 0.7, n))


@pytest.fixture(scope="session")
def make_bars() -> Callable[..., OHLCV]:
    return bars_from_close


@pytest.fixture(scope="session")
def make_random_bars() -> Callable[..., OHLCV]:
    return random_bars
