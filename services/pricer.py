"""pricer: option chains and Black-Scholes prices for the venues the options strategies trade.

Subscribes  tick.* from marketdata (spot of each underlying)
Answers     chain {underlying, venue, horizon_days?} -> listed expiries x strikes with marks, IV, greeks;
            price {contracts: [contract dict | name]} -> {marks: {name: {mark_usd, iv, greeks, source}}};
            mark {positions: [contract dict | position dict]} -> the same, for open positions;
            iv {underlying, days?, target_days?} -> {atm_iv, history (daily, oldest first), iv_rank};
            status
Publishes   chain.<venue>.<underlying> (the chain reply) and iv.<underlying> (the iv reply) for every
            chain the options strategies read, once per options interval of market time, so the
            options engines read the latest instead of asking per batch;
            heartbeat.pricer (its problems: ``deribit_iv`` while Deribit's vol cannot be read)
Calls       options.marks (the mark source), options.venues, options.contracts

Marks come from a MarkSource (options.marks). With the sim and replay feeds that is the
SimSurface: a seeded mean-reverting ATM vol with a smile, so every restart prices the same
market time the same way. IBKR/CME contracts are marked on that Deribit-style surface (the
proxy). Expired contracts are marked at intrinsic value from the current spot. In live mode
it is services.feeds.deribit.LiveDeribitSource: every number from Deribit (chain mark_iv, DVOL
history cached beside the state file), never from the sim; while Deribit's vol cannot be
read, ``iv`` and ``chain`` answer the error ``no_live_iv`` so no options trade opens.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common.bus import Envelope, RequestError
from common.timeframes import DAY_MS
from config.settings import Config, load_config
from options.chain import chain_to_dict
from options.chain_wire import CHAIN_HORIZON_DAYS, OPTIONS_HORIZON_DAYS
from options.contracts import ContractError, OptionContract, parse_instrument_name
from options.iv_history import IV_TARGET_DAYS, LiveIvUnavailable
from options.marks import MarkSource, SimSurface
from options.venues import venue_spec
from options.vol_surface import iv_rank
from services.feeds.ibkr import IbkrListedSource, build_chain_reader
from services.runtime import ServiceRuntime, config_path, service_cores

MAX_CONTRACTS = 500
MAX_IV_DAYS = 1000
LIVE_IV_RETRY_SECONDS = 30.0  # a failing live vol is re-read this often, so the problem clears on its own
PUBLISH_CHECK_SECONDS = 0.1  # how often (wall) the pricer looks whether a new interval began


def build_mark_source(cfg: Config, log: Any = None) -> MarkSource:
    """The sim surface, anchored where the sim feed's path starts (so restarts agree); in live
    mode Deribit alone (chains, marks, greeks at mark_iv, ATM vol, DVOL history cached in the
    state file's folder); with ``ibkr.host`` set, IBKR chains cut to the CME contracts IBKR
    really lists."""
    if cfg.feed.mode == "live":
        from services.feeds.deribit import DeribitClient, DvolHistory, LiveDeribitSource  # requests only in live mode

        client = DeribitClient(cfg.feed.live.deribit_url)
        dvol = DvolHistory(client, Path(cfg.state_file).parent, cfg.options.iv_rank_days, log)
        source: MarkSource = LiveDeribitSource(client, dvol, log)
    else:
        origin = cfg.feed.start_ms - cfg.feed.start_ms % DAY_MS - cfg.feed.history_days * DAY_MS
        rates = {venue: cfg.venue_options(venue).risk_free_rate for venue in cfg.options.venues}
        source = SimSurface(cfg.feed.seed, origin, rates=rates)
    reader = build_chain_reader(cfg)  # None unless ibkr.host is set
    return source if reader is None else IbkrListedSource(source, reader, log)


def _contract(item: Any, where: str) -> OptionContract:
    """A contract dict, a position dict holding one, or an instrument name."""
    if isinstance(item, str):
        return parse_instrument_name(item)
    if isinstance(item, dict) and isinstance(item.get("contract"), dict):
        item = item["contract"]
    return OptionContract.from_dict(item, where)


class PricerService:
    def __init__(self, cfg: Config, runtime: ServiceRuntime | None, source: MarkSource | None = None) -> None:
        self.cfg = cfg
        self.rt = runtime
        self.source = source if source is not None else build_mark_source(cfg, runtime.log if runtime else None)
        self.spot: dict[str, float] = {}
        self.market_ts = 0
        self.chains_served = 0
        self.marks_served = 0
        self.option_underlyings = {s.underlying for s in cfg.options_strategies()}
        self.chain_needs = sorted({(s.venue, s.underlying) for s in cfg.options_strategies()})
        self.publish_interval_ms = min((s.interval_seconds for s in cfg.options_strategies()), default=0) * 1000
        self.published_slot = -1
        self.chains_published = 0

    def on_message(self, topic: str, env: Envelope) -> None:
        body = env.body
        if env.type != "tick" or not isinstance(body, dict):
            return
        symbol, price, ts = body.get("symbol"), body.get("price"), body.get("ts")
        if isinstance(symbol, str) and isinstance(price, (int, float)) and price > 0 and isinstance(ts, int):
            underlying = symbol.split("/")[0]
            first = underlying not in self.spot
            self.spot[underlying] = float(price)
            self.market_ts = max(self.market_ts, ts)
            warm_up = getattr(self.source, "warm_up", None)
            if first and warm_up is not None and underlying in self.option_underlyings:
                warm_up(underlying, self.market_ts)  # the DVOL history, fetched at start
                self.sync_problems()

    def sync_problems(self) -> None:
        """``rt.problems["deribit_iv"]`` while the live source cannot read Deribit's vol."""
        read = getattr(self.source, "problem", None)
        problem = read() if read is not None else None
        if self.rt is None:
            return
        if problem:
            self.rt.problems["deribit_iv"] = problem
        else:
            self.rt.problems.pop("deribit_iv", None)

    def retry_live_iv(self) -> None:
        """Re-read the vol of each failing underlying (within the source's backoff), so the
        problem clears as soon as Deribit answers again, not at the next options batch."""
        for underlying in getattr(self.source, "failing_underlyings", lambda: [])():
            try:
                self.source.atm_iv(underlying, self.market_ts)
                self.source.iv_history(underlying, self.market_ts, self.cfg.options.iv_rank_days)
            except LiveIvUnavailable:
                pass
        self.sync_problems()

    def _live(self, read: Any) -> Any:
        """``read()``; a live vol that cannot be read is the request error ``no_live_iv``."""
        try:
            return read()
        except LiveIvUnavailable as exc:
            raise RequestError("no_live_iv", str(exc)) from None
        finally:
            self.sync_problems()

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
        spot = self._spot(underlying)
        chain = self._live(lambda: self.source.chain(spec, underlying, spot, self.market_ts, horizon))
        self.chains_served += 1
        return chain_to_dict(chain) | {"source": self.source.name}

    def _marks(self, items: Any, key: str) -> dict[str, Any]:
        if not isinstance(items, list) or len(items) > MAX_CONTRACTS:
            raise RequestError("bad_request", f"{key}: expected a list of at most {MAX_CONTRACTS} contracts")
        try:
            contracts = [_contract(item, f"{key}[{i}]") for i, item in enumerate(items)]
        except ContractError as exc:
            raise RequestError("bad_request", str(exc)) from None
        marks = self._live(lambda: self.source.marks(contracts, self.spot, self.market_ts))
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
        underlying, days = body.get("underlying"), body.get("days", self.cfg.options.iv_rank_days)
        target = body.get("target_days", IV_TARGET_DAYS)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_IV_DAYS:
            raise RequestError("bad_request", f"iv.days: expected an integer 1..{MAX_IV_DAYS}, got {days!r}")
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= CHAIN_HORIZON_DAYS:
            raise RequestError("bad_request", f"iv.target_days: expected a number in (0, {CHAIN_HORIZON_DAYS}], "
                                              f"got {target!r}")
        self._spot(underlying)  # only underlyings the feed prices
        try:
            history = self._live(lambda: self.source.iv_history(underlying, self.market_ts, days))
            atm = self._live(lambda: self.source.atm_iv(underlying, self.market_ts, float(target)))
        except RequestError:
            raise
        except ValueError as exc:
            raise RequestError("bad_request", f"iv: {exc}") from None
        return {"underlying": underlying, "ts": self.market_ts, "atm_iv": atm, "history": history.tolist(),
                "iv_rank": iv_rank(history, atm), "source": self.source.name}

    def publish_chains(self) -> None:
        """Each chain and IV the options strategies read, once per options interval (market time):
        when the market enters a new interval, every engine gets them without asking."""
        if not self.publish_interval_ms or self.rt is None or not self.market_ts:
            return
        slot = self.market_ts // self.publish_interval_ms
        if slot == self.published_slot:
            return
        published_iv: set[str] = set()
        for venue, underlying in self.chain_needs:
            try:
                chain = self.on_chain({"underlying": underlying, "venue": venue, "horizon_days": OPTIONS_HORIZON_DAYS})
                if underlying not in published_iv:
                    iv = self.on_iv({"underlying": underlying})
                    self.rt.publisher.publish(f"iv.{underlying}", "iv", iv)
                    published_iv.add(underlying)
            except RequestError as exc:  # no spot yet, or no live vol: engines fall back to asking
                self.rt.log.warning("chain_not_published", venue=venue, underlying=underlying, error=str(exc))
                return
            self.rt.publisher.publish(f"chain.{venue}.{underlying}", "chain", chain)
            self.chains_published += 1
        self.published_slot = slot

    def status(self, _body: Any = None) -> dict[str, Any]:
        return {"market_ts": self.market_ts, "spot": dict(self.spot), "chains_served": self.chains_served,
                "chains_published": self.chains_published, "marks_served": self.marks_served,
                "source": self.source.name}


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(config_path(argv))
    rt = ServiceRuntime("pricer", background=cfg.cpu, cores=service_cores(cfg.cpu, fill_path=False))
    svc = PricerService(cfg, rt)
    ep = cfg.endpoints["pricer"]
    rt.bind_publisher(ep.pub)
    rt.bind_replier(ep.rep, {"chain": svc.on_chain, "price": svc.on_price, "mark": svc.on_mark, "iv": svc.on_iv,
                             "status": svc.status})
    rt.subscribe([cfg.endpoints["marketdata"].pub], ["tick."], svc.on_message)
    rt.hold_at_closes(cfg)
    rt.heartbeat_status(svc.status)
    rt.every(LIVE_IV_RETRY_SECONDS, svc.retry_live_iv)
    rt.every(PUBLISH_CHECK_SECONDS, svc.publish_chains, housekeeping=True)  # a new interval begins at a close
    rt.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
