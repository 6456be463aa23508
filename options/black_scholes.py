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

The normal CDF is scipy's compiled ``ndtr`` (options/normal_ufuncs.py), imported on the first
price: only the processes that price (the pricer, the backtester) pay for it; the signals
engine, which imports this module for the chain's types, never loads scipy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

DAYS_PER_YEAR = 365.0
_INV_SQRT_2PI = 0.3989422804014327
# Implied vol: Householder steps of order 4 from a closed-form start (see implied_vol); a row
# still moving after _IV_STEPS steps is not a number anyone should trade on, so it is NaN.
_IV_STEPS = 8
_IV_DONE_STEP = 1e-5  # a Newton step under this share of w: the next w is exact (order four)
_IV_PRICE_ULPS = 4.0  # or when it reprices the target to a few units of the last place


class PricingInputError(ValueError):
    """Arguments that cannot be priced at all: shapes that do not broadcast, non-bool flags."""


@dataclass(frozen=True, slots=True)
class Greeks:
    """Sensitivities of one option per coin of underlying, in trader units.

    delta: d price / d S.  gamma: d delta / d S.  theta: price change per calendar DAY
    (d price / d T divided by 365, negative for a long option).  vega: price change per one
    vol point (0.01 of sigma).  rho: price change per one percentage point of r (0.01).
    """

    delta: Any
    gamma: Any
    theta: Any
    vega: Any
    rho: Any


def _ndtr(x: np.ndarray) -> np.ndarray:
    from options.normal_ufuncs import ndtr  # the first call pays the import; see the module docstring

    cdf: np.ndarray = ndtr(x)
    return cdf


def _ndtri(p: np.ndarray) -> np.ndarray:
    from options.normal_ufuncs import ndtri

    quantile: np.ndarray = ndtri(p)
    return quantile


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


def _scalar_or_array(x: np.ndarray) -> Any:
    return x[()] if x.ndim == 0 else x


def _d1_d2(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray,
           sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """d1, d2 and total volatility; with zero total volatility d1 = d2 = +-inf (0 at the money)."""
    v = sigma * np.sqrt(T)
    log_moneyness = np.log(S / K) + r * T
    d1 = log_moneyness / v + 0.5 * v
    flat = ~(v > 0)
    if flat.any():  # rare: expiry or zero vol; the sign of the forward's moneyness decides
        d1 = np.where(flat, np.sign(log_moneyness) * np.inf, d1)
        d1[flat & (log_moneyness == 0)] = 0.0
    return d1, d1 - v, v


def _valid(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    finite = np.isfinite(S) & np.isfinite(K) & np.isfinite(T) & np.isfinite(r) & np.isfinite(sigma)
    valid: np.ndarray = finite & (S > 0) & (K > 0) & (T >= 0) & (sigma >= 0)
    return valid


@dataclass(frozen=True, slots=True)
class _Terms:
    """What price and greeks share: one d1/d2, one discount, one CDF pair per row.

    ``sign`` is +1 for a call and -1 for a put, so both rights evaluate N(sign d1) and
    N(sign d2) once each: no row computes the branch it does not use.
    """

    d1: np.ndarray
    v: np.ndarray
    kdf: np.ndarray
    sign: np.ndarray
    n1: np.ndarray
    n2: np.ndarray
    price: np.ndarray
    ok: np.ndarray


def _terms(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, sigma: np.ndarray,
           is_call: np.ndarray) -> _Terms:
    d1, d2, v = _d1_d2(S, K, T, r, sigma)
    kdf = K * np.exp(-r * T)
    sign = np.where(is_call, 1.0, -1.0)
    n1 = _ndtr(sign * d1)
    n2 = _ndtr(sign * d2)
    # Rounding can leave a deep-ITM price a hair below its lower bound; clamp to it.
    price = np.maximum(sign * (S * n1 - kdf * n2), np.maximum(sign * (S - kdf), 0.0))
    ok = _valid(S, K, T, r, sigma)
    return _Terms(d1, v, kdf, sign, n1, n2, np.where(ok, price, np.nan), ok)


def _greeks(t: _Terms, S: np.ndarray, T: np.ndarray, r: np.ndarray, sigma: np.ndarray) -> Greeks:
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * t.d1 * t.d1)
    sqrt_t = np.sqrt(T)
    n_d2 = t.sign * t.n2
    gamma = np.where(t.v > 0, pdf / (S * t.v), np.where(pdf > 0, np.inf, 0.0))
    decay = np.where(pdf > 0, -S * pdf * sigma / (2.0 * sqrt_t), 0.0)
    greeks = (t.sign * t.n1, gamma, (decay - r * t.kdf * n_d2) / DAYS_PER_YEAR,
              S * pdf * sqrt_t * 0.01, t.kdf * T * n_d2 * 0.01)
    return Greeks(*(_scalar_or_array(np.where(t.ok, g, np.nan)) for g in greeks))


def bs_price(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
             is_call: ArrayLike) -> Any:
    """Black-Scholes (European, no dividends) price, in the currency of S and K."""
    args = _broadcast(S, K, T, r, sigma, is_call, ("S", "K", "T", "r", "sigma", "is_call"))
    with np.errstate(all="ignore"):
        return _scalar_or_array(_terms(*args).price)


def bs_greeks(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
              is_call: ArrayLike) -> Greeks:
    """Delta, gamma, theta (per day), vega (per vol point) and rho (per 1% of r).

    At zero total volatility (T == 0 or sigma == 0) delta is the step 0/+-1 (1/2 exactly at
    the forward), gamma is 0 away from the strike and +inf exactly at it, theta keeps only
    the carry term away from the strike.
    """
    return bs_price_greeks(S, K, T, r, sigma, is_call)[1]


def bs_price_greeks(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
                    is_call: ArrayLike) -> tuple[Any, Greeks]:
    """Price and greeks from one evaluation of d1, d2 and the CDF: what a chain or a mark needs."""
    S, K, T, r, sigma, is_call = _broadcast(S, K, T, r, sigma, is_call,
                                            ("S", "K", "T", "r", "sigma", "is_call"))
    with np.errstate(all="ignore"):
        terms = _terms(S, K, T, r, sigma, is_call)
        return _scalar_or_array(terms.price), _greeks(terms, S, T, r, sigma)


def implied_vol(price: ArrayLike, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike,
                is_call: ArrayLike) -> Any:
    """Volatility that reprices each option, or NaN where no volatility does.

    NaN where the price is below the no-arbitrage lower bound (discounted intrinsic of the
    forward), at or above the upper bound (S for a call, K e^-rT for a put), where T <= 0,
    or where an input is invalid. A price exactly at the lower bound gives 0.

    Method (after Jaeckel, "Let's Be Rational"): the price becomes the time value of the
    out-of-the-money option in normalised Black form b(w), with total volatility
    w = sigma sqrt(T) and x = -|ln(F/K)|. b is convex below its inflection point
    w_c = sqrt(2|x|) and concave above it. Above, order-4 Householder steps run on
    b(w) - b* from the large-w asymptote b ~ e^(x/2) - 2 cosh(x/2) N(-w/2) (exact at the
    money); below, on ln b(w) - ln b* (nearly linear there) from the small-w asymptote
    ln b ~ -x^2 / (2 w^2) or the at-the-money start, whichever misses b* less. Each side is
    solved as a block of its own (no row evaluates the other side's objective), and a row
    stops at the step that was small enough to leave it exact, not one step later: two or
    three steps reach machine precision on almost every row, with no bracket and no bisection.
    """
    price, S, K, T, r, is_call = _broadcast(price, S, K, T, r, is_call,
                                            ("price", "S", "K", "T", "r", "is_call"))
    with np.errstate(all="ignore"):
        sigma = _implied_vol(price, S, K, T, r, is_call)
    return _scalar_or_array(sigma)


def _normalised_otm(w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """b(w) and db/dw of the out-of-the-money option in normalised Black form (x <= 0)."""
    d1 = x / w + 0.5 * w
    half = np.exp(0.5 * x)
    b = half * _ndtr(d1) - _ndtr(d1 - w) / half
    return b, half * _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)


@dataclass(slots=True)
class _Rows:
    """The rows of one objective still being solved. ``on_log``: solve ln b(w) = ln b* (below
    the inflection point, where ln b is nearly linear in w), else b(w) = b*. ``at``: each
    row's place among the rows being solved."""

    w: np.ndarray
    x: np.ndarray
    target: np.ndarray
    at: np.ndarray
    on_log: bool

    def keep(self, rows: np.ndarray) -> None:
        self.w, self.x, self.target, self.at = self.w[rows], self.x[rows], self.target[rows], self.at[rows]


def _householder_step(rows: _Rows) -> tuple[np.ndarray, np.ndarray]:
    """One order-4 Householder step from ``rows.w``: the new w, and whether the row is done.

    With f the objective, n = -f/f' the Newton step, h2 = f''/f' and h3 = f'''/f', the step is
    n (1 + h2 n / 2) / (1 + n (h2 + h3 n / 6)). For b: b''/b' = x^2/w^3 - w/4 and
    b'''/b' = (b''/b')^2 - 3 x^2/w^4 - 1/4; for ln b they follow with q = b'/b.

    A row is done when w already reprices b* to rounding (w is kept: no step can do better),
    or when its Newton step was under _IV_DONE_STEP of w: the steps converge with order four,
    so the new w is exact to rounding, and one more step to confirm it would not move it.
    """
    w, x, target = rows.w, rows.x, rows.target
    b, b1 = _normalised_otm(w, x)
    xx_w3 = x * x / (w * w * w)
    a2 = xx_w3 - 0.25 * w
    a3 = a2 * a2 - 3.0 * xx_w3 / w - 0.25
    if rows.on_log:
        q = b1 / b
        newton = -np.log(b / target) / q
        h2 = a2 - q
        h3 = a3 - q * (3.0 * a2 - 2.0 * q)
    else:
        newton, h2, h3 = (target - b) / b1, a2, a3
    step = newton * (1.0 + 0.5 * h2 * newton) / (1.0 + newton * (h2 + h3 * newton / 6.0))
    nxt = w + np.where(np.isfinite(step), step, newton)
    exact = np.abs(b - target) <= _IV_PRICE_ULPS * np.finfo(float).eps * target
    nxt = np.where(exact, w, np.where(nxt > 0, nxt, 0.5 * w))  # never leave the domain: halve towards zero
    return nxt, exact | (np.abs(newton) <= _IV_DONE_STEP * w)


def _implied_vol(price: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray,
                 is_call: np.ndarray) -> np.ndarray:
    out = np.full(price.shape, np.nan)
    kdf = K * np.exp(-r * T)
    forward_intrinsic = S - kdf
    intrinsic = np.where(is_call, np.maximum(forward_intrinsic, 0.0), np.maximum(-forward_intrinsic, 0.0))
    upper = np.where(forward_intrinsic < 0, S, kdf)
    time_value = price - intrinsic
    ok = (_valid(S, K, T, r, np.zeros_like(S)) & (T > 0) & np.isfinite(price)
          & (time_value >= 0) & (time_value < upper))
    out[ok & (time_value == 0)] = 0.0
    idx = np.flatnonzero(ok & (time_value > 0))
    if idx.size == 0:
        return out
    S, kdf, T = S.flat[idx], kdf.flat[idx], T.flat[idx]
    x = -np.abs(np.log(S / kdf))  # ln(F/K) of the out-of-the-money side, seen as a call
    target = time_value.flat[idx] / np.sqrt(S * kdf)  # = undiscounted time value / sqrt(F K)
    w_c = np.sqrt(2.0 * np.abs(x))
    half = np.exp(0.5 * x)
    lower = target < 0.5 * half - _ndtr(-w_c) / half  # below b(w_c), where d1 = 0
    w_high = -2.0 * _ndtri((half - target) / (half + 1.0 / half))
    w = np.maximum(w_high, w_c)
    low = np.flatnonzero(lower)
    if low.size:  # the tail asymptote far from the money, the at-the-money one near it: the closer
        xl, tl, cl = x[low], target[low], w_c[low]
        tail = np.minimum(np.abs(xl) / np.sqrt(-2.0 * np.log(tl)), cl)
        near = np.minimum(w_high[low], cl)
        miss = [np.abs(np.log(_normalised_otm(g, xl)[0] / tl)) for g in (tail, near)]
        w[low] = np.where(miss[0] <= miss[1], tail, near)
    solved = np.full(idx.size, np.nan)  # a row still moving after _IV_STEPS steps stays NaN
    for on_log in (True, False):
        part = np.flatnonzero(lower == on_log)
        rows = _Rows(w[part], x[part], target[part], part, on_log)
        for _ in range(_IV_STEPS):
            if rows.at.size == 0:
                break
            rows.w, done = _householder_step(rows)
            solved[rows.at[done]] = rows.w[done]
            rows.keep(np.flatnonzero(~done))
    out.flat[idx] = solved / np.sqrt(T)
    return out
