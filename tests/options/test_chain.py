"""Chains are built only from listed contracts and priced consistently."""
from datetime import datetime, timezone

import numpy as np
import pytest

from common.timeframes import DAY_MS
from options.black_scholes import bs_price
from options.chain import build_chain, closest_strike, listed_strikes
from options.contracts import ContractError, OptionContract, listed_expiries
from options.venues import DERIBIT, IBKR_CME
from options.vol_surface import smile_iv

TS = int(datetime(2026, 11, 25, 12, tzinfo=timezone.utc).timestamp() * 1000)


def test_chain_rows_are_listed_expiries_by_listed_strikes_by_type():
    chain = build_chain(DERIBIT, "BTC", 90_000.0, TS, 0.5)
    expiries = listed_expiries(DERIBIT, "BTC", TS)
    strikes = listed_strikes(DERIBIT, "BTC", 90_000.0)
    assert len(chain) == len(expiries) * strikes.size * 2
    assert chain.expiries() == expiries
    np.testing.assert_array_equal(chain.strikes(), strikes)
    assert chain.is_call.sum() == len(chain) // 2


def test_chain_marks_are_bs_on_the_smile():
    chain = build_chain(IBKR_CME, "ETH", 3000.0, TS, 0.6, r=0.03)
    contract = OptionContract("ibkr", "ETH", chain.expiries()[2], 2700.0, False, 0.1)
    row = chain.lookup(contract)
    assert row is not None and chain.contract(row) == contract
    T = (contract.expiry_ts - TS) / DAY_MS / 365
    forward = 3000.0 * np.exp(0.03 * T)
    iv = float(smile_iv(0.6, 2700.0, forward))
    assert chain.iv[row] == pytest.approx(iv)
    assert chain.mark[row] == pytest.approx(float(bs_price(3000.0, 2700.0, T, 0.03, iv, False)), rel=1e-12)
    assert -1 < chain.delta[row] < 0 and chain.vega[row] > 0 and chain.theta[row] < 0


def test_lookup_misses_other_venue_and_unlisted_strikes():
    chain = build_chain(DERIBIT, "BTC", 90_000.0, TS, 0.5)
    expiry = chain.expiries()[0]
    assert chain.lookup(OptionContract("deribit", "BTC", expiry, 90_500.0, True, 1.0)) is None
    assert chain.lookup(OptionContract("ibkr", "BTC", expiry, 90_000.0, True, 0.1)) is None
    assert chain.lookup(OptionContract("deribit", "BTC", expiry, 90_000.0, True, 1.0)) is not None


def test_bad_atm_iv_is_refused():
    with pytest.raises(ContractError, match="atm_iv"):
        build_chain(DERIBIT, "BTC", 90_000.0, TS, 0.0)


def test_listed_strikes_and_closest_strike():
    strikes = listed_strikes(DERIBIT, "BTC", 90_400.0)
    assert strikes[0] == 46_000 and strikes[-1] == 135_000 and np.all(np.diff(strikes) == 1000)
    assert closest_strike(strikes, 90_400 * 0.88) == 80_000
    assert closest_strike(strikes, 80_500) == 80_000  # tie goes to the lower strike
    eth = listed_strikes(IBKR_CME, "ETH", 3010.0)
    assert eth[0] == 1550 and np.all(np.diff(eth) == 50)
    with pytest.raises(ContractError, match="spot"):
        listed_strikes(DERIBIT, "BTC", 0.0)
    with pytest.raises(ContractError, match="empty"):
        closest_strike(np.array([]), 1.0)
