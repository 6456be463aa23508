"""Pairs trading, long-only: buy the primary when it is unusually cheap against a related asset."""
from __future__ import annotations

import numpy as np

from common.ohlcv import OHLCV
from strategies import indicators
from strategies.events import StrategyOutput, to_signals
from strategies.oscillators import reversion_events


def pairs_spread(
    data: OHLCV, pair: OHLCV, lookback: int = 72, entry_z: float = 2.0, exit_z: float = 0.0
) -> StrategyOutput:
    """Trade the z-score of ``log(primary close / pair close)``.

    The two legs are matched on common bar timestamps; the z-score and its crossings are
    computed on that common series, then placed on the primary's bars (NaN / hold where the
    pair has no bar). Rule: buy when z crosses below ``-entry_z`` (primary cheap against the
    pair), sell when z crosses above ``exit_z`` (the spread is back to its mean, by default).
    Pair bars after the primary's last bar are ignored, so a longer pair adds no look-ahead.
    """
    _, at_data, at_pair = np.intersect1d(data.ts, pair.ts, assume_unique=True, return_indices=True)
    log_ratio = np.log(data.close[at_data]) - np.log(pair.close[at_pair])
    z = indicators.zscore(log_ratio, lookback)
    buy, sell = reversion_events(z, entry_z, exit_z)
    signals = np.zeros(len(data), dtype=np.int8)
    signals[at_data] = to_signals(buy, sell)
    spread = np.full(len(data), np.nan)
    spread[at_data] = log_ratio
    z_on_data = np.full(len(data), np.nan)
    z_on_data[at_data] = z
    return StrategyOutput(signals, {"spread": spread, "zscore": z_on_data})
