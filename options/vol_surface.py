"""A simple volatility smile, a seeded ATM implied-vol path for the sim market, and IV rank.

Smile: ``iv(K) = atm_iv * (1 + skew * m + curvature * m**2)`` with ``m = ln(K / F)``, floored.
The defaults (skew -0.2, curvature 0.6) give crypto's usual put skew: 20% below the forward
(m = -0.22) is about +6.5% of ATM vol, 20% above (m = +0.18) about -1.6%.

ATM path: an Ornstein-Uhlenbeck process in log-IV, stepped exactly between the given
timestamps, so any prefix of ``ts`` gives the same prefix of the path and a restarted
service that replays the same timestamps regenerates the same IVs.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from common.timeframes import DAY_MS

DEFAULT_SKEW = -0.2
DEFAULT_CURVATURE = 0.6
DEFAULT_IV_FLOOR = 0.05
# Log-IV OU: half-life 3 days; stationary sd 0.25 in log-IV (base 50% spends most of its
# time between ~30% and ~80%), enough for IV rank to cross 25 and 75 within 3-4 weeks.
DEFAULT_HALF_LIFE_DAYS = 3.0
DEFAULT_LOG_IV_SD = 0.25


class VolSurfaceError(ValueError):
    """Bad smile or path parameters; the message names the parameter."""


def smile_iv(atm_iv: ArrayLike, strike: ArrayLike, forward: ArrayLike, skew: float = DEFAULT_SKEW,
             curvature: float = DEFAULT_CURVATURE, floor: float = DEFAULT_IV_FLOOR) -> np.ndarray:
    """Implied vol per strike from the ATM vol; never below ``floor``."""
    with np.errstate(all="ignore"):
        m = np.log(np.asarray(strike, dtype=np.float64) / np.asarray(forward, dtype=np.float64))
        return np.maximum(np.asarray(atm_iv, dtype=np.float64) * (1.0 + skew * m + curvature * m * m), floor)


def simulate_atm_iv(seed: int, ts: np.ndarray, base_iv: float, half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
                    log_iv_sd: float = DEFAULT_LOG_IV_SD, long_run_iv: float | None = None) -> np.ndarray:
    """ATM implied vol at each ts (int ms, non-decreasing), starting at base_iv.

    log IV reverts to log(long_run_iv) (default base_iv) with the given half-life; its
    stationary standard deviation is log_iv_sd. Same seed and same ts prefix, same values.
    """
    ts = np.asarray(ts)
    if ts.ndim != 1 or not np.issubdtype(ts.dtype, np.integer):
        raise VolSurfaceError(f"ts: expected a 1-d array of int ms, got dtype {ts.dtype} shape {ts.shape}")
    if ts.size > 1 and np.any(np.diff(ts) < 0):
        bad = int(np.flatnonzero(np.diff(ts) < 0)[0]) + 1
        raise VolSurfaceError(f"ts[{bad}]: timestamps must not decrease ({ts[bad - 1]} -> {ts[bad]})")
    for name, value in (("base_iv", base_iv), ("half_life_days", half_life_days), ("log_iv_sd", log_iv_sd)):
        if not (math.isfinite(value) and value > 0):
            raise VolSurfaceError(f"{name}: must be a finite number > 0, got {value!r}")
    mean = math.log(base_iv if long_run_iv is None else long_run_iv)
    kappa = math.log(2.0) / half_life_days
    dt = np.diff(ts.astype(np.float64)) / DAY_MS
    decay = np.exp(-kappa * dt)
    noise = log_iv_sd * np.sqrt(1.0 - decay * decay) * np.random.default_rng(seed).standard_normal(dt.size)
    log_iv = np.empty(ts.size)
    if ts.size == 0:
        return log_iv
    x = math.log(base_iv)
    log_iv[0] = x
    for i in range(dt.size):
        x = mean + (x - mean) * decay[i] + noise[i]
        log_iv[i + 1] = x
    return np.exp(log_iv)


def iv_rank(iv_history: ArrayLike, current: float) -> float:
    """Where current sits in the range of history and current, 0..100; 50 when flat or unknown.

    NaNs in the history are ignored; a NaN current, or no finite value at all, gives 50 (no view).
    """
    values = np.asarray(iv_history, dtype=np.float64).ravel()
    if not math.isfinite(current):
        return 50.0
    values = np.append(values[np.isfinite(values)], current)
    low, high = float(values.min()), float(values.max())
    if high - low <= 0:
        return 50.0
    return (current - low) / (high - low) * 100.0
