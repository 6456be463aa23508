"""Where option marks come from: a small interface, and the simulated surface behind it.

The pricer asks a :class:`MarkSource` for ATM vol, its history, chains and contract marks.
:class:`SimSurface` is the one used with the sim and replay feeds: the ATM vol follows a
seeded mean-reverting path (``vol_surface.simulate_atm_iv`` on an hourly grid from a fixed
origin, so a restart regenerates the same vols) with the smile on top. A live source (Deribit
marks) implements the same four methods. IBKR/CME contracts are priced from the same
Deribit-style surface at their own strike and expiry: Deribit is the proxy, as in the seed.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from common.timeframes import DAY_MS, HOUR_MS
from options.black_scholes import DAYS_PER_YEAR, bs_price_greeks
from options.chain import OptionChain, build_chain
from options.contracts import OptionContract
from options.venues import VenueSpec
from options.vol_surface import simulate_atm_iv, smile_iv

BASE_IV = {"BTC": 0.55, "ETH": 0.70}
DEFAULT_BASE_IV = 0.60
_GRID_CHUNK_STEPS = 24 * 60  # extend the vol path two months at a time


class MarkSourceError(ValueError):
    """A request the mark source cannot answer (bad input, no vol yet); the message says which."""


class MarkSource(Protocol):
    """What the pricer needs from a source of option prices."""

    name: str

    def atm_iv(self, underlying: str, ts: int, target_days: float = 30.0) -> float: ...

    def iv_history(self, underlying: str, ts: int, days: int) -> np.ndarray: ...

    def chain(self, venue: VenueSpec, underlying: str, spot: float, ts: int, horizon_days: int) -> OptionChain: ...

    def marks(self, contracts: Sequence[OptionContract], spot_by_underlying: Mapping[str, float],
              ts: int) -> dict[str, dict[str, Any]]: ...


class SimIvPath:
    """ATM implied vol of one underlying on an hourly grid from ``origin_ts``; steps in between."""

    def __init__(self, seed: int, base_iv: float, origin_ts: int, step_ms: int = HOUR_MS) -> None:
        if not (math.isfinite(base_iv) and base_iv > 0):
            raise MarkSourceError(f"base_iv: must be a finite number > 0, got {base_iv!r}")
        self.seed, self.base_iv, self.origin_ts, self.step_ms = seed, base_iv, origin_ts, step_ms
        self._values = np.empty(0)

    def values(self, ts: np.ndarray) -> np.ndarray:
        """Vol at each ts (int ms); times before the origin get the origin's vol."""
        steps = np.maximum((np.asarray(ts, dtype=np.int64) - self.origin_ts) // self.step_ms, 0)
        needed = int(steps.max(initial=0)) + 1
        if needed > self._values.size:
            count = needed + _GRID_CHUNK_STEPS
            grid = self.origin_ts + np.arange(count, dtype=np.int64) * self.step_ms
            self._values = simulate_atm_iv(self.seed, grid, self.base_iv)
        return self._values[steps]

    def at(self, ts: int) -> float:
        return float(self.values(np.array([ts]))[0])


def price_contracts(contracts: Sequence[OptionContract], spot_by_underlying: Mapping[str, float], ts: int,
                    atm_iv_by_underlying: Mapping[str, float], r: float = 0.0) -> dict[str, dict[str, Any]]:
    """Mark, smile IV and per-coin greeks of each contract by name; expired ones at intrinsic.

    Contracts whose underlying has no spot or vol are left out (the caller reports them).
    """
    out: dict[str, dict[str, Any]] = {}
    for contract in contracts:
        spot = spot_by_underlying.get(contract.underlying)
        atm = atm_iv_by_underlying.get(contract.underlying)
        if spot is None or atm is None:
            continue
        source = "sim" if contract.venue == "deribit" else "sim:deribit-proxy"
        T = (contract.expiry_ts - ts) / DAY_MS / DAYS_PER_YEAR
        if T <= 0:
            intrinsic = contract.intrinsic(spot)
            itm = 1.0 if intrinsic > 0 else 0.0
            out[contract.name] = {"mark_usd": intrinsic, "iv": 0.0, "delta": itm if contract.is_call else -itm,
                                  "gamma": 0.0, "theta": 0.0, "vega": 0.0, "source": "intrinsic"}
            continue
        forward = spot * math.exp(r * T)
        iv = float(smile_iv(atm, contract.strike, forward))
        price, greeks = bs_price_greeks(spot, contract.strike, T, r, iv, contract.is_call)
        out[contract.name] = {
            "mark_usd": float(price), "iv": iv,
            "delta": float(greeks.delta), "gamma": float(greeks.gamma), "theta": float(greeks.theta),
            "vega": float(greeks.vega), "source": source,
        }
    return out


class SimSurface:
    """The simulated market's options: seeded ATM vol paths with a smile, Black-Scholes marks."""

    name = "sim"

    def __init__(self, seed: int, origin_ts: int, rates: Mapping[str, float] | None = None,
                 base_iv: Mapping[str, float] | None = None) -> None:
        self.seed = seed
        self.origin_ts = origin_ts
        self.rates = dict(rates or {})  # venue -> annual risk-free rate for Black-Scholes; 0 if absent
        self.base_iv = dict(BASE_IV if base_iv is None else base_iv)
        self._paths: dict[str, SimIvPath] = {}

    def _path(self, underlying: str) -> SimIvPath:
        if not isinstance(underlying, str) or not underlying:
            raise MarkSourceError(f"underlying: expected a coin such as 'BTC', got {underlying!r}")
        path = self._paths.get(underlying)
        if path is None:
            path = SimIvPath(self.seed + sum(map(ord, underlying)), self.base_iv.get(underlying, DEFAULT_BASE_IV),
                             self.origin_ts)
            self._paths[underlying] = path
        return path

    def atm_iv(self, underlying: str, ts: int, target_days: float = 30.0) -> float:
        """The sim's ATM vol; its term structure is flat, so ``target_days`` changes nothing."""
        return self._path(underlying).at(ts)

    def iv_history(self, underlying: str, ts: int, days: int) -> np.ndarray:
        """Daily ATM vols at the same time of day over the last ``days`` days, oldest first."""
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 1000:
            raise MarkSourceError(f"days: expected an integer 1..1000, got {days!r}")
        return self._path(underlying).values(ts - np.arange(days, 0, -1, dtype=np.int64) * DAY_MS)

    def chain(self, venue: VenueSpec, underlying: str, spot: float, ts: int, horizon_days: int) -> OptionChain:
        return build_chain(venue, underlying, spot, ts, self.atm_iv(underlying, ts),
                           r=self.rates.get(venue.name, 0.0), horizon_days=horizon_days)

    def marks(self, contracts: Sequence[OptionContract], spot_by_underlying: Mapping[str, float],
              ts: int) -> dict[str, dict[str, Any]]:
        """Each contract priced at its own venue's rate, as its chain was."""
        atm = {u: self.atm_iv(u, ts) for u in {c.underlying for c in contracts} if u in spot_by_underlying}
        out: dict[str, dict[str, Any]] = {}
        for venue in sorted({c.venue for c in contracts}):
            out.update(price_contracts([c for c in contracts if c.venue == venue], spot_by_underlying, ts, atm,
                                       self.rates.get(venue, 0.0)))
        return out
