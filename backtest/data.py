"""Bars for a backtest: replay CSV files (the ``download-data`` format) or the seeded simulator.

The simulator path is the one the ``sim`` feed runs: minute steps of ``common.market_sim``
aggregated by ``common.bars.BarAggregator``, so a backtest on ``--sim`` bars and a paper run
on the sim feed with the same seed and origin see the same bars.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from common.bars import BarAggregator, concat_ohlcv
from common.csv_bars import load_ohlcv_csv
from common.market_sim import MarketSim
from common.ohlcv import OHLCV
from common.timeframes import DAY_MS

SIM_STEP_MS = 60_000


class BacktestDataError(ValueError):
    """Bars that cannot be backtested: none in the window, a missing file, legs that never overlap."""


def csv_path_for(data_dir: str | Path, symbol: str, timeframe: str) -> Path:
    """``BTC/USDT`` at ``1h`` -> ``DATA_DIR/BTC_USDT-1h.csv`` (the freqtrade / download-data name)."""
    path = Path(data_dir) / f"{symbol.replace('/', '_')}-{timeframe}.csv"
    if not path.is_file():
        raise BacktestDataError(f"no bars for {symbol} {timeframe}: {path} does not exist")
    return path


def load_csv(path: str | Path) -> OHLCV:
    """A replay CSV, validated (BadBarError names the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise BacktestDataError(f"CSV file not found: {path}")
    return load_ohlcv_csv(path)


def window(data: OHLCV, since_ms: int | None = None, until_ms: int | None = None, where: str = "bars") -> OHLCV:
    """Bars opening in ``[since_ms, until_ms)``; an empty result is an error naming the window."""
    lo = 0 if since_ms is None else int(np.searchsorted(data.ts, since_ms, side="left"))
    hi = len(data) if until_ms is None else int(np.searchsorted(data.ts, until_ms, side="left"))
    if hi <= lo:
        first = int(data.ts[0]) if len(data) else None
        last = int(data.ts[-1]) if len(data) else None
        raise BacktestDataError(
            f"{where}: no bars between since={since_ms} and until={until_ms} (data spans {first}..{last})"
        )
    return data.slice(lo, hi)


def align_pair(data: OHLCV, pair: OHLCV) -> tuple[OHLCV, OHLCV]:
    """Both legs on their common bar times, so bar ``i`` of each is the same hour."""
    common, i_data, i_pair = np.intersect1d(data.ts, pair.ts, assume_unique=True, return_indices=True)
    if common.size == 0:
        raise BacktestDataError("pair: the two legs share no bar time")
    return _take(data, i_data), _take(pair, i_pair)


def _take(data: OHLCV, rows: np.ndarray) -> OHLCV:
    return OHLCV(data.ts[rows], data.open[rows], data.high[rows], data.low[rows], data.close[rows], data.volume[rows])


def sim_bars(symbols: Sequence[str], timeframe: str, *, start_ms: int, days: int, seed: int = 7) -> dict[str, OHLCV]:
    """``days`` of simulated bars per symbol from ``start_ms`` (00:00 UTC), as the sim feed makes them."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise BacktestDataError(f"days: must be an integer >= 1, got {days!r}")
    if start_ms % DAY_MS:
        raise BacktestDataError(f"start_ms: must be 00:00 UTC of a day, got {start_ms}")
    sim = MarketSim(list(dict.fromkeys(symbols)), seed=seed, origin_ts=start_ms, step_ms=SIM_STEP_MS)
    end = start_ms + days * DAY_MS
    steps = sim.steps(start_ms, end)
    out = {}
    for symbol, rows in steps.items():
        aggregator = BarAggregator(symbol, [timeframe], SIM_STEP_MS)
        out[symbol] = concat_ohlcv([aggregator.add(rows)[timeframe], aggregator.close_until(end)[timeframe]])
    return out
