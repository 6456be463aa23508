"""A user strategy: buy a close above the last ``lookback`` highs, sell one below their lows."""
import numpy as np

from common.ohlcv import OHLCV


def breakout(data: OHLCV, lookback: int = 20) -> np.ndarray:
    """One signal per bar, decided from bars 0..i only: 1 buy, -1 sell, 0 hold."""
    signals = np.zeros(len(data), dtype=np.int8)
    for i in range(lookback, len(data)):
        if data.close[i] > data.high[i - lookback:i].max():
            signals[i] = 1
        elif data.close[i] < data.low[i - lookback:i].min():
            signals[i] = -1
    return signals
