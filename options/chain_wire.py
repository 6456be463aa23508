"""How an option chain travels on the bus: raw little-endian columns (msgpack bin), one buffer
per column, instead of a Python float per cell. Numpy-free, so the portfolio reads chains
without loading numpy; ``options.chain`` encodes and decodes them with numpy."""
from __future__ import annotations

CHAIN_COLUMNS: dict[str, str] = {
    "expiry_ts": "<i8", "strike": "<f8", "is_call": "|b1", "forward": "<f8", "iv": "<f8",
    "mark": "<f8", "delta": "<f8", "gamma": "<f8", "theta": "<f8", "vega": "<f8",
}
CHAIN_HORIZON_DAYS = 400  # the furthest the pricer lists
OPTIONS_HORIZON_DAYS = 100  # strategies target <= 45 DTE; the nearest listed expiry is always within this
