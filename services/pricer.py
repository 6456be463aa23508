"""pricer: option chains and Black-Scholes prices for the venues the options strategies trade.

Subscribes  tick.* from marketdata (spot of each underlying)
Answers     chain {underlying, venue, horizon_days?} -> listed expiries x strikes with marks, IV, greeks;
            price {contracts: [contract dict | name]} -> {marks: {name: {mark_usd, iv, greeks, source}}};
            mark {positions: [contract dict | position dict]} -> the same, for open positions;
            iv {underlying, days?} -> {atm_iv, history (daily, oldest first), iv_rank}; status
Publishes   heartbeat.pricer
Calls       options.marks (the mark source), options.venues, options.contracts

Marks come from a MarkSource (options.marks). With the sim and replay feeds that is the
SimSurface: a seeded mean-reverting ATM vol with a smile, so every restart prices the same
market time the same way. IBKR/CME contracts are marked on that Deribit-style surface (the
proxy). Expired contracts are marked at intrinsic value from the current spot.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from common.bus import Envelope, RequestError
from common.config import Config, load_config
from common.engine import IV_HISTORY_DAYS
from common.ibkr import IbkrListedSource, build_chain_reader
from common.market_sim import DAY_MS
from options.chain import OptionChain
from options.contracts import ContractError, OptionContract, parse_instrument_name
from options.marks import MarkSource, SimSurface
from options.order_checks import CHAIN_COLUMNS, CHAIN_HORIZON_DAYS
from options.venues import venue_spec
from options.vol_surface import iv_rank
from services.runtime import ServiceRuntime, config_path

MAX_CONTRACTS = 500


def build_mark_source(cfg: Config, log: Any = None) -> MarkSource:
    """The sim surface, anchored where the sim feed's path starts (so restarts agree); in live
    mode Deribit's real marks and listed contracts on top of it (greeks and IV stay modelled);
    with ``ibkr.host`` set, IBKR chains cut to the CME contracts IBKR really lists."""
    origin = cfg.feed.start_ms - cfg.feed.start_ms % DAY_MS - cfg.feed.history_days * DAY_MS
    source: MarkSource = SimSurface(cfg.feed.seed, origin, r=cfg.options.risk_free_rate)
    if cfg.feed.mode == "live":
        from common.deribit import DeribitClient, LiveDeribitSource  # requests only in live mode

        source = LiveDeribitSource(DeribitClient(cfg.feed.live.deribit_url), model=source, log=log)
    reader = build_chain_reader(cfg)  # None unless ibkr.host is set
    return source if reader is None else IbkrListedSource(source, reader, log)


def _contract(item: Any, where: str) -> OptionContract:
    """A contract dict, a position dict holding one, or an instrument name."""
    if isinstance(item, str):
        return parse_instrument_name(item)
    if isinstance(item, dict) and isinstance(item.get("contract"), dict):
        item = item["contract"]
    return OptionContract.from_dict(item, where)


# A chain travels as raw little-endian columns (msgpack bin), not lists of numbers: thousands
# of rows then cost one buffer per column on both sides instead of a Python float per cell.
# The layout (CHAIN_COLUMNS) lives with the numpy-free reader the portfolio checks orders with.


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
    try:
        multiplier = venue_spec(d.get("venue")).underlying(d.get("underlying")).multiplier
        return OptionChain(d["venue"], d["underlying"], multiplier, int(d["ts"]), float(d["spot"]), **arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise ChainReplyError(f"chain reply: {exc}") from None


class PricerService:
    def __init__(self, cfg: Config, runtime: ServiceRuntime | None, source: MarkSource | None = None) -> None:
        self.cfg = cfg
        self.rt = runtime
        self.source = source if source is not None else build_mark_source(cfg, runtime.log if runtime else None)
        self.spot: dict[str, float] = {}
        self.market_ts = 0
        self.chains_served = 0
        self.marks_served = 0

    def on_message(self, topic: str, env: Envelope) -> None:
        body = env.body
        if env.type != "tick" or not isinstance(body, dict):
            return
        symbol, price, ts = body.get("symbol"), body.get("price"), body.get("ts")
        if isinstance(symbol, str) and isinstance(price, (int, float)) and price > 0 and isinstance(ts, int):
            self.spot[symbol.split("/")[0]] = float(price)
            self.market_ts = max(self.market_ts, ts)

    def _spot(self, underlying: Any) -> float:
        spot = self.spot.get(underlying) if isinstance(underlying, str) else None
        if spot is None:
            raise RequestError("no_price", f"no spot price for {underlying!r} yet")
        return spot

    def on_chain(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RequestError("bad_request", "chain needs {underlying, venue}")
        underlying, venue = body.get("underlying"), body.get("venue", "deribit")
        horizon = body.get("horizon_days", CHAIN_HORIZON_DAYS)
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= CHAIN_HORIZON_DAYS:
            raise RequestError("bad_request", f"chain.horizon_days: expected an integer 1..{CHAIN_HORIZON_DAYS}, "
                                              f"got {horizon!r}")
        try:
            spec = venue_spec(venue)
            spec.underlying(underlying)
        except ValueError as exc:
            raise RequestError("bad_request", f"chain: {exc}") from None
        chain = self.source.chain(spec, underlying, self._spot(underlying), self.market_ts, horizon)
        self.chains_served += 1
        return chain_to_dict(chain) | {"source": self.source.name}

    def _marks(self, items: Any, key: str) -> dict[str, Any]:
        if not isinstance(items, list) or len(items) > MAX_CONTRACTS:
            raise RequestError("bad_request", f"{key}: expected a list of at most {MAX_CONTRACTS} contracts")
        try:
            contracts = [_contract(item, f"{key}[{i}]") for i, item in enumerate(items)]
        except ContractError as exc:
            raise RequestError("bad_request", str(exc)) from None
        marks = self.source.marks(contracts, self.spot, self.market_ts)
        self.marks_served += len(marks)
        missing = sorted({c.name for c in contracts} - set(marks))
        return {"ts": self.market_ts, "marks": marks, "missing": missing}

    def on_price(self, body: Any) -> dict[str, Any]:
        return self._marks(body.get("contracts") if isinstance(body, dict) else None, "price.contracts")

    def on_mark(self, body: Any) -> dict[str, Any]:
        return self._marks(body.get("positions") if isinstance(body, dict) else None, "mark.positions")

    def on_iv(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RequestError("bad_request", "iv needs {underlying, days?}")
        underlying, days = body.get("underlying"), body.get("days", IV_HISTORY_DAYS)
        self._spot(underlying)  # only underlyings the feed prices
        try:
            history = self.source.iv_history(underlying, self.market_ts, days)
        except ValueError as exc:
            raise RequestError("bad_request", f"iv: {exc}") from None
        atm = self.source.atm_iv(underlying, self.market_ts)
        return {"underlying": underlying, "ts": self.market_ts, "atm_iv": atm, "history": history.tolist(),
                "iv_rank": iv_rank(history, atm), "source": self.source.name}

    def status(self, _body: Any = None) -> dict[str, Any]:
        return {"market_ts": self.market_ts, "spot": dict(self.spot), "chains_served": self.chains_served,
                "marks_served": self.marks_served, "source": self.source.name}


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(config_path(argv))
    rt = ServiceRuntime("pricer")
    svc = PricerService(cfg, rt)
    ep = cfg.endpoints["pricer"]
    rt.bind_publisher(ep.pub)
    rt.bind_replier(ep.rep, {"chain": svc.on_chain, "price": svc.on_price, "mark": svc.on_mark, "iv": svc.on_iv,
                             "status": svc.status})
    rt.subscribe([cfg.endpoints["marketdata"].pub], ["tick."], svc.on_message)
    rt.heartbeat_status(svc.status)
    rt.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
