"""What every strategy returns, and the edge detectors that turn conditions into signal events.

Signals are events, not states: 1 on the bar where the entry condition becomes true, -1 on
the bar where the exit condition becomes true, 0 otherwise. The bot is long-only spot, so a
buy opens a long with cash and a sell closes it; a repeated event in the same direction (two
buys with no sell between) is a no-op for whoever holds the position. Every detector needs
the condition to be defined on both the previous and the current bar, so no event can fire
on the first bar an indicator leaves its warm-up.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class StrategyOutput:
    """Signals (int8: 1 buy, -1 sell, 0 hold) and the indicator series worth showing, all aligned."""

    signals: np.ndarray
    indicators: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        n = self.signals.shape[0]
        if self.signals.dtype != np.int8:
            raise ValueError(f"signals must be int8, got {self.signals.dtype}")
        for name, series in self.indicators.items():
            if series.shape[0] != n:
                raise ValueError(f"indicator {name!r} has {series.shape[0]} values, signals have {n}")


def cross_above(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """True on bar ``i`` when ``a[i] > b[i]`` and ``a[i-1] <= b[i-1]`` (NaN on either bar: False)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), a.shape)
    out = np.zeros(a.shape[0], dtype=bool)
    out[1:] = (a[1:] > b[1:]) & (a[:-1] <= b[:-1])
    return out


def cross_below(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """True on bar ``i`` when ``a[i] < b[i]`` and ``a[i-1] >= b[i-1]`` (NaN on either bar: False)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), a.shape)
    out = np.zeros(a.shape[0], dtype=bool)
    out[1:] = (a[1:] < b[1:]) & (a[:-1] >= b[:-1])
    return out


def becomes_true(condition: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """True on bar ``i`` when ``condition`` turns on there and was defined (and off) on ``i - 1``."""
    out = np.zeros(condition.shape[0], dtype=bool)
    out[1:] = condition[1:] & ~condition[:-1] & defined[1:] & defined[:-1]
    return out


def to_signals(buy: np.ndarray, sell: np.ndarray) -> np.ndarray:
    """int8 events from buy/sell masks; a bar flagged both ways holds (0) rather than guess."""
    return buy.astype(np.int8) - sell.astype(np.int8)
