"""Greeks of a position marked by Deribit: Black-Scholes at Deribit's own ``mark_iv`` and the
listed instrument's forward (``underlying_price``), r = 0, at the position's strike and expiry.

At r = 0 that reproduces the greeks Deribit publishes (tests/options/test_live_greeks.py
measures it on the real 2020-05-14 chain). Without a ``mark_iv`` the vol implied by Deribit's
mark is used; a position already expired has the greeks of its payoff (delta 1 or 0, no
gamma, theta or vega). Units as in options.black_scholes: per coin, theta per day, vega per
vol point.
"""
from __future__ import annotations

import math

from options.atm_iv import YEAR_MS
from options.black_scholes import bs_greeks, implied_vol
from options.live_marks import LiveMark


def greeks_at_mark_iv(mark: LiveMark, ts: int) -> dict[str, float] | None:
    """``{iv, delta, gamma, theta, vega}`` of ``mark.contract`` at ``ts``, or None when Deribit
    gave neither a vol nor a mark a vol can be implied from."""
    c = mark.contract
    T = (c.expiry_ts - ts) / YEAR_MS
    if mark.source == "settled" or T <= 0:
        itm = 1.0 if mark.mark_usd > 0 else 0.0
        return {"iv": 0.0, "delta": itm if c.is_call else -itm, "gamma": 0.0, "theta": 0.0, "vega": 0.0}
    forward = mark.underlying_price if mark.underlying_price else mark.index_price
    iv = mark.mark_iv
    if iv is None:
        iv = float(implied_vol(mark.mark_usd, forward, c.strike, T, 0.0, c.is_call))
    if not (math.isfinite(iv) and iv > 0):
        return None
    g = bs_greeks(forward, c.strike, T, 0.0, iv, c.is_call)
    return {"iv": float(iv), "delta": float(g.delta), "gamma": float(g.gamma), "theta": float(g.theta),
            "vega": float(g.vega)}
