"""Black-Scholes prices, greeks and implied volatility, vectorized over numpy arrays.

One argument order everywhere: ``(S, K, T, r, sigma, is_call)``.

- ``S`` spot (or index) price, ``K`` strike, both in the same currency (USD per coin here).
- ``T`` time to expiry in years, ACT/365 (``ms / 86_400_000 / 365``).
- ``r`` continuously compounded risk-free rate, decimal (0.05 = 5%).
- ``sigma`` annualized volatility, decimal (0.60 = 60%).
- ``is_call`` a bool or a bool array; strings such as 'c'/'p' are refused.

Inputs broadcast like numpy arithmetic; scalar inputs give numpy scalars back. Inputs that
price nothing (S <= 0, K <= 0, T < 0, sigma < 0, NaN) give NaN, never an exception; only
shapes that cannot broadcast and a non-bool ``is_call`` raise :class:`PricingInputError`.
``T == 0`` or ``sigma == 0`` give the discounted intrinsic value of the forward, so a chain
near expiry stays finite. No numpy warnings escape (every computation runs under errstate).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from options.normal import norm_cdf as ndtr


DAYS_PER_YEAR = 365.0
_INV_SQRT_2PI = 0.3989422804014327
# Implied-vol solver: the starting bracket is [0, _SIGMA_HI]; it grows by 4x (up to
# _SIGMA_CAP) for the rare price that needs a larger volatility.
_SIGMA_HI = 8.0
_SIGMA_CAP = 1e4
_IV_MAX_ITER = 100
_IV_SIGMA_TOL = 1e-12


class PricingInputError(ValueError):
    """Arguments that cannot be priced at all: shapes that do not broadcast, non-bool flags."""


@dataclass(frozen=True, slots=True)
class Greeks:
    """Sensitivities of one option per coin of underlying, in trader units.

    delta: d price / d S.  gamma: d delta / d S.  theta: price change per calendar DAY
    (d price / d T divided by 365, negative for a long option).  vega: price change per one
    vol point (0.01 of sigma).  rho: price change per one percentage point of r (0.01).
    """

    delta: np.ndarray
    gamma: np.ndarray
    theta: np.ndarray
    vega: np.ndarray
    rho: np.ndarray


def _broadcast(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
               is_call: ArrayLike, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    flag = np.asarray(is_call)
    if flag.dtype != np.bool_:
        raise PricingInputError(
            f"is_call: expected bool or bool array, got dtype {flag.dtype} ({np.ravel(flag)[:3]!r}...)"
        )
    floats = [np.asarray(x, dtype=np.float64) for x in (S, K, T, r, sigma)]
    try:
        arrays = np.broadcast_arrays(*floats, flag)
    except ValueError:
        shapes = ", ".join(f"{n}{a.shape}" for n, a in zip(names, [*floats, flag]))
        raise PricingInputError(f"argument shapes do not broadcast: {shapes}") from None
    return tuple(arrays)


def _scalar_or_array(x: np.ndarray) -> np.ndarray:
    return x[()] if x.ndim == 0 else x


def _d1_d2(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, sigma: np.ndarray):
    """d1, d2 and total volatility; with zero total volatility d1 = d2 = +-inf (0 at the money)."""
    v = sigma * np.sqrt(T)
    log_moneyness = np.log(S / K) + r * T
    degenerate = np.where(log_moneyness > 0, np.inf, np.where(log_moneyness < 0, -np.inf, 0.0))
    d1 = np.where(v > 0, log_moneyness / np.where(v > 0, v, 1.0) + 0.5 * v, degenerate)
    return d1, d1 - v, v


def _valid(S, K, T, r, sigma) -> np.ndarray:
    finite = np.isfinite(S) & np.isfinite(K) & np.isfinite(T) & np.isfinite(r) & np.isfinite(sigma)
    return finite & (S > 0) & (K > 0) & (T >= 0) & (sigma >= 0)


def _price(S, K, T, r, sigma, is_call) -> np.ndarray:
    """Price on already-broadcast float arrays; invalid rows come out NaN."""
    d1, d2, _ = _d1_d2(S, K, T, r, sigma)
    df = np.exp(-r * T)
    call = S * ndtr(d1) - K * df * ndtr(d2)
    put = K * df * ndtr(-d2) - S * ndtr(-d1)
    price = np.where(is_call, call, put)
    # Rounding can leave a deep-ITM price a hair below its lower bound; clamp to it.
    lower = np.where(is_call, np.maximum(S - K * df, 0.0), np.maximum(K * df - S, 0.0))
    return np.where(_valid(S, K, T, r, sigma), np.maximum(price, lower), np.nan)


def bs_price(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
             is_call: ArrayLike) -> np.ndarray:
    """Black-Scholes (European, no dividends) price, in the currency of S and K."""
    args = _broadcast(S, K, T, r, sigma, is_call, ("S", "K", "T", "r", "sigma", "is_call"))
    with np.errstate(all="ignore"):
        return _scalar_or_array(_price(*args))


def bs_greeks(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
              is_call: ArrayLike) -> Greeks:
    """Delta, gamma, theta (per day), vega (per vol point) and rho (per 1% of r).

    At zero total volatility (T == 0 or sigma == 0) delta is the step 0/+-1 (1/2 exactly at
    the forward), gamma is 0 away from the strike and +inf exactly at it, theta keeps only
    the carry term away from the strike.
    """
    S, K, T, r, sigma, is_call = _broadcast(S, K, T, r, sigma, is_call,
                                            ("S", "K", "T", "r", "sigma", "is_call"))
    with np.errstate(all="ignore"):
        d1, d2, v = _d1_d2(S, K, T, r, sigma)
        df = np.exp(-r * T)
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
        sqrt_t = np.sqrt(T)
        n_d2 = np.where(is_call, ndtr(d2), -ndtr(-d2))
        delta = np.where(is_call, ndtr(d1), -ndtr(-d1))
        gamma = np.where(v > 0, pdf / (S * v), np.where(pdf > 0, np.inf, 0.0))
        decay = np.where(pdf > 0, -S * pdf * sigma / (2.0 * sqrt_t), 0.0)
        theta = (decay - r * K * df * n_d2) / DAYS_PER_YEAR
        vega = S * pdf * sqrt_t * 0.01
        rho = K * T * df * n_d2 * 0.01
        ok = _valid(S, K, T, r, sigma)
        out = [_scalar_or_array(np.where(ok, g, np.nan)) for g in (delta, gamma, theta, vega, rho)]
    return Greeks(*out)


def implied_vol(price: ArrayLike, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike,
                is_call: ArrayLike) -> np.ndarray:
    """Volatility that reprices each option, or NaN where no volatility does.

    NaN where the price is below the no-arbitrage lower bound (discounted intrinsic of the
    forward), at or above the upper bound (S for a call, K e^-rT for a put), where T <= 0,
    or where an input is invalid. A price exactly at the lower bound gives 0.

    Method: the price is turned into the time value of the out-of-the-money option (by
    put-call parity), then a safeguarded Newton iteration runs on every row at once: each
    step keeps a bracket [lo, hi] with price(lo) <= target <= price(hi); a Newton step that
    leaves the bracket, or a vanishing vega, is replaced by bisection, so every row
    converges. The start is Manaster-Koehler's sigma = sqrt(2|ln(F/K)|/T), the inflection
    point of price(sigma), from which plain Newton is already monotone.
    """
    price, S, K, T, r, is_call = _broadcast(price, S, K, T, r, is_call,
                                            ("price", "S", "K", "T", "r", "is_call"))
    with np.errstate(all="ignore"):
        sigma = _implied_vol(price, S, K, T, r, is_call)
    return _scalar_or_array(sigma)


def _implied_vol(price, S, K, T, r, is_call) -> np.ndarray:
    out = np.full(price.shape, np.nan)
    df = np.exp(-r * T)
    forward_intrinsic = S - K * df
    intrinsic = np.where(is_call, np.maximum(forward_intrinsic, 0.0), np.maximum(-forward_intrinsic, 0.0))
    otm_is_call = forward_intrinsic < 0
    upper = np.where(otm_is_call, S, K * df)
    time_value = price - intrinsic
    ok = (_valid(S, K, T, r, np.zeros_like(S)) & (T > 0) & np.isfinite(price)
          & (time_value >= 0) & (time_value < upper))
    out[ok & (time_value == 0)] = 0.0
    idx = np.flatnonzero(ok & (time_value > 0))
    if idx.size == 0:
        return out
    S, K, T, r = S.flat[idx], K.flat[idx], T.flat[idx], r.flat[idx]
    target, otm_is_call = time_value.flat[idx], otm_is_call.flat[idx]

    lo = np.zeros(idx.size)
    hi = np.full(idx.size, _SIGMA_HI)
    short = _price(S, K, T, r, hi, otm_is_call) < target
    while short.any() and hi[short][0] < _SIGMA_CAP:
        hi[short] *= 4.0
        short &= _price(S, K, T, r, hi, otm_is_call) < target
    sigma = np.clip(np.sqrt(2.0 * np.abs(np.log(S / K) + r * T) / T), 0.05, 0.5 * hi)

    active = np.arange(idx.size)
    for _ in range(_IV_MAX_ITER):
        s, k, t, rr, c = S[active], K[active], T[active], r[active], otm_is_call[active]
        sig = sigma[active]
        d1, d2, v = _d1_d2(s, k, t, rr, sig)
        vega = s * _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1) * np.sqrt(t)
        model = _price(s, k, t, rr, sig, c)
        diff = model - target[active]
        a_lo = np.where(diff < 0, sig, lo[active])
        a_hi = np.where(diff > 0, sig, hi[active])
        lo[active], hi[active] = a_lo, a_hi
        newton = sig - diff / vega
        inside = (newton > a_lo) & (newton < a_hi) & (vega > 0) & np.isfinite(newton)
        nxt = np.where(inside, newton, 0.5 * (a_lo + a_hi))
        sigma[active] = nxt
        step_small = np.abs(nxt - sig) <= _IV_SIGMA_TOL * np.maximum(sig, 1.0)
        done = (diff == 0) | step_small | (a_hi - a_lo <= _IV_SIGMA_TOL)
        active = active[~done]
        if active.size == 0:
            break
    sigma[active] = np.nan
    sigma[short] = np.nan
    out.flat[idx] = sigma
    return out
