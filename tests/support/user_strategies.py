"""User strategies for the tests: the README's honest one (examples/breakout.py), and two that
peek at the future in different ways."""
from __future__ import annotations

import numpy as np

from common.ohlcv import OHLCV
from examples.breakout import breakout  # noqa: F401  (the README's example, as tests name it here)
from strategies.events import StrategyOutput


def next_bar_peek(data: OHLCV, threshold: float = 0.0) -> np.ndarray:
    """Buys before every rise: it reads the NEXT bar's close."""
    signals = np.zeros(len(data), dtype=np.int8)
    ret = np.diff(data.close) / data.close[:-1]
    signals[:-1] = np.where(ret > threshold, 1, -1)
    return signals


def centred_mean(data: OHLCV, window: int = 5) -> StrategyOutput:
    """A centred moving average, a classic accidental peek: its indicator uses window//2 later bars."""
    full = np.convolve(data.close, np.ones(window) / window, mode="full")
    mean = full[window // 2: window // 2 + len(data)]
    signals = np.zeros(len(data), dtype=np.int8)
    return StrategyOutput(signals, {"mean": mean})


def explodes(data: OHLCV, after: int = 0) -> np.ndarray:
    """Fails on every run with more than ``after`` bars: a user's bug, for the engine's tests."""
    if len(data) > after:
        raise ZeroDivisionError(f"bad bar {len(data)}")
    return np.zeros(len(data), dtype=np.int8)
