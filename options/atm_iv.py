"""Implied vol read off a listed option chain: the ATM vol at a target expiry, or the vol at
any (expiry, strike), interpolated in total variance.

Inputs are the chain's columns, one row per listed option: ``expiry_ts`` (int ms),
``strike`` (USD), ``mark_iv`` (decimal, 0.3825; NaN or <= 0 rows are ignored) and ``forward``
(USD, the venue's underlying price for that expiry: Deribit's ``underlying_price``). Times are
int ms, ``now_ts`` is the market time; years are ACT/365 as in black_scholes.

Method (the same for the ATM vol, where the target strike is the forward):
1. Per expiry: the forward is the median of its rows' forwards; the vol of a strike is the
   mean of its call and put ``mark_iv``; the vol at log-moneyness ``x = ln(K / F)`` is linear
   in total variance ``w = iv**2 * T`` between the two listed strikes that bracket ``x``
   (flat beyond the first or last strike). Within one expiry ``T`` is fixed, so the result
   lies between the two neighbouring listed vols.
2. Across expiries: ``w`` is linear in ``T`` between the two listed expiries that bracket the
   target (flat vol before the first and after the last), ``iv = sqrt(w / T)``. The result is
   then a weighted mean of the two expiries' variances, so it lies between their vols too.
Expiries at or before ``now_ts`` are ignored. No usable row: :class:`ImpliedVolError`.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from common.timeframes import DAY_MS
from options.black_scholes import DAYS_PER_YEAR

YEAR_MS = DAY_MS * DAYS_PER_YEAR


class ImpliedVolError(ValueError):
    """The chain cannot give a vol (no live expiry, no finite mark_iv); the message says which."""


def _columns(expiry_ts: ArrayLike, strike: ArrayLike, mark_iv: ArrayLike, forward: ArrayLike,
             now_ts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    columns = (np.asarray(expiry_ts, dtype=np.int64), np.asarray(strike, dtype=np.float64),
               np.asarray(mark_iv, dtype=np.float64), np.asarray(forward, dtype=np.float64))
    size = columns[0].shape
    for name, col in zip(("expiry_ts", "strike", "mark_iv", "forward"), columns):
        if col.ndim != 1 or col.shape != size:
            raise ImpliedVolError(f"{name}: expected a 1-d array of {size[0] if size else 0} rows, "
                                  f"got shape {col.shape}")
    e, k, iv, f = columns
    with np.errstate(invalid="ignore"):
        ok = (e > now_ts) & np.isfinite(k) & (k > 0) & np.isfinite(iv) & (iv > 0) & np.isfinite(f) & (f > 0)
    return e[ok], k[ok], iv[ok], f[ok]


def _smiles(e: np.ndarray, k: np.ndarray, iv: np.ndarray, f: np.ndarray,
           now_ts: int) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Per listed expiry (ascending): its forward and its smile as (log-moneyness, variance)."""
    if e.size == 0:
        raise ImpliedVolError(f"chain: no live expiry after {now_ts} with a finite mark_iv > 0")
    expiries = np.unique(e)
    forwards = np.empty(expiries.size)
    smiles = []
    for i, expiry in enumerate(expiries.tolist()):
        rows = e == expiry
        forwards[i] = float(np.median(f[rows]))
        strikes, where = np.unique(k[rows], return_inverse=True)
        vols = np.bincount(where, weights=iv[rows]) / np.bincount(where)  # mean of call and put
        smiles.append((np.log(strikes / forwards[i]), vols * vols))
    return expiries, forwards, smiles


def _vols_at(smiles: list[tuple[np.ndarray, np.ndarray]], x: float) -> np.ndarray:
    """Each expiry's vol at log-moneyness x: linear in variance between the bracketing strikes,
    flat beyond the listed ones."""
    vols: np.ndarray = np.sqrt(np.array([np.interp(x, xs, variance) for xs, variance in smiles]))
    return vols


def expiry_vols(expiry_ts: ArrayLike, strike: ArrayLike, mark_iv: ArrayLike, forward: ArrayLike, now_ts: int,
                log_moneyness: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per listed expiry (ascending): ``(expiry_ts, forward, vol at log_moneyness)``."""
    expiries, forwards, smiles = _smiles(*_columns(expiry_ts, strike, mark_iv, forward, now_ts), now_ts)
    return expiries, forwards, _vols_at(smiles, log_moneyness)


def term_vol(expiries: np.ndarray, vols: np.ndarray, now_ts: int, target_ts: int) -> float:
    """Vol at ``target_ts`` from per-expiry vols: linear in total variance across time."""
    if target_ts <= now_ts:
        raise ImpliedVolError(f"target_ts {target_ts}: must be after now_ts {now_ts}")
    years = (np.asarray(expiries, dtype=np.float64) - now_ts) / YEAR_MS
    target = (target_ts - now_ts) / YEAR_MS
    if target <= years[0]:
        return float(vols[0])
    if target >= years[-1]:
        return float(vols[-1])
    total_variance = np.interp(target, years, np.asarray(vols) ** 2 * years)
    return math.sqrt(total_variance / target)


def atm_iv_at(expiry_ts: ArrayLike, strike: ArrayLike, mark_iv: ArrayLike, forward: ArrayLike, now_ts: int,
              target_ts: int) -> float:
    """ATM implied vol (decimal) at ``target_ts`` from the listed chain (see the module doc)."""
    expiries, _, vols = expiry_vols(expiry_ts, strike, mark_iv, forward, now_ts)
    return term_vol(expiries, vols, now_ts, target_ts)


def surface_at(expiry_ts: ArrayLike, strike: ArrayLike, mark_iv: ArrayLike, forward: ArrayLike, now_ts: int,
               target_expiry_ts: ArrayLike, target_strike: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(iv, forward)`` at each target (expiry, strike): a contract another venue lists priced
    on this chain's surface (the IBKR/CME proxy). Forwards are linear in time between expiries."""
    expiries, fwd, smiles = _smiles(*_columns(expiry_ts, strike, mark_iv, forward, now_ts), now_ts)
    t_expiry = np.asarray(target_expiry_ts, dtype=np.int64).ravel()
    t_strike = np.asarray(target_strike, dtype=np.float64).ravel()
    if t_expiry.shape != t_strike.shape:
        raise ImpliedVolError(f"targets: {t_expiry.size} expiries for {t_strike.size} strikes")
    out_fwd = np.interp(t_expiry.astype(np.float64), expiries.astype(np.float64), fwd)
    out_iv = np.empty(t_expiry.size)
    for i, (target_ts, target_k) in enumerate(zip(t_expiry.tolist(), t_strike.tolist())):
        out_iv[i] = term_vol(expiries, _vols_at(smiles, math.log(target_k / out_fwd[i])), now_ts, target_ts)
    return out_iv, out_fwd
