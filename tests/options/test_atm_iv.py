"""ATM and surface vols read off the real Deribit BTC chain of 2020-05-14 (shared/data)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from options.atm_iv import ImpliedVolError, atm_iv_at, expiry_vols, surface_at, term_vol

NOW = 1_589_434_896_486  # 2020-05-14 05:41:36 UTC, when the chain was recorded
DAY = 86_400_000


@pytest.fixture
def chain(shared_data):
    rows = json.loads((shared_data / "deribit/btc_option_chain_2020-05-14.json").read_text())
    return rows, (np.array([r["expiration_timestamp"] for r in rows]), np.array([r["strike"] for r in rows]),
                  np.array([(r["mark_iv"] or math.nan) / 100 for r in rows]),
                  np.array([r["underlying_price"] for r in rows]))


def test_each_expirys_atm_vol_lies_between_the_neighbouring_listed_mark_ivs(chain):
    rows, columns = chain
    expiries, forwards, vols = expiry_vols(*columns, NOW)
    assert expiries.size == 7
    for expiry, forward, vol in zip(expiries.tolist(), forwards, vols):
        same = [r for r in rows if r["expiration_timestamp"] == expiry and r["mark_iv"]]
        below = max(r["strike"] for r in same if r["strike"] <= forward)
        above = min(r["strike"] for r in same if r["strike"] >= forward)
        ivs = [r["mark_iv"] / 100 for r in same if r["strike"] in (below, above)]
        assert min(ivs) - 1e-12 <= vol <= max(ivs) + 1e-12, (expiry, below, above, ivs, vol)


def test_atm_vol_between_expiries_is_linear_in_total_variance(chain):
    _, columns = chain
    expiries, _, vols = expiry_vols(*columns, NOW)
    target = NOW + 30 * DAY  # between 29MAY20 and 26JUN20
    i = int(np.searchsorted(expiries, target)) - 1
    t1, t2, t = ((expiries[i] - NOW) / DAY, (expiries[i + 1] - NOW) / DAY, 30.0)
    w = vols[i] ** 2 * t1 + (vols[i + 1] ** 2 * t2 - vols[i] ** 2 * t1) * (t - t1) / (t2 - t1)  # by hand, in days
    got = atm_iv_at(*columns, NOW, target)
    assert got == pytest.approx(math.sqrt(w / t), rel=1e-12)
    assert min(vols[i], vols[i + 1]) <= got <= max(vols[i], vols[i + 1])
    assert atm_iv_at(*columns, NOW, NOW + 3_600_000) == vols[0]  # before the first expiry: its vol
    assert atm_iv_at(*columns, NOW, NOW + 400 * DAY) == vols[-1]  # after the last: its vol


def test_surface_at_the_forward_is_the_atm_vol_and_a_listed_strike_its_mark_iv(chain):
    rows, columns = chain
    expiries, forwards, vols = expiry_vols(*columns, NOW)
    iv, fwd = surface_at(*columns, NOW, [expiries[3]], [forwards[3]])
    assert iv[0] == pytest.approx(vols[3]) and fwd[0] == pytest.approx(forwards[3])
    row = next(r for r in rows if r["instrument_name"] == "BTC-26JUN20-10000-C")
    put = next(r for r in rows if r["instrument_name"] == "BTC-26JUN20-10000-P")
    iv, _ = surface_at(*columns, NOW, [row["expiration_timestamp"]], [10000.0])
    assert iv[0] == pytest.approx((row["mark_iv"] + put["mark_iv"]) / 200)


@pytest.mark.parametrize("columns, message", [
    (([], [], [], []), "no live expiry"),
    (([NOW - 1], [9000.0], [0.8], [9300.0]), "no live expiry"),  # expired
    (([NOW + DAY], [9000.0], [math.nan], [9300.0]), "no live expiry"),  # no mark_iv
    (([NOW + DAY, NOW], [9000.0], [0.8], [9300.0]), "expected a 1-d array of 2 rows"),
])
def test_a_chain_without_a_usable_vol_is_refused_by_name(columns, message):
    with pytest.raises(ImpliedVolError, match=message):
        atm_iv_at(*columns, NOW, NOW + 30 * DAY)


def test_a_target_in_the_past_is_refused():
    with pytest.raises(ImpliedVolError, match="target_ts"):
        term_vol(np.array([NOW + DAY]), np.array([0.5]), NOW, NOW)
