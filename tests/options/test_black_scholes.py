"""Black-Scholes against Hull's worked examples, a plain-math reference, parity and finite differences."""
import math
import warnings

import numpy as np
import pytest

from options.black_scholes import PricingInputError, bs_greeks, bs_price, bs_price_greeks, implied_vol


def reference_price(S: float, K: float, T: float, r: float, sigma: float, is_call: bool) -> float:
    """Textbook formula with math.erf: the slow, obvious cross-check."""
    def N(x: float) -> float:
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))
    d1 = (math.log(S / K) + (r + sigma * sigma / 2.0) * T) / (sigma * math.sqrt(T))
    d2 = d1 - sigma * math.sqrt(T)
    if is_call:
        return S * N(d1) - K * math.exp(-r * T) * N(d2)
    return K * math.exp(-r * T) * N(-d2) - S * N(-d1)


def test_hull_example_call_and_put_match_published_values():
    # Hull, Options, Futures and Other Derivatives, Black-Scholes-Merton example: c = 4.76, p = 0.81.
    call = float(bs_price(42.0, 40.0, 0.5, 0.10, 0.20, True))
    put = float(bs_price(42.0, 40.0, 0.5, 0.10, 0.20, False))
    assert round(call, 2) == 4.76
    assert round(put, 2) == 0.81
    assert call == pytest.approx(reference_price(42.0, 40.0, 0.5, 0.10, 0.20, True), abs=1e-6)
    assert put == pytest.approx(reference_price(42.0, 40.0, 0.5, 0.10, 0.20, False), abs=1e-6)


def test_hull_greek_letters_example():
    # Hull, The Greek Letters: S=49, K=50, r=5%, sigma=20%, 20 weeks. Price 2.40, delta 0.522,
    # gamma 0.066, theta -4.31 per year, vega 12.1 per unit sigma, rho 8.91 per unit r.
    T = 20 / 52
    g = bs_greeks(49.0, 50.0, T, 0.05, 0.20, True)
    assert round(float(bs_price(49.0, 50.0, T, 0.05, 0.20, True)), 2) == 2.40
    assert round(float(g.delta), 3) == 0.522
    assert round(float(g.gamma), 3) == 0.066
    assert float(g.theta) * 365 == pytest.approx(-4.31, abs=0.005)
    assert float(g.vega) * 100 == pytest.approx(12.1, abs=0.05)
    assert float(g.rho) * 100 == pytest.approx(8.91, abs=0.005)


def test_vectorized_matches_reference_on_a_grid():
    S, K, T, r, sig = np.meshgrid([90.0, 100.0], [50.0, 100.0, 180.0], [0.01, 0.5, 2.0], [0.0, 0.05],
                                  [0.1, 0.8, 2.5], indexing="ij")
    for is_call in (True, False):
        got = bs_price(S, K, T, r, sig, is_call)
        want = np.vectorize(reference_price)(S, K, T, r, sig, is_call)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_put_call_parity_on_a_grid():
    S, K, T, r, sig = np.meshgrid([100.0], np.linspace(40, 250, 15), [1 / 365, 0.1, 1.0, 3.0],
                                  [-0.01, 0.0, 0.08], [0.05, 0.6, 3.0], indexing="ij")
    lhs = bs_price(S, K, T, r, sig, True) - bs_price(S, K, T, r, sig, False)
    np.testing.assert_allclose(lhs, S - K * np.exp(-r * T), rtol=0, atol=1e-9)


@pytest.mark.parametrize("is_call", [True, False])
def test_greeks_match_central_finite_differences(is_call):
    S, K, T, r, sig = 100.0, np.array([70.0, 95.0, 100.0, 130.0]), 0.4, 0.03, 0.55
    g = bs_greeks(S, K, T, r, sig, is_call)
    h = 1e-3

    def px(**kw):
        a = dict(S=S, K=K, T=T, r=r, sigma=sig, is_call=is_call) | kw
        return bs_price(a["S"], a["K"], a["T"], a["r"], a["sigma"], a["is_call"])

    # Tolerances: central differences are O(h^2); 1e-6 abs on delta/vega/theta/rho, 1e-5 on gamma.
    np.testing.assert_allclose(g.delta, (px(S=S + h) - px(S=S - h)) / (2 * h), atol=1e-6)
    np.testing.assert_allclose(g.gamma, (px(S=S + h) - 2 * px() + px(S=S - h)) / h**2, atol=1e-5)
    np.testing.assert_allclose(g.vega, (px(sigma=sig + h) - px(sigma=sig - h)) / (2 * h) * 0.01, atol=1e-6)
    np.testing.assert_allclose(g.theta, -(px(T=T + h) - px(T=T - h)) / (2 * h) / 365, atol=1e-6)
    np.testing.assert_allclose(g.rho, (px(r=r + h) - px(r=r - h)) / (2 * h) * 0.01, atol=1e-6)


def test_implied_vol_round_trip_over_strikes_expiries_and_vols():
    S = 100.0
    K, T, sig, is_call = np.meshgrid(np.linspace(50, 200, 16), np.array([1, 7, 30, 90, 365, 730]) / 365,
                                     np.array([0.05, 0.2, 0.6, 1.2, 3.0]), [True, False], indexing="ij")
    r = 0.02
    price = bs_price(S, K, T, r, sig, is_call)
    iv = implied_vol(price, S, K, T, r, is_call)
    vega = bs_greeks(S, K, T, r, sig, is_call).vega
    meaningful = vega > 1e-4  # 0.0001 price per vol point on a 100 underlying
    assert meaningful.sum() > 0.6 * meaningful.size  # 606 of 960 grid points
    np.testing.assert_allclose(iv[meaningful], sig[meaningful], rtol=0, atol=1e-6)
    # Where vega is negligible the answer may be NaN, but never a wrong finite number of consequence:
    finite = np.isfinite(iv)
    np.testing.assert_allclose(bs_price(S, K, T, r, np.where(finite, iv, 0.1), is_call)[finite], price[finite],
                               rtol=0, atol=1e-8)


def test_implied_vol_nan_for_impossible_prices():
    S, K, T, r = 100.0, 90.0, 0.5, 0.05
    lower_call = S - K * math.exp(-r * T)
    got = implied_vol(np.array([lower_call - 0.01, S, S + 1.0, -1.0, np.nan]), S, K, T, r, True)
    assert np.isnan(got).all()
    assert np.isnan(implied_vol(K * math.exp(-r * T) + 0.01, S, K, T, r, False))  # put above K e^-rT
    assert np.isnan(implied_vol(5.0, S, K, 0.0, r, True))
    assert np.isnan(implied_vol(5.0, S, K, -1.0, r, True))
    assert float(implied_vol(lower_call, S, K, T, r, True)) == 0.0


def test_bad_numbers_give_nan_without_exceptions_or_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prices = bs_price([0.0, -5.0, 100.0, 100.0, 100.0], [100.0, 100.0, 0.0, 100.0, 100.0],
                          [1.0, 1.0, 1.0, -1.0, 1.0],
                          0.0, [0.5, 0.5, 0.5, 0.5, -0.2], True)
        g = bs_greeks([0.0, 100.0], [100.0, -1.0], 1.0, 0.0, 0.5, False)
        iv = implied_vol([1.0, 1.0], [0.0, 100.0], [100.0, 0.0], 1.0, 0.0, True)
    assert np.isnan(prices).all()
    assert np.isnan(g.delta).all() and np.isnan(g.vega).all()
    assert np.isnan(iv).all()


def test_expiry_and_zero_vol_limits_are_finite():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K = np.array([80.0, 120.0])
        at_expiry = bs_price(100.0, K, 0.0, 0.05, 0.5, True)
        g = bs_greeks(100.0, K, 0.0, 0.05, 0.5, np.array([True, False]))
        zero_vol = bs_price(100.0, 100.0, 1.0, 0.05, 0.0, np.array([True, False]))
        huge_vol = bs_price(100.0, 100.0, 1.0, 0.05, 1e4, np.array([True, False]))
        deep = bs_greeks(100.0, np.array([1.0, 1e6]), 1.0, 0.0, 0.3, True)
    np.testing.assert_allclose(at_expiry, [20.0, 0.0])
    np.testing.assert_allclose(g.delta, [1.0, -1.0])
    np.testing.assert_allclose(g.gamma, [0.0, 0.0])
    # sigma 0: discounted intrinsic of the forward 105.127 vs 100: 100 - 100 e^-0.05
    np.testing.assert_allclose(zero_vol, [100.0 - 100.0 * math.exp(-0.05), 0.0], atol=1e-12)
    np.testing.assert_allclose(huge_vol, [100.0, 100.0 * math.exp(-0.05)], atol=1e-9)
    np.testing.assert_allclose(deep.delta, [1.0, 0.0], atol=1e-12)
    assert np.isfinite(deep.gamma).all() and np.isfinite(deep.theta).all()


def test_scalars_give_scalars_and_arrays_broadcast():
    assert np.ndim(bs_price(100.0, 100.0, 1.0, 0.0, 0.5, True)) == 0
    out = bs_price(100.0, np.array([[90.0], [110.0]]), np.array([0.5, 1.0, 2.0]), 0.0, 0.5, True)
    assert out.shape == (2, 3)


def test_shape_mismatch_raises_value_error():
    with pytest.raises(ValueError, match=r"do not broadcast: S\(3,\), K\(2,\)"):
        bs_price(np.ones(3), np.ones(2), 1.0, 0.0, 0.5, True)
    with pytest.raises(PricingInputError, match="do not broadcast"):
        implied_vol(np.ones(3), 100.0, np.ones(2), 1.0, 0.0, True)


def test_string_option_type_is_refused():
    with pytest.raises(PricingInputError, match="is_call: expected bool"):
        bs_price(100.0, 100.0, 1.0, 0.0, 0.5, "c")
    with pytest.raises(PricingInputError, match="is_call"):
        bs_greeks(100.0, 100.0, 1.0, 0.0, 0.5, np.array([1, 0]))


def test_price_and_greeks_in_one_evaluation_equal_the_separate_calls():
    S, K, T, r, sig = 100.0, np.array([60.0, 99.0, 100.0, 150.0]), np.array([0.0, 0.01, 0.5, 2.0]), 0.03, 0.7
    for is_call in (True, False, np.array([True, False, True, False])):
        price, g = bs_price_greeks(S, K, T, r, sig, is_call)
        np.testing.assert_array_equal(price, bs_price(S, K, T, r, sig, is_call))
        separate = bs_greeks(S, K, T, r, sig, is_call)
        for name in ("delta", "gamma", "theta", "vega", "rho"):
            np.testing.assert_array_equal(getattr(g, name), getattr(separate, name))


def test_implied_vol_agrees_with_brentq_on_a_wide_random_chain():
    """Strikes e^-2.5..e^2.5 x spot, 1 hour..3 years, vols 1%..500%, r -1%..10%: the solver's
    answer and brentq's (same pricing formula as the reference above) agree where vega matters."""
    from scipy.optimize import brentq

    rng = np.random.default_rng(7)
    n = 400
    S = np.full(n, 90_000.0)
    K = S * np.exp(rng.uniform(-2.5, 2.5, n))
    T = rng.uniform(1 / 24, 1000, n) / 365
    sig = rng.uniform(0.01, 5.0, n)
    r = rng.choice([-0.01, 0.0, 0.02, 0.1], n)
    is_call = rng.random(n) < 0.5
    price = bs_price(S, K, T, r, sig, is_call)
    iv = implied_vol(price, S, K, T, r, is_call)
    vega = bs_greeks(S, K, T, r, sig, is_call).vega
    checked = 0
    for i in np.flatnonzero(vega > 1e-2):
        args = (float(S[i]), float(K[i]), float(T[i]), float(r[i]))
        ref = brentq(lambda s: reference_price(*args, s, bool(is_call[i])) - price[i], 1e-4, 6.0, xtol=1e-13)
        assert iv[i] == pytest.approx(ref, abs=1e-7), (args, sig[i], bool(is_call[i]))
        checked += 1
    assert checked > 0.9 * n


def test_implied_vol_takes_no_step_to_confirm_a_converged_row(monkeypatch):
    """A row stops at the step whose Newton step was under _IV_DONE_STEP of w (order-four
    convergence leaves the next w exact), not one step later when w stops moving: on the
    round-trip grid 2.2 steps per row (2.8 with a confirming step), none more than three per
    objective, and every solved row reprices its target."""
    import options.black_scholes as bs

    S, r = 100.0, 0.02
    K, T, sig, is_call = np.meshgrid(np.linspace(50, 200, 16), np.array([1, 7, 30, 90, 365, 730]) / 365,
                                     np.array([0.05, 0.2, 0.6, 1.2, 3.0]), [True, False], indexing="ij")
    price = bs_price(S, K, T, r, sig, is_call)
    steps: list[tuple[bool, int]] = []
    step = bs._householder_step
    monkeypatch.setattr(bs, "_householder_step", lambda rows: (steps.append((rows.on_log, rows.w.size)), step(rows))[1])
    iv = implied_vol(price, S, K, T, r, is_call)
    priced = np.count_nonzero(price > 0)
    assert sum(n for _, n in steps) <= 2.3 * priced
    assert max(sum(1 for on_log, _ in steps if on_log == side) for side in (True, False)) <= 3
    solved = np.isfinite(iv)
    assert np.count_nonzero(solved & (price > 0)) == priced
    np.testing.assert_allclose(bs_price(S, K, T, r, iv, is_call)[solved], price[solved], rtol=1e-10, atol=1e-12)


def test_implied_vol_near_the_upper_bound_still_reprices():
    # sigma 4.97 over 2.7 years: the price sits within 1e-4 of its bound, vega is tiny.
    S, K, T, r = 90_000.0, 90_000.0 * 0.536, 995.0 / 365, 0.1
    price = float(bs_price(S, K, T, r, 4.973, False))
    iv = float(implied_vol(price, S, K, T, r, False))
    assert iv == pytest.approx(4.973, abs=1e-6)


def test_importing_the_pricer_math_does_not_load_scipy_until_it_prices():
    import subprocess
    import sys

    code = ("import sys, options.black_scholes as bs\n"
            "before = 'scipy' in sys.modules\n"
            "bs.bs_price(1.0, 1.0, 1.0, 0.0, 0.5, True)\n"
            "print(before, 'scipy.special._ufuncs' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.split() == ["False", "True"]
