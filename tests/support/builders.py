"""The test builders several test modules share, in one place: strategy signal events, log
records, spot orders as the engines send them, marketdata ticks, the journal as written, the
portfolio service in this process (and the books a restart must give back), and the recorded
Binance.US / Deribit responses served on loopback.

Builders only build: every assertion stays in the test that uses them.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from common.bus import Envelope
from config.settings import parse_config
from services.feeds.deribit import DeribitClient
from services.portfolio import PortfolioService
from services.runtime import ServiceRuntime
from strategies.events import StrategyOutput
from tests.support.replay_server import BinanceReplay, DeribitReplay, ReplayServer
from tests.support.stack import stack_security


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
@contextmanager
def portfolio_service(raw: dict[str, Any], tmp_path: Path) -> Iterator[PortfolioService]:
    """The portfolio service on the stack config ``raw`` (keys made under ``tmp_path``), started
    from its state directory as ``main`` starts it, its publisher bound (fills are published;
    nobody listens here); stopped on exit with state saved, as SIGTERM stops it."""
    rt = ServiceRuntime("portfolio-test", stack_security(raw, tmp_path, "portfolio"))
    try:
        rt.bind_publisher(raw["endpoints"]["portfolio"]["pub"])
        svc = PortfolioService(parse_config(raw, base_dir=tmp_path), rt)
        try:
            yield svc
        finally:
            svc.stop()
    finally:
        rt.close()


def books(svc: PortfolioService) -> dict[str, tuple]:
    """What a restart or a rebuild must give back, per book (risk flags included; marks are not money)."""
    return {sid: (b.cash, b.positions, b.trade_count, b.recent_trades, b.risk.kill_switch, b.risk.kill_reason,
                  b.risk.consecutive_losses, b.risk.circuit_breaker_until, b.risk.daily_loss_tripped)
            for sid, b in svc.portfolio.books.items()}


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
