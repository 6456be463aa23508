"""Greeks and implied-vol throughput on a 10,000-option chain, beside a scipy brentq reference.

Run: ``python -m bench.bench_greeks [--quick]`` from the repo root. ``run()`` returns the
numbers, ``report()`` the rows with verdicts. Targets: >= 1M options/s for greeks, >= 100k
options/s for implied vol. Quick mode times 3 runs instead of 7 and checks 200 options
against brentq instead of 500.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
from scipy.optimize import brentq

from bench.harness import Row, verdict
from options.black_scholes import bs_greeks, bs_price, implied_vol

N_OPTIONS = 10_000
N_REFERENCE = 500
RUNS = 7
QUICK_REFERENCE = 200
QUICK_RUNS = 3
GREEKS_TARGET = 1_000_000
IV_TARGET = 100_000


def _chain(seed: int = 0) -> tuple[np.ndarray, ...]:
    """A BTC-like chain: strikes 0.5..2 x spot, 1 day..2 years, vols 5%..300%, calls and puts."""
    rng = np.random.default_rng(seed)
    S = np.full(N_OPTIONS, 90_000.0)
    K = S * rng.uniform(0.5, 2.0, N_OPTIONS)
    T = rng.uniform(1.0, 730.0, N_OPTIONS) / 365.0
    sigma = rng.uniform(0.05, 3.0, N_OPTIONS)
    is_call = rng.random(N_OPTIONS) < 0.5
    return S, K, T, np.full(N_OPTIONS, 0.02), sigma, is_call


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
    return brentq(f, 1e-6, 20.0, xtol=1e-12)


def run(quick: bool = False) -> dict[str, Any]:
    runs, reference = (QUICK_RUNS, QUICK_REFERENCE) if quick else (RUNS, N_REFERENCE)
    S, K, T, r, sigma, is_call = _chain()
    greeks_s = _median_seconds(lambda: bs_greeks(S, K, T, r, sigma, is_call), runs)
    price = bs_price(S, K, T, r, sigma, is_call)
    iv_s = _median_seconds(lambda: implied_vol(price, S, K, T, r, is_call), runs)
    iv = implied_vol(price, S, K, T, r, is_call)
    solvable = np.isfinite(iv)

    sample = np.flatnonzero(solvable)[:reference]
    args = [(float(price[i]), float(S[i]), float(K[i]), float(T[i]), float(r[i]), bool(is_call[i])) for i in sample]
    start = time.perf_counter()
    ref = [_brentq_iv(*a) for a in args]
    brentq_s = time.perf_counter() - start
    vega = bs_greeks(S[sample], K[sample], T[sample], r[sample], sigma[sample], is_call[sample]).vega
    meaningful = vega > 1e-2  # USD per vol point on a 90k underlying
    max_diff = float(np.max(np.abs(np.asarray(ref)[meaningful] - iv[sample][meaningful])))

    iv_rate = N_OPTIONS / iv_s
    brentq_rate = sample.size / brentq_s
    return {
        "options": N_OPTIONS,
        "runs": runs,
        "reference_options": int(sample.size),
        "greeks_options_per_s": N_OPTIONS / greeks_s,
        "iv_options_per_s": iv_rate,
        "iv_solved_fraction": float(solvable.mean()),
        "brentq_options_per_s": brentq_rate,
        "iv_speedup_vs_brentq": iv_rate / brentq_rate,
        "iv_max_abs_diff_vs_brentq": max_diff,
    }


def report(r: dict[str, Any]) -> list[Row]:
    runs = f"median of {r['runs']}"
    return [
        (f"greeks ({r['options']:,}-option chain, {runs})", f"{r['greeks_options_per_s']:,.0f} options/s",
         f">= {GREEKS_TARGET:,}", verdict(r["greeks_options_per_s"] >= GREEKS_TARGET)),
        (f"implied vol ({r['options']:,}-option chain, {runs})", f"{r['iv_options_per_s']:,.0f} options/s",
         f">= {IV_TARGET:,}", verdict(r["iv_options_per_s"] >= IV_TARGET)),
        (f"brentq reference ({r['reference_options']} options)", f"{r['brentq_options_per_s']:,.0f} options/s", "", ""),
        ("vectorized IV / brentq", f"{r['iv_speedup_vs_brentq']:,.0f}x", "", ""),
        ("max abs(IV - brentq), vega > 0.01", f"{r['iv_max_abs_diff_vs_brentq']:.1e}", "", ""),
        ("IV solved (rest: price at a bound)", f"{r['iv_solved_fraction']:.2%}", "", ""),
    ]


if __name__ == "__main__":
    print("| measure | value | target | verdict |\n|---|---|---|---|")
    for row in report(run(quick="--quick" in sys.argv)):
        print("| " + " | ".join(row) + " |")
