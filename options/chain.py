"""An option chain: every listed contract of one underlying on one venue, priced at one time.

Rows are the product listed_expiries x listed_strikes x (call, put), priced by one
vectorized Black-Scholes call on the smile. Marks and greeks are per coin, in USD (a
Deribit coin premium is the USD mark divided by the index price, see venues.usd_to_coin).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.timeframes import DAY_MS
from options.black_scholes import DAYS_PER_YEAR, bs_price_greeks
from options.chain_wire import CHAIN_COLUMNS
from options.contracts import ContractError, OptionContract, listed_expiries
from options.venues import VenueSpec, venue_spec
from options.vol_surface import DEFAULT_CURVATURE, DEFAULT_IV_FLOOR, DEFAULT_SKEW, smile_iv


def listed_strikes(venue: VenueSpec, underlying: str, spot: float) -> np.ndarray:
    """Strike grid around spot: multiples of the strike step within spot * (1 -+ strike_range)."""
    spec = venue.underlying(underlying)
    if not (isinstance(spot, (int, float)) and math.isfinite(spot) and spot > 0):
        raise ContractError(f"spot: must be a finite number > 0, got {spot!r}")
    step = spec.strike_step
    first = max(math.ceil(spot * (1 - spec.strike_range) / step), 1)
    last = math.floor(spot * (1 + spec.strike_range) / step)
    return np.arange(first, last + 1, dtype=np.float64) * step


def closest_strike(strikes: np.ndarray, target: float) -> float:
    """The listed strike nearest target (ties go to the lower strike)."""
    strikes = np.asarray(strikes, dtype=np.float64)
    if strikes.size == 0:
        raise ContractError("strikes: empty strike list")
    return float(strikes[np.argmin(np.abs(strikes - target))])


@dataclass(frozen=True, eq=False)  # numpy columns: compare by identity
class OptionChain:
    """Columns of one chain; row i is one contract. Greeks use black_scholes units."""

    venue: str
    underlying: str
    multiplier: float
    ts: int
    spot: float
    expiry_ts: np.ndarray  # int64 ms
    strike: np.ndarray
    is_call: np.ndarray  # bool
    forward: np.ndarray
    iv: np.ndarray
    mark: np.ndarray  # USD per coin
    delta: np.ndarray
    gamma: np.ndarray
    theta: np.ndarray  # per day
    vega: np.ndarray  # per vol point

    def __len__(self) -> int:
        return int(self.strike.size)

    def lookup(self, contract: OptionContract) -> int | None:
        """Row of a contract in this chain, or None (other venue, unlisted or expired).

        A scan of three columns rather than a dict of every row: a chain is built for a few
        lookups, and thousands of key tuples per chain cost more than they save."""
        if contract.venue != self.venue or contract.underlying != self.underlying:
            return None
        hits = np.flatnonzero((self.expiry_ts == contract.expiry_ts) & (self.strike == float(contract.strike))
                              & (self.is_call == contract.is_call))
        return int(hits[0]) if hits.size else None

    def contract(self, row: int) -> OptionContract:
        return OptionContract(self.venue, self.underlying, int(self.expiry_ts[row]), float(self.strike[row]),
                              bool(self.is_call[row]), self.multiplier)

    def greeks(self, row: int) -> dict[str, float]:
        """Per-coin greeks of one row as plain floats (for trades and positions)."""
        return {"delta": float(self.delta[row]), "gamma": float(self.gamma[row]),
                "theta": float(self.theta[row]), "vega": float(self.vega[row])}

    def expiries(self) -> list[int]:
        return sorted(set(self.expiry_ts.tolist()))

    def strikes(self) -> np.ndarray:
        return np.unique(self.strike)

    def restricted_to(self, listed: set[tuple[int, float, bool]]) -> "OptionChain":
        """This chain cut to the ``(expiry_ts, strike, is_call)`` a venue really lists."""
        keys = zip(self.expiry_ts.tolist(), self.strike.tolist(), self.is_call.tolist())
        keep = np.fromiter((key in listed for key in keys), dtype=bool, count=len(self))
        columns = {f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), np.ndarray)}
        return dataclasses.replace(self, **columns)


def build_chain(venue: VenueSpec, underlying: str, spot: float, ts_event: int, atm_iv: float, r: float = 0.0,
                skew: float = DEFAULT_SKEW, curvature: float = DEFAULT_CURVATURE,
                iv_floor: float = DEFAULT_IV_FLOOR, horizon_days: int = 400) -> OptionChain:
    """Price the venue's listed contracts at ts_event from spot and the ATM vol."""
    if not (np.isfinite(atm_iv) and atm_iv > 0):
        raise ContractError(f"atm_iv: must be a finite number > 0, got {atm_iv!r}")
    strikes = listed_strikes(venue, underlying, spot)
    expiries = np.asarray(listed_expiries(venue, underlying, ts_event, horizon_days), dtype=np.int64)
    expiry_ts = np.repeat(expiries, 2 * strikes.size)
    strike = np.tile(np.repeat(strikes, 2), expiries.size)
    is_call = np.tile(np.array([True, False]), expiries.size * strikes.size)
    T = (expiry_ts - ts_event) / DAY_MS / DAYS_PER_YEAR
    forward = spot * np.exp(r * T)
    iv = smile_iv(atm_iv, strike, forward, skew, curvature, iv_floor)
    price, greeks = bs_price_greeks(spot, strike, T, r, iv, is_call)
    return OptionChain(venue.name, underlying, venue.underlying(underlying).multiplier, ts_event, float(spot),
                       expiry_ts, strike, is_call, forward, iv, price,
                       greeks.delta, greeks.gamma, greeks.theta, greeks.vega)


class ChainReplyError(ValueError):
    """A ``chain`` reply that does not describe a chain; the message names the bad field."""


def chain_to_dict(chain: OptionChain) -> dict[str, Any]:
    return {
        "underlying": chain.underlying, "venue": chain.venue, "spot": chain.spot, "ts": chain.ts,
        "size": len(chain),
        "columns": {name: np.ascontiguousarray(getattr(chain, name), dtype=dtype).tobytes()
                    for name, dtype in CHAIN_COLUMNS.items()},
    }


def chain_from_dict(d: Any) -> OptionChain:
    """The chain a ``chain`` reply describes (the venue gives the multiplier)."""
    if not isinstance(d, dict):
        raise ChainReplyError(f"chain reply: expected an object, got {type(d).__name__}")
    size, columns = d.get("size"), d.get("columns")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ChainReplyError(f"chain reply.size: expected a row count >= 0, got {size!r}")
    if not isinstance(columns, dict):
        raise ChainReplyError(f"chain reply.columns: expected an object, got {type(columns).__name__}")
    arrays = {}
    for name, dtype in CHAIN_COLUMNS.items():
        raw = columns.get(name)
        width = np.dtype(dtype).itemsize
        if not isinstance(raw, bytes) or len(raw) != size * width:
            got = f"{len(raw)} bytes" if isinstance(raw, bytes) else type(raw).__name__
            raise ChainReplyError(f"chain reply.columns.{name}: expected {size} x {width} bytes, got {got}")
        arrays[name] = np.frombuffer(raw, dtype=dtype)
    venue, underlying = d.get("venue"), d.get("underlying")
    if not isinstance(venue, str):
        raise ChainReplyError(f"chain reply.venue: expected a name, got {venue!r}")
    if not isinstance(underlying, str):
        raise ChainReplyError(f"chain reply.underlying: expected a name, got {underlying!r}")
    try:
        multiplier = venue_spec(venue).underlying(underlying).multiplier
        return OptionChain(venue, underlying, multiplier, int(d["ts"]), float(d["spot"]), **arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise ChainReplyError(f"chain reply: {exc}") from None
