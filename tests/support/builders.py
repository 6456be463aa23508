"""The test builders several test modules share, in one place: strategy signal events, log
records, spot orders as the engines send them, marketdata ticks, the journal as written, the
portfolio service in this process (and the books a restart must give back), and the recorded
Binance.US / Deribit responses served on loopback.

Builders build and drive; what a test proves stays in its assertions (the one exception is
``trade``'s check that the position its crash liquidates was opened).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pytest

from common.bus import Envelope
from common.bus_auth import generate_keys
from config.settings import Config, parse_config
from options.contracts import OptionPosition, parse_instrument_name
from services.feeds.deribit import DeribitClient
from services.portfolio import PortfolioService
from services.runtime import ServiceRuntime, bus_security
from services.views.status import BookClone
from strategies.events import StrategyOutput
from tests.support.replay_server import BinanceReplay, DeribitReplay, ReplayServer
from tests.support.stack import stack_config
from trading.ledger import Position, StrategyBook, new_book


# --- strategies and logs --------------------------------------------------------------------------
def events(output: StrategyOutput) -> tuple[list[int], list[int]]:
    """The bars a strategy buys on and the bars it sells on."""
    return np.flatnonzero(output.signals == 1).tolist(), np.flatnonzero(output.signals == -1).tolist()


def log_events(text: str, name: str) -> list[dict[str, Any]]:
    """The structured log records of event ``name`` in ``text`` (one JSON record a line; other
    lines, such as a test runner's own output, are not records and are passed over)."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == name:
            records.append(record)
    return records


# --- orders, ticks and the journal ---------------------------------------------------------------
def spot_order(sid: str, symbol: str, price: float, ts: int, signal: int = 1,
               order_id: str | None = None) -> dict[str, Any]:
    """A spot order body as a signal engine sends it; its id is ``<strategy>:<bar ts>``."""
    return {"order_id": order_id or f"{sid}:{ts}", "strategy_id": sid, "symbol": symbol, "signal": signal,
            "price": price, "ts_event": ts}


def tick_envelope(symbol: str, price: float, ts: int) -> Envelope:
    """marketdata's tick of ``symbol`` at market time ``ts``."""
    return Envelope(1, "tick", f"t{ts}", ts, "marketdata", 0, {"symbol": symbol, "price": price, "ts": ts})


def tick(svc: Any, symbol: str, price: float, ts: int) -> None:
    """Deliver marketdata's tick to a service as its subscription would."""
    svc.on_message(f"tick.{symbol}", tick_envelope(symbol, price, ts))


def journal(where: Path | PortfolioService) -> list[dict[str, Any]]:
    """The records in journal.jsonl as written on disk, of a state directory or of a running
    portfolio service; [] while there is none."""
    path = where.journal.path if isinstance(where, PortfolioService) else Path(where) / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# --- the portfolio service in this process -----------------------------------------------------------
HOUR = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
SCENARIO_PRICES = {"BTC/USDT": 90_000.0, "ETH/USDT": 3_000.0, "SOL/USDT": 150.0}


class InProcessPortfolio:
    """The portfolio service in this process: ``with InProcessPortfolio(cfg) as svc:`` starts it
    from its files as ``main`` does (a refusal raises here) and stops it (state saved) as SIGTERM
    does. Its publisher is bound: fills are published; nobody listens here."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rt = ServiceRuntime("portfolio", bus_security(cfg, "portfolio"))
        try:
            self.svc = PortfolioService(cfg, self.rt)
        except BaseException:
            self.rt.close()
            raise
        self.rt.bind_publisher(cfg.endpoints["portfolio"].pub)

    def __enter__(self) -> PortfolioService:
        return self.svc

    def __exit__(self, *exc: object) -> None:
        self.svc.stop()
        self.rt.close()


def portfolio_service(raw: dict[str, Any], tmp_path: Path) -> InProcessPortfolio:
    """The portfolio service on the stack config ``raw``, paths and bus keys under ``tmp_path``."""
    cfg = parse_config(raw, base_dir=tmp_path)
    generate_keys(cfg.bus.keys_dir)  # as `make run` does before the services start
    return InProcessPortfolio(cfg)


def portfolio_config(tmp_path: Path, drop: str | None = None) -> Config:
    """The stack config (without strategy ``drop``) written to tmp_path/config.json, its bus keys
    made outside the state directory that recovery tests take apart."""
    doc = stack_config()
    doc["strategies"] = [s for s in doc["strategies"] if s["id"] != drop]
    doc["bus"] = {"keys_dir": str(tmp_path / "keys")}
    (tmp_path / "config.json").write_text(json.dumps(doc))
    cfg = parse_config(doc, "config.json", base_dir=tmp_path)
    generate_keys(cfg.bus.keys_dir)
    return cfg


def journal_path(cfg: Config) -> Path:
    return Path(cfg.state_file).parent / "journal.jsonl"


def mark_at(svc: PortfolioService, prices: dict[str, float], ts: int) -> None:
    """Ticks of ``prices`` at ``ts``, then the portfolio's mark loop."""
    for symbol, price in prices.items():
        tick(svc, symbol, price, ts)
    svc.mark()


def trade(svc: PortfolioService, hours: range) -> None:
    """Hourly ticks, entries and exits across strategies; SOL crashes at hour 7, tripping the
    kill switch of the strategy holding it (liquidation plus a risk record)."""
    for h in hours:
        ts = T0 + h * HOUR
        prices = {s: p * (1 + 0.01 * ((h * 7 + i) % 5 - 2)) for i, (s, p) in enumerate(SCENARIO_PRICES.items())}
        if h >= 7:
            prices["SOL/USDT"] = 40.0
        mark_at(svc, prices, ts)
        for i, (sid, symbol) in enumerate((("momentum-btc", "BTC/USDT"), ("rsi-eth", "ETH/USDT"),
                                           ("macd-btc", "BTC/USDT"))):
            svc.on_order(spot_order(sid, symbol, svc.portfolio.prices[symbol], ts, 1 if (h + i) % 2 == 0 else -1))
        if h == 6:
            ack = svc.on_order(spot_order("momentum-sol", "SOL/USDT", svc.portfolio.prices["SOL/USDT"], ts))
            assert ack["status"] == "filled", ack  # the position the crash at hour 7 liquidates


def books(svc: PortfolioService) -> dict[str, tuple]:
    """What a restart or a rebuild must give back, per book (risk flags included; marks are not money)."""
    return {sid: (b.cash, b.positions, b.trade_count, b.recent_trades, b.risk.kill_switch, b.risk.kill_reason,
                  b.risk.consecutive_losses, b.risk.circuit_breaker_until, b.risk.daily_loss_tripped)
            for sid, b in svc.portfolio.books.items()}


def run_and_stop(cfg: Config, hours: range = range(10)) -> dict[str, tuple]:
    """``trade`` on the service started from ``cfg``'s files, stopped; the books it left."""
    with InProcessPortfolio(cfg) as svc:
        trade(svc, hours)
        return books(svc)


# --- recorded exchange responses on loopback ----------------------------------------------------------
@contextmanager
def binance_replay(shared_data: Path, now_ms: int,
                   symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT")) -> Iterator[tuple[BinanceReplay, ReplayServer]]:
    """Binance.US as recorded, at the server time ``now_ms``, served on a free loopback port."""
    replay = BinanceReplay(shared_data, now_ms, symbols=symbols)
    with ReplayServer(replay.routes()) as server:
        yield replay, server


@contextmanager
def deribit_replay(shared_data: Path, dvol_page_size: int | None = None) -> Iterator[tuple[DeribitReplay,
                                                                                         ReplayServer]]:
    """Deribit as recorded, served on a free loopback port; ``dvol_page_size`` rows of DVOL a reply."""
    replay = DeribitReplay(shared_data)
    if dvol_page_size is not None:
        replay.dvol_page_size = dvol_page_size
    with ReplayServer(replay.routes()) as server:
        yield replay, server


@pytest.fixture
def deribit(shared_data) -> Iterator[tuple[DeribitReplay, ReplayServer, DeribitClient]]:
    """The recorded Deribit and a client of it that gives up after half a second."""
    with deribit_replay(shared_data) as (replay, server):
        yield replay, server, DeribitClient(server.url + "/api/v2", timeout_s=0.5)


# --- gateway clones of hand-written books (services.views.status.BookClone) ---------------------------
Held = Mapping[str, tuple[float, float]]  # symbol -> (quantity, avg_price)


def book(sid: str, category: str, cash: float, initial: float, positions: Held | None = None,
         option_value: float | None = None) -> tuple[StrategyBook, str]:
    """A book of ``category`` holding ``positions`` (symbol -> (quantity, avg_price)) and, when
    ``option_value`` is given, one option position last marked at that value."""
    held = new_book(sid, "spot" if category == "spot" else "options", initial, T0)
    held.cash = cash
    held.positions = {s: Position(s, q, avg, T0) for s, (q, avg) in (positions or {}).items()}
    if option_value is not None:
        call = OptionPosition(parse_instrument_name("BTC-25DEC26-100000-C"), 1.0, option_value, T0)
        held.option_positions = {call.name: call}  # one BTC coin each: value = premium
    return held, category


def clone(books: Mapping[str, tuple[StrategyBook, str]], prices: Mapping[str, float], market_ts: int = T0,
          journal_seq: int = 0, **more: Any) -> BookClone:
    return BookClone(more.get("stream", "s"), more.get("seq", 0), market_ts, journal_seq, dict(prices), dict(books))
