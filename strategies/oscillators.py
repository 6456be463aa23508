"""Mean-reverting strategies: buy what has fallen too far, sell once it has recovered."""
from __future__ import annotations

from typing import Any

import numpy as np

from common.ohlcv import OHLCV
from strategies import indicators
from strategies.events import StrategyOutput, becomes_true, cross_above, cross_below, to_signals


def reversion_events(z: np.ndarray, entry_z: float, exit_z: float) -> tuple[np.ndarray, np.ndarray]:
    """(buy, sell) masks for a z-score: buy when it crosses below ``-entry_z``, sell above ``exit_z``.

    Long-only: a stretched-high z is never shorted; it only closes a long opened on a low one.
    """
    return cross_below(z, -entry_z), cross_above(z, exit_z)


def rsi(data: OHLCV, period: int = 14, oversold: float = 30.0, overbought: float = 70.0) -> StrategyOutput:
    """Buy when RSI crosses down into oversold, sell when it crosses up into overbought."""
    value = indicators.rsi(data.close, period)
    signals = to_signals(cross_below(value, oversold), cross_above(value, overbought))
    return StrategyOutput(signals, {"rsi": value})


def bollinger(data: OHLCV, period: int = 20, num_std: float = 2.0) -> StrategyOutput:
    """Buy when the close crosses below the lower band, sell when it crosses above the middle.

    The middle band is the reversion target; waiting for the upper band would give back most
    gains in the common case where price returns to the mean and stalls.
    """
    mid, upper, lower = indicators.bollinger(data.close, period, num_std)
    signals = to_signals(cross_below(data.close, lower), cross_above(data.close, mid))
    return StrategyOutput(signals, {"bb_mid": mid, "bb_upper": upper, "bb_lower": lower})


def mean_reversion(data: OHLCV, period: int = 48, entry_z: float = 2.0, exit_z: float = 0.0) -> StrategyOutput:
    """Buy when the close's rolling z-score crosses below -entry_z, sell when it crosses above exit_z."""
    z = indicators.zscore(data.close, period)
    buy, sell = reversion_events(z, entry_z, exit_z)
    return StrategyOutput(to_signals(buy, sell), {"zscore": z})


def rsi_macd_bias(value: Any, line: Any, signal_line: Any, rsi_mid: float) -> tuple[Any, Any]:
    """(bullish, bearish): MACD above its signal and RSI above ``rsi_mid``, or both below
    (arrays or one bar's floats; NaN: neither)."""
    return (line > signal_line) & (value > rsi_mid), (line < signal_line) & (value < rsi_mid)


def rsi_macd(
    data: OHLCV, rsi_period: int = 14, rsi_mid: float = 50.0, fast: int = 12, slow: int = 26, signal: int = 9
) -> StrategyOutput:
    """Trade only when RSI and MACD agree.

    Bullish means MACD above its signal line and RSI above ``rsi_mid``; bearish means both
    below. Buy on the bar where they start agreeing bullish, sell on the bar they start
    agreeing bearish; disagreement holds.
    """
    value = indicators.rsi(data.close, rsi_period)
    line, signal_line, hist = indicators.macd(data.close, fast, slow, signal)
    defined = np.isfinite(value) & np.isfinite(signal_line)
    bullish, bearish = rsi_macd_bias(value, line, signal_line, rsi_mid)
    signals = to_signals(becomes_true(bullish, defined), becomes_true(bearish, defined))
    return StrategyOutput(signals, {"rsi": value, "macd": line, "macd_signal": signal_line, "macd_hist": hist})
