"""Option math throughput on a 10,000-option chain, each figure beside a reference run in the same process.

- Price with greeks (``bs_price_greeks``, what a chain and a mark need) against a plain
  numpy + ``scipy.special.ndtr`` kernel that computes the same five numbers and the price the
  obvious way (both rights, then ``np.where``). Target: >= 50% of the kernel's rate.
- Implied vol (``implied_vol``) against scipy's ``brentq`` on the textbook formula, with the
  bracket [BRENTQ_LO, BRENTQ_HI] that covers the chain's vols (5%..300%) and the same xtol
  as our solver's precision: a wider bracket would slow brentq and flatter the ratio.
  Targets: >= 1M options/s and >= 15x brentq.
- Where vollib is installed (``pip install -e .[bench]``), Jaeckel's own "Let's Be Rational"
  (vollib, one option per call) on the same sample: the accuracy reference for the method.
  py_vollib_vectorized 0.1.1 does not compile under numba 0.68 with numpy 2, so it is not used.

Run: ``python -m bench.bench_greeks [--quick]`` from the repo root. Quick mode times 3 runs
instead of 7 and 200 reference options instead of 500.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr

from bench.harness import Row, verdict
from options.black_scholes import bs_greeks, bs_price, bs_price_greeks, implied_vol

N_OPTIONS = 10_000
N_REFERENCE = 500
RUNS = 7
QUICK_REFERENCE = 200
QUICK_RUNS = 3
GREEKS_OF_KERNEL_TARGET = 0.5
IV_TARGET = 1_000_000
IV_VS_BRENTQ_TARGET = 15.0
BRENTQ_LO, BRENTQ_HI = 1e-3, 5.0
BRENTQ_XTOL = 1e-12


def _chain(seed: int = 0) -> tuple[np.ndarray, ...]:
    """A BTC-like chain: strikes 0.5..2 x spot, 1 day..2 years, vols 5%..300%, calls and puts."""
    rng = np.random.default_rng(seed)
    S = np.full(N_OPTIONS, 90_000.0)
    K = S * rng.uniform(0.5, 2.0, N_OPTIONS)
    T = rng.uniform(1.0, 730.0, N_OPTIONS) / 365.0
    sigma = rng.uniform(0.05, 3.0, N_OPTIONS)
    is_call = rng.random(N_OPTIONS) < 0.5
    return S, K, T, np.full(N_OPTIONS, 0.02), sigma, is_call


def ndtr_kernel(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, sigma: np.ndarray,
                is_call: np.ndarray) -> tuple[np.ndarray, ...]:
    """The reference: price, delta, gamma, theta, vega, rho written plainly with numpy and ndtr."""
    sqrt_t = np.sqrt(T)
    v = sigma * sqrt_t
    d1 = (np.log(S / K) + r * T) / v + 0.5 * v
    d2 = d1 - v
    df = np.exp(-r * T)
    pdf = np.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi)
    call = S * ndtr(d1) - K * df * ndtr(d2)
    put = K * df * ndtr(-d2) - S * ndtr(-d1)
    n_d2 = np.where(is_call, ndtr(d2), -ndtr(-d2))
    delta = np.where(is_call, ndtr(d1), ndtr(d1) - 1.0)
    gamma = pdf / (S * v)
    theta = (-S * pdf * sigma / (2 * sqrt_t) - r * K * df * n_d2) / 365.0
    return np.where(is_call, call, put), delta, gamma, theta, S * pdf * sqrt_t * 0.01, K * T * df * n_d2 * 0.01


def _median_seconds(fn: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _scalar_price(S: float, K: float, T: float, r: float, sigma: float, is_call: bool) -> float:
    """Plain-math price for the reference solver (numpy per call would be unfairly slow)."""
    def N(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))
    v = sigma * math.sqrt(T)
    d1 = (math.log(S / K) + r * T) / v + 0.5 * v
    df = math.exp(-r * T)
    if is_call:
        return S * N(d1) - K * df * N(d1 - v)
    return K * df * N(v - d1) - S * N(-d1)


def _brentq_iv(price: float, S: float, K: float, T: float, r: float, is_call: bool) -> float:
    f = lambda s: _scalar_price(S, K, T, r, s, is_call) - price  # noqa: E731
    return brentq(f, BRENTQ_LO, BRENTQ_HI, xtol=BRENTQ_XTOL)


def _vollib_rate(args: list[tuple[float, ...]]) -> tuple[float, list[float]] | None:
    """Options/s and answers of vollib's Let's Be Rational, or None when it is not installed."""
    try:
        from vollib.black_scholes.implied_volatility import implied_volatility
    except ImportError:
        return None
    start = time.perf_counter()
    out = [implied_volatility(p, s, k, t, r, "c" if c else "p") for p, s, k, t, r, c in args]
    return len(args) / (time.perf_counter() - start), out


def run(quick: bool = False) -> dict[str, Any]:
    runs, reference = (QUICK_RUNS, QUICK_REFERENCE) if quick else (RUNS, N_REFERENCE)
    S, K, T, r, sigma, is_call = _chain()
    ours_s = _median_seconds(lambda: bs_price_greeks(S, K, T, r, sigma, is_call), runs)
    kernel_s = _median_seconds(lambda: ndtr_kernel(S, K, T, r, sigma, is_call), runs)
    kernel = ndtr_kernel(S, K, T, r, sigma, is_call)
    price, greeks = bs_price_greeks(S, K, T, r, sigma, is_call)
    kernel_diff = max(float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1.0)))
                      for ours, ref in zip((price, greeks.delta, greeks.gamma, greeks.theta, greeks.vega, greeks.rho),
                                           kernel))
    iv_s = _median_seconds(lambda: implied_vol(price, S, K, T, r, is_call), runs)
    iv = implied_vol(price, S, K, T, r, is_call)
    solvable = np.isfinite(iv)
    repriced = bs_price(S, K, T, r, np.where(solvable, iv, 0.1), is_call)
    priced = solvable & (price > 0)
    reprice_err = float(np.max(np.abs(repriced - price)[priced] / price[priced]))

    sample = np.flatnonzero(solvable)[:reference]
    args = [(float(price[i]), float(S[i]), float(K[i]), float(T[i]), float(r[i]), bool(is_call[i])) for i in sample]
    start = time.perf_counter()
    ref = np.asarray([_brentq_iv(*a) for a in args])
    brentq_s = time.perf_counter() - start
    vega = bs_greeks(S[sample], K[sample], T[sample], r[sample], sigma[sample], is_call[sample]).vega
    meaningful = vega > 1e-2  # USD per vol point on a 90k underlying
    iv_rate = N_OPTIONS / iv_s
    brentq_rate = sample.size / brentq_s
    result = {
        "options": N_OPTIONS,
        "runs": runs,
        "reference_options": int(sample.size),
        "price_greeks_options_per_s": N_OPTIONS / ours_s,
        "kernel_options_per_s": N_OPTIONS / kernel_s,
        "price_greeks_of_kernel": kernel_s / ours_s,
        "price_greeks_max_rel_diff_vs_kernel": kernel_diff,
        "iv_options_per_s": iv_rate,
        "iv_solved_fraction": float(solvable.mean()),
        "iv_max_rel_reprice_error": reprice_err,
        "brentq_options_per_s": brentq_rate,
        "iv_speedup_vs_brentq": iv_rate / brentq_rate,
        "iv_max_abs_diff_vs_brentq": float(np.max(np.abs(ref[meaningful] - iv[sample][meaningful]))),
    }
    lbr = _vollib_rate(args)
    if lbr is not None:
        rate, answers = lbr
        result["vollib_options_per_s"] = rate
        result["iv_speedup_vs_vollib"] = iv_rate / rate
        result["iv_max_abs_diff_vs_vollib"] = float(np.max(np.abs(np.asarray(answers)[meaningful]
                                                                  - iv[sample][meaningful])))
    return result


def report(r: dict[str, Any]) -> list[Row]:
    runs = f"median of {r['runs']}"
    rows = [
        (f"price + greeks ({r['options']:,}-option chain, {runs})", f"{r['price_greeks_options_per_s']:,.0f} options/s",
         "", ""),
        ("numpy + scipy ndtr kernel, same outputs", f"{r['kernel_options_per_s']:,.0f} options/s", "", ""),
        ("price + greeks / kernel", f"{r['price_greeks_of_kernel']:.0%}", f">= {GREEKS_OF_KERNEL_TARGET:.0%}",
         verdict(r["price_greeks_of_kernel"] >= GREEKS_OF_KERNEL_TARGET)),
        ("max rel diff vs kernel", f"{r['price_greeks_max_rel_diff_vs_kernel']:.1e}", "", ""),
        (f"implied vol ({r['options']:,}-option chain, {runs})", f"{r['iv_options_per_s']:,.0f} options/s",
         f">= {IV_TARGET:,}", verdict(r["iv_options_per_s"] >= IV_TARGET)),
        (f"brentq reference, bracket [{BRENTQ_LO:g}, {BRENTQ_HI:g}] ({r['reference_options']} options)",
         f"{r['brentq_options_per_s']:,.0f} options/s", "", ""),
        ("implied vol / brentq", f"{r['iv_speedup_vs_brentq']:,.1f}x", f">= {IV_VS_BRENTQ_TARGET:.0f}x",
         verdict(r["iv_speedup_vs_brentq"] >= IV_VS_BRENTQ_TARGET)),
        ("max abs(IV - brentq), vega > 0.01", f"{r['iv_max_abs_diff_vs_brentq']:.1e}", "", ""),
        ("max rel error of the price at the solved IV", f"{r['iv_max_rel_reprice_error']:.1e}", "", ""),
        ("IV solved (rest: price at a bound)", f"{r['iv_solved_fraction']:.2%}", "", ""),
    ]
    if "vollib_options_per_s" in r:
        rows += [
            ("vollib Let's Be Rational (one option per call)", f"{r['vollib_options_per_s']:,.0f} options/s", "", ""),
            ("implied vol / vollib", f"{r['iv_speedup_vs_vollib']:,.0f}x", "", ""),
            ("max abs(IV - vollib), vega > 0.01", f"{r['iv_max_abs_diff_vs_vollib']:.1e}", "", ""),
        ]
    return rows


if __name__ == "__main__":
    print("| measure | value | target | verdict |\n|---|---|---|---|")
    for row in report(run(quick="--quick" in sys.argv)):
        print("| " + " | ".join(row) + " |")
