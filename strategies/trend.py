"""Trend-following strategies: enter when the trend turns up, exit when it turns down."""
from __future__ import annotations

from typing import Any

import numpy as np

from common.ohlcv import OHLCV
from strategies import indicators
from strategies.events import StrategyOutput, becomes_true, cross_above, cross_below, to_signals


def _line_crossover(fast_line: np.ndarray, slow_line: np.ndarray, names: tuple[str, str]) -> StrategyOutput:
    """Buy when the fast line crosses above the slow one, sell when it crosses back below."""
    signals = to_signals(cross_above(fast_line, slow_line), cross_below(fast_line, slow_line))
    return StrategyOutput(signals, {names[0]: fast_line, names[1]: slow_line})


def sma_crossover(data: OHLCV, fast: int = 20, slow: int = 50) -> StrategyOutput:
    """Classic golden/death cross of two simple moving averages of the close."""
    fast_line, slow_line = indicators.smas(data.close, fast, slow)
    return _line_crossover(fast_line, slow_line, ("sma_fast", "sma_slow"))


def ema_crossover(data: OHLCV, fast: int = 12, slow: int = 26) -> StrategyOutput:
    """Crossover of two EMAs: reacts sooner than the SMA pair, at the cost of more whipsaws."""
    return _line_crossover(
        indicators.ema(data.close, fast), indicators.ema(data.close, slow), ("ema_fast", "ema_slow")
    )


def ema_stacked(fast: Any, mid: Any, slow: Any) -> Any:
    """Whether the EMAs are stacked fast > mid > slow (arrays or one bar's floats; NaN: False)."""
    return (fast > mid) & (mid > slow)


def volume_confirmed(close: Any, price_vwap: Any, ratio: Any, volume_threshold: float) -> Any:
    """Close above the VWAP on volume at least ``volume_threshold`` times its average (arrays or floats)."""
    return (close > price_vwap) & (ratio >= volume_threshold)


def triple_ema(data: OHLCV, fast: int = 8, mid: int = 21, slow: int = 55) -> StrategyOutput:
    """Hold only while three EMAs are stacked fast > mid > slow.

    Buy on the bar the stack forms, sell on the bar it breaks; requiring all three filters
    out the many crossings of a single pair in a sideways market.
    """
    ema_fast = indicators.ema(data.close, fast)
    ema_mid = indicators.ema(data.close, mid)
    ema_slow = indicators.ema(data.close, slow)
    defined = np.isfinite(ema_fast) & np.isfinite(ema_mid) & np.isfinite(ema_slow)
    stacked = ema_stacked(ema_fast, ema_mid, ema_slow)
    signals = to_signals(becomes_true(stacked, defined), becomes_true(~stacked & defined, defined))
    return StrategyOutput(signals, {"ema_fast": ema_fast, "ema_mid": ema_mid, "ema_slow": ema_slow})


def macd(data: OHLCV, fast: int = 12, slow: int = 26, signal: int = 9) -> StrategyOutput:
    """Buy when the MACD line crosses above its signal line, sell when it crosses below."""
    line, signal_line, hist = indicators.macd(data.close, fast, slow, signal)
    signals = to_signals(cross_above(line, signal_line), cross_below(line, signal_line))
    return StrategyOutput(signals, {"macd": line, "macd_signal": signal_line, "macd_hist": hist})


def momentum(data: OHLCV, period: int = 14, threshold: float = 5.0) -> StrategyOutput:
    """Ride strong moves: buy when ROC(period) crosses above +threshold %, sell below -threshold %."""
    change = indicators.roc(data.close, period)
    signals = to_signals(cross_above(change, threshold), cross_below(change, -threshold))
    return StrategyOutput(signals, {"roc": change})


def volume_weighted(
    data: OHLCV, period: int = 24, volume_period: int = 24, volume_threshold: float = 1.5
) -> StrategyOutput:
    """Breakouts that volume confirms.

    Buy on the bar where the close is above the rolling VWAP *and* volume is at least
    ``volume_threshold`` times its average (and that was not already so on the bar before);
    sell on the bar where the close crosses below the VWAP, whatever the volume, because a
    long should not wait for heavy volume to get out.
    """
    price_vwap = indicators.vwap(data.high, data.low, data.close, data.volume, period)
    ratio = indicators.volume_ratio(data.volume, volume_period)
    defined = np.isfinite(price_vwap) & np.isfinite(ratio)
    confirmed = volume_confirmed(data.close, price_vwap, ratio, volume_threshold)
    signals = to_signals(becomes_true(confirmed, defined), cross_below(data.close, price_vwap))
    return StrategyOutput(signals, {"vwap": price_vwap, "volume_ratio": ratio})
