"""Black-Scholes at Deribit's mark_iv and forward (r = 0) reproduces the greeks Deribit
published in the real 2020-05-14 BTC chain (shared/data).

Measured over the 228 options expiring 8 to 225 days out: delta within 2.5e-5, gamma within
5e-6 (Deribit prints 5 decimals), vega and theta within 0.02 % (relative). For the expiries
within two days delta, gamma and vega still match (delta within 3e-4), theta does not: inside
the last day Deribit prints the decay to expiry, not the instantaneous rate.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from options.black_scholes import bs_greeks
from options.contracts import parse_instrument_name
from options.live_greeks import greeks_at_mark_iv
from options.live_marks import LiveMark

DAY = 86_400_000
YEAR = DAY * 365


@pytest.fixture
def rows(shared_data):
    return [r for r in json.loads((shared_data / "deribit/btc_option_chain_2020-05-14.json").read_text())
            if r["mark_iv"] and r["expiration_timestamp"] > r["timestamp"]]


def columns(rows):
    F = np.array([r["underlying_price"] for r in rows])
    K = np.array([r["strike"] for r in rows])
    T = np.array([(r["expiration_timestamp"] - r["timestamp"]) / YEAR for r in rows])
    iv = np.array([r["mark_iv"] / 100 for r in rows])
    is_call = np.array([r["option_type"] == "call" for r in rows])
    published = {k: np.array([r["greeks"][k] for r in rows]) for k in ("delta", "gamma", "theta", "vega")}
    return bs_greeks(F, K, T, 0.0, iv, is_call), published


def test_bs_at_mark_iv_reproduces_deribits_greeks(rows):
    later = [r for r in rows if r["expiration_timestamp"] - r["timestamp"] > 2 * DAY]
    assert len(later) == 228
    got, published = columns(later)
    assert np.max(np.abs(got.delta - published["delta"])) < 2.5e-5
    assert np.max(np.abs(got.gamma - published["gamma"])) <= 5e-6
    for name in ("vega", "theta"):
        rel = np.abs(getattr(got, name) - published[name]) / np.abs(published[name])
        assert np.max(rel) < 2e-4, name


def test_near_expiry_delta_gamma_vega_still_match(rows):
    near = [r for r in rows if r["expiration_timestamp"] - r["timestamp"] <= 2 * DAY]
    got, published = columns(near)
    assert np.max(np.abs(got.delta - published["delta"])) < 3e-4
    assert np.max(np.abs(got.gamma - published["gamma"])) <= 5e-6
    assert np.max(np.abs(got.vega - published["vega"])) < 1e-3


def test_a_live_marks_greeks_use_its_mark_iv_and_forward(rows):
    r = next(x for x in rows if x["instrument_name"] == "BTC-26JUN20-9000-P")
    contract = parse_instrument_name(r["instrument_name"])
    mark = LiveMark(contract, r["mark_price"] * r["index_price"], "exact", r["instrument_name"], r["index_price"],
                    r["mark_iv"] / 100, 0.0, r["underlying_price"])
    g = greeks_at_mark_iv(mark, r["timestamp"])
    assert g["iv"] == r["mark_iv"] / 100
    for name in ("delta", "vega", "theta"):
        assert g[name] == pytest.approx(r["greeks"][name], rel=2e-4, abs=2e-5), name


def test_without_mark_iv_the_vol_implied_by_deribits_mark_is_used(rows):
    r = next(x for x in rows if x["instrument_name"] == "BTC-26JUN20-9000-P")
    contract = parse_instrument_name(r["instrument_name"])
    usd = r["mark_price"] * r["underlying_price"]
    mark = LiveMark(contract, usd, "exact", r["instrument_name"], r["index_price"], None, 0.0, r["underlying_price"])
    g = greeks_at_mark_iv(mark, r["timestamp"])
    assert g["iv"] == pytest.approx(r["mark_iv"] / 100, abs=0.01)


def test_expired_and_unpriceable_marks():
    contract = parse_instrument_name("BTC-14MAY20-9000-C")
    settled = LiveMark(contract, 500.0, "settled", None, 9500.0)
    assert greeks_at_mark_iv(settled, contract.expiry_ts + 1) == {"iv": 0.0, "delta": 1.0, "gamma": 0.0,
                                                                  "theta": 0.0, "vega": 0.0}
    nothing = LiveMark(contract, 0.0, "exact", "x", 9500.0, None, 0.0, 9500.0)  # no vol reprices 0
    assert greeks_at_mark_iv(nothing, contract.expiry_ts - DAY) is None
