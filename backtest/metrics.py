"""Performance numbers of a backtest, each from its textbook formula over the equity curve.

Per-bar returns ``r_t = E_t / E_{t-1} - 1`` with ``E_{-1}`` the starting capital. Annualised
with ``P = 365 days / bar length`` periods a year (crypto trades every day), risk-free rate 0:

- Sharpe  = mean(r) / std(r, ddof=1) * sqrt(P)
- Sortino = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(P)
- CAGR    = (E_end / capital) ** (1 / years) - 1, years = market time spanned / 365 days
- max drawdown = max over t of (peak_t - E_t) / peak_t, peak including the capital;
  its duration is the longest stretch spent below a previous peak (peak bar close to the
  close of the bar that gets back to it, or to the end)
- win rate, profit factor (gross wins / gross losses) over closed round trips
- exposure = share of bars that end holding a position

A ratio whose denominator is 0 (no losses, a flat curve) is None rather than infinity, so the
numbers stay valid JSON.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from common.model import Fill
from common.timeframes import DAY_MS, timeframe_ms

YEAR_MS = 365 * DAY_MS
OBJECTIVES = ("sharpe", "sortino", "return_dd")


def bar_returns(equity: np.ndarray, capital: float) -> np.ndarray:
    """``r_t = E_t / E_{t-1} - 1`` with the capital before the first bar."""
    returns = np.empty(equity.shape[0])
    if returns.size:
        returns[0] = equity[0] / capital
        np.divide(equity[1:], equity[:-1], out=returns[1:])
        returns -= 1.0
    return returns


def sharpe_ratio(returns: np.ndarray, periods_per_year: float) -> float | None:
    return _risk_adjusted(returns, periods_per_year)[0]


def sortino_ratio(returns: np.ndarray, periods_per_year: float) -> float | None:
    return _risk_adjusted(returns, periods_per_year)[1]


def _risk_adjusted(returns: np.ndarray, periods_per_year: float) -> tuple[float | None, float | None]:
    """(Sharpe, Sortino) from one mean and one scratch array: numpy's ``std(ddof=1)`` and
    ``mean(minimum(r, 0) ** 2)``, operation for operation, in half the passes over a long
    curve (each pass over a million returns is a millisecond or two here)."""
    n = returns.size
    if n < 2:
        return None, None
    mean = np.add.reduce(returns) / n
    scratch = returns - mean
    np.multiply(scratch, scratch, out=scratch)
    sd = math.sqrt(float(np.add.reduce(scratch) / (n - 1)))
    np.minimum(returns, 0.0, out=scratch)
    np.multiply(scratch, scratch, out=scratch)
    downside = math.sqrt(float(np.add.reduce(scratch) / n))
    average, annual = float(mean), math.sqrt(periods_per_year)
    return (None if sd == 0 else average / sd * annual), (None if downside == 0 else average / downside * annual)


def running_peak(equity: np.ndarray, capital: float) -> tuple[np.ndarray, np.ndarray]:
    """The capital, then each bar's equity (``values``), and the running maximum of those
    (``peak``): what the drawdown numbers share, computed once for a long curve."""
    values = np.r_[capital, equity]
    return values, np.maximum.accumulate(values)


def drawdown_curve(equity: np.ndarray, capital: float,
                   peaks: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Fraction below the running peak (capital included) at each bar, >= 0; ``peaks`` is
    ``running_peak(equity, capital)`` if the caller has it."""
    peak = (running_peak(equity, capital) if peaks is None else peaks)[1][1:]
    below: np.ndarray = peak - equity
    below /= peak
    return below


def max_drawdown_duration(equity: np.ndarray, close_ts: np.ndarray, capital: float,
                          period_ms: int, peaks: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[int, int]:
    """(bars, ms) of the longest stretch below a previous peak: from the close of the peak bar
    to the close of the bar back at that peak, or to the last bar. The capital is the peak at
    the open of the first bar. ``peaks`` is ``running_peak(equity, capital)`` if the caller has it."""
    values, peak = running_peak(equity, capital) if peaks is None else peaks
    under = values < peak
    if not under.any():
        return 0, 0
    edges = np.diff(np.r_[0, under.astype(np.int8), 0])
    run_first = np.flatnonzero(edges == 1)
    run_last = np.flatnonzero(edges == -1) - 1
    starts = run_first - 1
    ends = np.minimum(run_last + 1, values.size - 1)
    # value k >= 1 is bar k - 1's, at its close; value 0, the capital, at the first bar's open
    spans = close_ts[ends - 1] - np.where(starts > 0, close_ts[np.maximum(starts - 1, 0)], int(close_ts[0]) - period_ms)
    worst = int(np.argmax(spans))
    return int(ends[worst] - starts[worst]), int(spans[worst])


def monthly_returns(equity: np.ndarray, close_ts: np.ndarray, capital: float) -> list[tuple[int, int, float]]:
    """(year, month, return %) per calendar month (UTC) of market time: the month's last
    equity over the previous month's last (the capital before the first month)."""
    months = close_ts.astype("datetime64[ms]").astype("datetime64[M]")
    last = np.r_[np.flatnonzero(months[1:] != months[:-1]), months.size - 1]
    ends = equity[last]
    starts = np.r_[capital, ends[:-1]]
    out = []
    for m, start, end in zip(months[last], starts, ends):
        year, month = int(str(m)[:4]), int(str(m)[5:7])
        out.append((year, month, (float(end) / float(start) - 1.0) * 100.0))
    return out


def round_trips(fills: Sequence[Fill]) -> list[dict[str, Any]]:
    """Entry/exit pairs of a long-only spot book, in order; an open position at the end is
    listed with no exit."""
    trips: list[dict[str, Any]] = []
    entry: Fill | None = None
    for fill in fills:
        if fill.side == "buy":
            entry = fill
            continue
        cost = entry.quantity * entry.price + entry.fee if entry else float("nan")
        trips.append({
            "entry_ts": entry.ts_event if entry else None,
            "entry_price": entry.price if entry else None,
            "exit_ts": fill.ts_event,
            "exit_price": fill.price,
            "exit_kind": fill.kind,
            "quantity": fill.quantity,
            "fees": (entry.fee if entry else 0.0) + fill.fee,
            "pnl": fill.realized_pnl,
            "return_pct": fill.realized_pnl / cost * 100.0 if entry else None,
        })
        entry = None
    if entry is not None:
        trips.append({"entry_ts": entry.ts_event, "entry_price": entry.price, "exit_ts": None, "exit_price": None,
                      "exit_kind": "open", "quantity": entry.quantity, "fees": entry.fee, "pnl": None,
                      "return_pct": None})
    return trips


def performance(equity: np.ndarray, close_ts: np.ndarray, period_ms: int, capital: float,
                closed_pnls: Sequence[float], fees: float, exposed: np.ndarray, fill_count: int) -> dict[str, Any]:
    """Every headline number of one equity curve (aligned with ``close_ts``, bar close times)."""
    if equity.size == 0:
        raise ValueError("performance: the equity curve is empty")
    periods_per_year = YEAR_MS / period_ms
    sharpe, sortino = _risk_adjusted(bar_returns(equity, capital), periods_per_year)
    final = float(equity[-1])
    years = (int(close_ts[-1]) - int(close_ts[0]) + period_ms) / YEAR_MS
    total = final / capital - 1.0
    cagr = (final / capital) ** (1.0 / years) - 1.0 if final > 0 else -1.0
    peaks = running_peak(equity, capital)
    max_dd = float(np.max(drawdown_curve(equity, capital, peaks)))
    dd_bars, dd_ms = max_drawdown_duration(equity, close_ts, capital, period_ms, peaks)
    pnls = np.asarray(closed_pnls, dtype=np.float64)
    gains, losses = float(pnls[pnls > 0].sum()), float(-pnls[pnls < 0].sum())
    return {
        "bars": int(equity.size),
        "start_ts": int(close_ts[0]) - period_ms,
        "end_ts": int(close_ts[-1]),
        "capital": float(capital),
        "final_equity": final,
        "total_return_pct": total * 100.0,
        "cagr_pct": cagr * 100.0,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown_pct": max_dd * 100.0,
        "max_drawdown_duration_bars": dd_bars,
        "max_drawdown_duration_days": dd_ms / DAY_MS,
        "return_over_max_dd": None if max_dd == 0 else total / max_dd,
        "trades": int(pnls.size),
        "win_rate_pct": None if pnls.size == 0 else float(np.mean(pnls > 0)) * 100.0,
        "profit_factor": None if losses == 0 else gains / losses,
        "exposure_pct": float(np.mean(exposed)) * 100.0,
        "fills": int(fill_count),
        "fees": float(fees),
    }


def spot_metrics(result: Any) -> dict[str, Any]:
    """``performance`` of a spot ``BacktestResult``: round trips are its closing fills."""
    period = timeframe_ms(result.timeframe)
    closes = [f.realized_pnl for f in result.fills if f.side == "sell"]
    return performance(result.equity, result.data.ts + period, period, result.capital, closes,
                       sum(f.fee for f in result.fills), result.position > 0, len(result.fills))


def objective_value(metrics: dict[str, Any], objective: str) -> float:
    """The number an optimizer maximises; a missing ratio (no trades, flat curve) ranks last."""
    key = {"sharpe": "sharpe", "sortino": "sortino", "return_dd": "return_over_max_dd"}.get(objective)
    if key is None:
        raise ValueError(f"objective: must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    value = metrics.get(key)
    return float("-inf") if value is None or not math.isfinite(value) else float(value)
