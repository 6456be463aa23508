"""Command-line tools users of the seed know: check-strategy, check-price, check-options,
check-options-ibkr, tap.

check-strategy and check-price ask the running marketdata service first; when no stack is
up they build the configured feed in-process (the sim is deterministic, so the answer is the
one the stack would give at the same market time). check-options asks the running pricer for
its chain and IV the same way, or prices on the configured mark source in-process.

They all speak on the bus with the read-only ``reader`` key from ``bus.keys_dir``: they may
subscribe and read, never order.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import zmq

from common.bus import RemoteError, Requester, RequestFailed, Subscriber
from common.bus_auth import READER, BusKeysError, BusSecurity
from common.ohlcv import OHLCV
from config.settings import ConfigError, load_config
from services.runtime import DEFAULT_CONFIG, bus_security

if TYPE_CHECKING:
    from options.contracts import OptionPosition

HISTORY_LIMIT = 1000


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=os.environ.get("GO_TRADER_CONFIG") or DEFAULT_CONFIG,
                        help="config file (default: $GO_TRADER_CONFIG or config/default.json)")


def _fail(message: str) -> int:
    """The seed's JSON error on stdout, and the same line for people on stderr; exit status 1."""
    print(json.dumps({"error": message}))
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr)
    return 1


class SourceUnavailable(RuntimeError):
    """Neither the running stack nor a feed built here can answer: what was tried, what failed
    and what to do next."""


def reader_security(cfg: Any) -> BusSecurity | None:
    """The read-only bus key, or None when it cannot be read: the tools then answer from a local
    feed, saying why on stderr unless no stack ever made keys here."""
    try:
        return bus_security(cfg, READER)
    except BusKeysError as exc:
        if cfg.bus.keys_dir.exists():
            print(f"not asking the running services: {exc}", file=sys.stderr)
        return None


class MarketSource:
    """Bars and prices from the running marketdata service, or from a feed built here."""

    def __init__(self, cfg: Any, config_file: str = "the config") -> None:
        self.cfg = cfg
        self.ctx = zmq.Context()
        endpoint = cfg.endpoints["marketdata"].rep
        self.security = reader_security(cfg)
        self.req: Requester | None = None
        self.feed = None
        if self.security is not None:
            self.req = Requester(self.ctx, endpoint, "cli", timeout_ms=700, retries=1, security=self.security)
            try:
                self.status = self.req.request("status")
                self.origin = "marketdata service"
                return
            except RequestFailed:
                pass
        from services.feeds.market import build_feed_from_config

        down = f"marketdata at {endpoint} (endpoints.marketdata.rep in {config_file}) did not answer"
        self.feed = build_feed_from_config(cfg)
        self.feed.start(None if cfg.feed.mode == "live" else cfg.feed.start_ms)  # live: now
        self.status = {"market_ts": self.feed.now_ts}
        self.origin = f"local {cfg.feed.mode} feed"
        if cfg.feed.mode == "live" and not self.feed.prices():
            reasons = getattr(self.feed, "stale_reasons", lambda: [])()
            live = cfg.feed.live
            self.close()
            raise SourceUnavailable(
                f"{down}, and a local live feed got no data from {live.exchange} "
                f"({live.binance_url or 'its public API'}): {reasons[0] if reasons else 'no prices'}. "
                f"Check the network (or feed.live in {config_file}), or start the stack (`go-trader start`)")
        print(f"{Path(sys.argv[0]).name}: {down}; using a {self.origin} instead", file=sys.stderr)

    def history(self, symbol: str, timeframe: str) -> OHLCV:
        if self.feed is not None:
            return self.feed.history(symbol, timeframe, HISTORY_LIMIT)
        reply = self.req.request("history", {"symbol": symbol, "timeframe": timeframe, "limit": HISTORY_LIMIT})
        return OHLCV.from_rows(reply["rows"])

    def prices(self) -> dict[str, Any]:
        if self.feed is not None:
            return {s: {"price": p, "ts": t} for s, (p, t) in self.feed.prices().items()}
        return self.req.request("prices")["prices"]

    def close(self) -> None:
        getattr(self.feed, "stop", lambda: None)()
        if self.req is not None:
            self.req.close()
        self.ctx.term()


def _with_source(config: str, work: Callable[[MarketSource], int]) -> int:
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        source = MarketSource(cfg, config)
    except SourceUnavailable as exc:
        return _fail(str(exc))
    try:
        return work(source)
    except (ValueError, RemoteError, RequestFailed, SourceUnavailable) as exc:
        return _fail(str(exc))
    finally:
        source.close()


def check_strategy_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check-strategy",
                                     description="Print a strategy's signal on the latest bar as JSON.")
    parser.add_argument("strategy")
    parser.add_argument("symbol")
    parser.add_argument("timeframe")
    parser.add_argument("pair", nargs="?", help="second leg for pairs_spread")
    parser.add_argument("--params", default="{}", help="JSON object of strategy parameters")
    _config_arg(parser)
    args = parser.parse_args(argv)
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        return _fail(f"--params: not JSON: {exc}")

    def work(source: MarketSource) -> int:
        from strategies.registry import latest_signal

        data = source.history(args.symbol, args.timeframe)
        pair = source.history(args.pair, args.timeframe) if args.pair else None
        latest = latest_signal(args.strategy, data, params, pair)
        print(json.dumps({
            "strategy": args.strategy, "symbol": args.symbol, "timeframe": args.timeframe,
            "signal": latest.signal, "price": latest.price, "indicators": latest.indicators,
            "timestamp": latest.ts_bar, "enough_history": latest.enough_history, "source": source.origin,
        }))
        return 0

    return _with_source(args.config, work)


def check_price_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check-price", description="Print the latest price of each symbol as JSON.")
    parser.add_argument("symbols", nargs="*")
    _config_arg(parser)
    args = parser.parse_args(argv)

    def work(source: MarketSource) -> int:
        prices = source.prices()
        wanted = args.symbols or sorted(prices)
        unknown = [s for s in wanted if s not in prices]
        if unknown:
            has = f"it has {', '.join(sorted(prices))} (feed.symbols)" if prices else "it has no prices yet"
            return _fail(f"no price for {', '.join(unknown)} from the {source.origin}; {has}")
        print(json.dumps({s: prices[s]["price"] for s in wanted} | {"market_ts": source.status["market_ts"],
                                                                    "source": source.origin}))
        return 0

    return _with_source(args.config, work)


def _positions_arg(text: str) -> list[OptionPosition]:
    """Open positions as JSON: a list of {contract | instrument, quantity, entry_premium, entry_ts?, greeks?}."""
    from options.contracts import OptionContract, OptionPosition, parse_instrument_name

    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"positions: not JSON: {exc}") from None
    if not isinstance(items, list):
        raise ValueError(f"positions: expected a JSON list, got {type(items).__name__}")
    positions = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"positions[{i}]: expected an object")
        where = f"positions[{i}]"
        if isinstance(item.get("instrument"), str):
            contract = parse_instrument_name(item["instrument"])
        else:
            contract = OptionContract.from_dict(item.get("contract"), f"{where}.contract")
        for key in ("quantity", "entry_premium"):
            if isinstance(item.get(key), bool) or not isinstance(item.get(key), (int, float)):
                raise ValueError(f"{where}.{key}: expected a number, got {item.get(key)!r}")
        positions.append(OptionPosition(contract, float(item["quantity"]), float(item["entry_premium"]),
                                        int(item.get("entry_ts", 0)), dict(item.get("greeks", {}))))
    return positions


class ChainSource:
    """Chain and IV from the running pricer, or from the configured mark source in-process."""

    def __init__(self, cfg: Any, source: MarketSource) -> None:
        from services.pricer import build_mark_source

        self.source = source
        self.req: Requester | None = None
        if source.security is not None:
            self.req = Requester(source.ctx, cfg.endpoints["pricer"].rep, "cli", timeout_ms=700, retries=1,
                                 security=source.security)
            try:
                self.req.request("status")
                self.surface = None
                self.origin = "pricer service"
                return
            except RequestFailed:
                pass
        self.surface = build_mark_source(cfg)
        self.origin = f"local {self.surface.name} surface"

    def chain_and_iv(self, underlying: str, venue: str) -> tuple[Any, dict[str, Any]]:
        from options.chain import chain_from_dict
        from options.chain_wire import OPTIONS_HORIZON_DAYS
        from options.venues import venue_spec
        from options.vol_surface import iv_rank

        if self.surface is None:
            chain = chain_from_dict(self.req.request("chain", {"underlying": underlying, "venue": venue,
                                                               "horizon_days": OPTIONS_HORIZON_DAYS}))
            days = self.source.cfg.options.iv_rank_days
            return chain, self.req.request("iv", {"underlying": underlying, "days": days})
        prices = self.source.prices()
        symbol = f"{underlying}/{self.source.cfg.options.underlying_quote}"
        if symbol not in prices:
            raise ValueError(f"no price for {symbol}; the feed has {', '.join(sorted(prices))}")
        ts = self.source.status["market_ts"]
        chain = self.surface.chain(venue_spec(venue), underlying, prices[symbol]["price"], ts, OPTIONS_HORIZON_DAYS)
        history = self.surface.iv_history(underlying, ts, self.source.cfg.options.iv_rank_days)
        atm = self.surface.atm_iv(underlying, ts)
        return chain, {"atm_iv": atm, "history": history.tolist(), "iv_rank": iv_rank(history, atm)}

    def close(self) -> None:
        if self.req is not None:
            self.req.close()


def _check_options(venue: str, prog: str, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=f"Print a {venue} options strategy's scored actions "
                                                            "as JSON.")
    parser.add_argument("strategy", help="vol_mean_reversion, momentum_options, protective_puts, covered_calls, wheel")
    parser.add_argument("underlying", help="BTC or ETH")
    parser.add_argument("positions", nargs="?", default="[]", help="open positions as a JSON list (default: [])")
    parser.add_argument("--capital", type=float, help="capital in USD (default: the configured strategy's, else "
                                                      "10000)")
    parser.add_argument("--params", default="{}", help="JSON object of strategy parameters")
    parser.add_argument("--coins", type=float, default=0.0,
                        help="coins of the underlying the strategy holds, bought at spot (default 0)")
    _config_arg(parser)
    args = parser.parse_args(argv)

    def work(source: MarketSource) -> int:
        from options.risk import OptionsRiskLimits
        from trading.book_view import BookView
        from trading.engine import evaluate_options, options_strategy
        from trading.option_inputs import OptionsMarket

        params = json.loads(args.params)
        positions = _positions_arg(args.positions)
        if not args.coins >= 0:
            raise ValueError(f"--coins: must be a number >= 0, got {args.coins!r}")
        cfg = source.cfg
        configured = next((sc for sc in cfg.options_strategies() if (sc.strategy, sc.venue, sc.underlying)
                           == (args.strategy, venue, args.underlying)), None)
        capital = args.capital or (configured.capital if configured else 10_000.0)
        chains = ChainSource(cfg, source)
        try:
            chain, iv = chains.chain_and_iv(args.underlying, venue)
        finally:
            chains.close()
        timeframe = cfg.options.timeframe
        sid = f"check-{args.strategy}"
        book = BookView(sid, chain.ts, capital - args.coins * chain.spot, capital, capital, capital,
                        tuple(positions), args.coins, chain.spot if args.coins else 0.0)
        venue_cfg = cfg.venue_options(venue)
        strategy = options_strategy(
            sid, args.strategy, venue, args.underlying, timeframe,
            {**configured.params, **params} if configured else params,
            min_score=venue_cfg.min_score, max_positions=venue_cfg.max_positions,
            limits=OptionsRiskLimits(max_drawdown_pct=configured.max_drawdown_pct) if configured else None,
            theta_harvest=configured.theta_harvest if configured else None)
        decision = evaluate_options(
            strategy, OptionsMarket.from_replies({(args.underlying, venue): chain}, {args.underlying: iv}), book,
            source.history(f"{args.underlying}/{cfg.options.underlying_quote}", timeframe), chain.ts)
        print(json.dumps({
            "strategy": args.strategy, "underlying": args.underlying, "venue": venue, "spot": chain.spot,
            "atm_iv": iv["atm_iv"], "iv_rank": iv["iv_rank"], "ts": chain.ts, "capital": capital,
            "coins": args.coins, **decision.summary(), "actions": decision.actions, "reasons": decision.reasons,
            "refused": decision.refused, "skipped": decision.skipped, "source": f"{source.origin}, {chains.origin}",
        }))
        return 0

    return _with_source(args.config, work)


def check_options_main(argv: list[str] | None = None) -> int:
    return _check_options("deribit", "check-options", argv)


def check_options_ibkr_main(argv: list[str] | None = None) -> int:
    return _check_options("ibkr", "check-options-ibkr", argv)


TAP_NOTICE_SECONDS = 5.0  # how often tap repeats that nothing has arrived yet


def tap_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tap", description="Print messages from the bus as JSON lines "
                                                             "(every type is described in docs/BUS.md).")
    parser.add_argument("topics", nargs="*", default=["signal."], help="topic prefixes (default: signal.)")
    parser.add_argument("--service", default="signals",
                        choices=["marketdata", "signals", "portfolio", "pricer"], help="whose PUB to tap")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages (0: run until Ctrl-C)")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="stop after this many seconds (0: no limit); exit 1 if nothing arrived by then")
    _config_arg(parser)
    args = parser.parse_args(argv)
    if args.count < 0 or not 0 <= args.timeout < float("inf"):
        parser.error(f"--count and --timeout must be finite and >= 0, got {args.count} and {args.timeout:g}")
    try:
        cfg = load_config(args.config)
        security = bus_security(cfg, READER)
    except (ConfigError, BusKeysError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    endpoint = cfg.endpoints[args.service].pub
    waiting = (f"{' '.join(repr(t) for t in args.topics)} on {endpoint} "
               f"(endpoints.{args.service}.pub in {args.config})")
    print(f"tap: waiting for {waiting}; nothing has arrived yet", file=sys.stderr, flush=True)
    ctx = zmq.Context()
    sub = Subscriber(ctx, [endpoint], args.topics, security=security)
    seen = 0
    started = time.monotonic()
    deadline = started + args.timeout if args.timeout else float("inf")
    next_notice = started + TAP_NOTICE_SECONDS
    try:
        while not args.count or seen < args.count:
            now = time.monotonic()
            if now >= deadline:
                break
            if not seen and now >= next_notice:
                print(f"tap: nothing has arrived after {now - started:.0f} s from {waiting}: is the stack running "
                      f"(`go-trader status`) and is that the topic you want?", file=sys.stderr, flush=True)
                next_notice = now + TAP_NOTICE_SECONDS
            wake = min(now + 1.0, deadline, next_notice if not seen else deadline)
            got = sub.receive(max(1, int((wake - now) * 1000)))
            if got is None:
                continue
            topic, env = got
            print(json.dumps({"topic": topic, "type": env.type, "source": env.source, "seq": env.seq,
                              "body": env.body}, default=str), flush=True)
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
        ctx.term()
    if args.timeout and not seen:
        print(f"tap: nothing arrived in {args.timeout:g} s from {waiting}. Start the stack (`go-trader start`) or "
              f"check the topic prefix (docs/BUS.md lists them)", file=sys.stderr)
        return 1
    return 0
