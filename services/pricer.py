"""pricer: option chains and Black-Scholes prices for the venues the options strategies trade.

Subscribes  tick.* from marketdata (spot of each underlying)
Answers     chain {underlying, venue} -> listed expiries x strikes with marks, IV and greeks;
            status
Publishes   heartbeat.pricer
Calls       options.chain.build_chain, options.venues, options.vol_surface

In sim mode the ATM implied vol follows options.vol_surface.simulate_atm_iv, seeded from the
feed's seed, so every restart prices the same market time the same way.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from common.bus import Envelope, RequestError
from common.config import Config, load_config
from options.chain import OptionChain, build_chain
from options.venues import venue_spec
from options.vol_surface import simulate_atm_iv
from services.runtime import ServiceRuntime, config_path

BASE_IV = {"BTC": 0.55, "ETH": 0.70}


def chain_to_dict(chain: OptionChain) -> dict[str, Any]:
    return {
        "underlying": chain.underlying, "venue": chain.venue, "spot": chain.spot, "ts": chain.ts,
        "rows": {name: getattr(chain, name).tolist()
                 for name in ("expiry_ts", "strike", "is_call", "iv", "mark", "delta", "gamma", "theta", "vega")},
    }


class PricerService:
    def __init__(self, cfg: Config, runtime: ServiceRuntime) -> None:
        self.cfg = cfg
        self.rt = runtime
        self.spot: dict[str, float] = {}
        self.market_ts = 0
        self.chains_served = 0

    def on_message(self, topic: str, env: Envelope) -> None:
        body = env.body
        if env.type != "tick" or not isinstance(body, dict):
            return
        symbol, price, ts = body.get("symbol"), body.get("price"), body.get("ts")
        if isinstance(symbol, str) and isinstance(price, (int, float)) and price > 0 and isinstance(ts, int):
            self.spot[symbol.split("/")[0]] = float(price)
            self.market_ts = max(self.market_ts, ts)

    def atm_iv(self, underlying: str, ts: int) -> float:
        seed = self.cfg.feed.seed + sum(map(ord, underlying))
        return float(simulate_atm_iv(seed, np.array([ts], dtype=np.int64), BASE_IV.get(underlying, 0.6))[-1])

    def on_chain(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RequestError("bad_request", "chain needs {underlying, venue}")
        underlying, venue = body.get("underlying"), body.get("venue", "deribit")
        try:
            spec = venue_spec(venue)
            spec.underlying(underlying)
        except ValueError as exc:
            raise RequestError("bad_request", str(exc)) from None
        spot = self.spot.get(underlying)
        if spot is None:
            raise RequestError("no_price", f"no spot price for {underlying} yet")
        chain = build_chain(spec, underlying, spot, self.market_ts, self.atm_iv(underlying, self.market_ts),
                            r=self.cfg.options.risk_free_rate)
        self.chains_served += 1
        return chain_to_dict(chain)

    def status(self, _body: Any = None) -> dict[str, Any]:
        return {"market_ts": self.market_ts, "spot": dict(self.spot), "chains_served": self.chains_served}


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(config_path(argv))
    rt = ServiceRuntime("pricer")
    svc = PricerService(cfg, rt)
    ep = cfg.endpoints["pricer"]
    rt.bind_publisher(ep.pub)
    rt.bind_replier(ep.rep, {"chain": svc.on_chain, "status": svc.status})
    rt.subscribe([cfg.endpoints["marketdata"].pub], ["tick."], svc.on_message)
    rt.heartbeat_status(svc.status)
    rt.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
