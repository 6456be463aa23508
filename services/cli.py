"""Command-line tools users of the seed know: check-strategy, check-price, tap.

check-strategy and check-price ask the running marketdata service first; when no stack is
up they build the configured feed in-process (the sim is deterministic, so the answer is the
one the stack would give at the same market time).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

import zmq

from common.bus import RemoteError, RequestFailed, Requester, Subscriber
from common.config import ConfigError, load_config
from common.ohlcv import OHLCV
from services.runtime import DEFAULT_CONFIG

HISTORY_LIMIT = 1000


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=os.environ.get("GO_TRADER_CONFIG") or DEFAULT_CONFIG,
                        help="config file (default: $GO_TRADER_CONFIG or config/default.json)")


def _fail(message: str) -> int:
    print(json.dumps({"error": message}))
    return 1


class MarketSource:
    """Bars and prices from the running marketdata service, or from a feed built here."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.ctx = zmq.Context()
        self.req = Requester(self.ctx, cfg.endpoints["marketdata"].rep, "cli", timeout_ms=700, retries=1)
        self.feed = None
        try:
            self.status = self.req.request("status")
            self.origin = "marketdata service"
        except RequestFailed:
            from common.feeds import build_feed_from_config

            self.feed = build_feed_from_config(cfg)
            self.feed.start(None if cfg.feed.mode == "live" else cfg.feed.start_ms)  # live: now
            self.status = {"market_ts": self.feed.now_ts}
            self.origin = f"local {cfg.feed.mode} feed"

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
        self.req.close()
        self.ctx.term()


def _with_source(config: str, work: Callable[[MarketSource], int]) -> int:
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    source = MarketSource(cfg)
    try:
        return work(source)
    except (ValueError, RemoteError) as exc:
        return _fail(str(exc))
    finally:
        source.close()


def check_strategy_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check-strategy", description="Print a strategy's signal on the latest bar as JSON.")
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
            return _fail(f"no price for {', '.join(unknown)}; the feed has {', '.join(sorted(prices))}")
        print(json.dumps({s: prices[s]["price"] for s in wanted} | {"market_ts": source.status["market_ts"],
                                                                    "source": source.origin}))
        return 0

    return _with_source(args.config, work)


def tap_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tap", description="Print messages from the bus as JSON lines.")
    parser.add_argument("topics", nargs="*", default=["signal."], help="topic prefixes (default: signal.)")
    parser.add_argument("--service", default="signals",
                        choices=["marketdata", "signals", "portfolio", "pricer"], help="whose PUB to tap")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages (0: run until Ctrl-C)")
    _config_arg(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    ctx = zmq.Context()
    sub = Subscriber(ctx, [cfg.endpoints[args.service].pub], args.topics)
    seen = 0
    try:
        while not args.count or seen < args.count:
            got = sub.receive(1000)
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
    return 0
