"""HTTP servers on 127.0.0.1 that replay recorded Binance.US and Deribit responses, with faults.

Nothing here touches the internet. Bodies come from ../shared/data (see its README):

- Binance.US ``/api/v3/exchangeInfo``, ``/time``, ``/ping``: the recorded VCR cassettes, body as
  stored. ``/api/v3/klines`` and ``/api/v3/ticker/24hr``: the recorded CCXT static response when
  ``BinanceReplay(recorded=True)``; otherwise rows of the real Binance.US 1h CSVs
  (``ohlcv/binanceus``) written in the exact Binance kline JSON shape (12 fields, prices as
  strings), 1d rows aggregated from those hours, and a 24hr ticker whose ``lastPrice`` is the
  close of the last hour that has opened. Like the real API, the newest kline returned is the
  one still open at the server's ``now_ms``.
- Deribit ``/api/v2/public/...``: ``get_instruments``, ``ticker`` and ``get_book_summary_by_currency``
  built from the real 2020-05-14 chain snapshot (instrument fields from get_instruments, the
  rest from ticker); ``ticker`` of BTC-25DEC26-76000-C and ``get_instruments`` of the 2026
  testnet set are the recorded FastMM frames, re-wrapped in the REST envelope
  ``{jsonrpc, result, usIn, usOut, usDiff, testnet}``; the invalid-params error is the recorded
  frame. ``get_index_price`` returns the index price those records carry.
  ``get_volatility_index_data`` serves the real BTC DVOL days 2022-11-06 .. 2024-08-31 in the
  documented shape ``{data: [[ts, open, high, low, close], ...], continuation}``: rows with
  start_timestamp <= ts <= end_timestamp, the newest ``dvol_page_size`` of them per reply, and
  ``continuation`` (the next ``end_timestamp``) while older rows remain, else null. The file
  holds each day's close only, so open, high and low repeat it.

Faults are queued per path prefix and consumed one request each: a delay longer than the
client's timeout, a status code (429 with Retry-After, 500, 503), a body cut in half, or a
rewrite of the JSON body (NaN or negative prices, an empty chain).
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np

from common.csv_bars import load_ohlcv_csv
from common.ohlcv import OHLCV
from common.timeframes import DAY_MS, HOUR_MS
from tests.support.http_thread import serve_in_thread

Handler = Callable[[dict[str, str]], "Reply"]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able object, or bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


@dataclass
class Fault:
    """One injected failure. ``kind``: delay | status | truncate | rewrite."""

    kind: str
    seconds: float = 0.0
    status: int = 500
    retry_after: int | None = None
    body: Any = None  # the error body; None: what the real venues send for that status
    rewrite: Callable[[Any], Any] | None = None


class ReplayServer:
    """A threaded HTTP server on 127.0.0.1:0 answering GETs from a route table."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server._serve(self)

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "ReplayServer":
        serve_in_thread(self.httpd)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def inject(self, path_prefix: str, fault: Fault, times: int = 1) -> None:
        """The next ``times`` requests whose path starts with ``path_prefix`` get ``fault``."""
        with self._lock:
            self._faults.setdefault(path_prefix, deque()).extend([fault] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def hits(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for prefix, queue in self._faults.items():
                if path.startswith(prefix) and queue:
                    return queue.popleft()
        return None

    def _serve(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.requests.append((parts.path, query))
        fault = self._next_fault(parts.path)
        handler = self.routes.get(parts.path)
        reply = handler(query) if handler else Reply(404, {"code": -1, "msg": f"no route {parts.path}"})
        if fault is not None:
            reply = _apply(fault, reply)
            if reply is None:
                return
        payload = reply.payload()
        try:
            req.send_response(reply.status)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                req.send_header(name, value)
            req.end_headers()
            req.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): exactly what a delay fault tests


def _apply(fault: Fault, reply: Reply) -> Reply | None:
    if fault.kind == "delay":
        time.sleep(fault.seconds)
        return reply
    if fault.kind == "status":
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        body = fault.body
        if body is None:
            body = ({"code": -1003, "msg": "Too many requests."} if fault.status == 429
                    else f"<html><body><h1>{fault.status} Service Unavailable</h1></body></html>".encode())
        return Reply(fault.status, body, headers)
    if fault.kind == "truncate":
        payload = reply.payload()
        return Reply(reply.status, payload[: max(1, len(payload) // 2)], reply.headers)
    if fault.kind == "rewrite" and fault.rewrite is not None:
        return Reply(reply.status, fault.rewrite(json.loads(reply.payload())), reply.headers)
    raise ValueError(f"unknown fault kind {fault.kind!r}")


# ---- recorded bodies ---------------------------------------------------------------------------


def cassette_body(path: Path) -> str:
    """``response.body.string`` of an R vcr cassette (a single-quoted YAML scalar on one line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  response:"))
    for line in lines[start:]:
        stripped = line.strip()
        if stripped.startswith("string: '"):
            return stripped[len("string: '"):-1].replace("''", "'")
    raise ValueError(f"{path}: no response body string")


def rest_envelope(result: Any, us_in: int = 1789347085459496) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": result, "usIn": us_in, "usOut": us_in + 146, "usDiff": 146,
            "testnet": False}


def kline_row(ts: int, o: float, h: float, lo: float, c: float, v: float, tf_ms: int) -> list[Any]:
    """One Binance kline in the API's own shape: prices and volumes as 8-decimal strings."""
    return [ts, f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{c:.8f}", f"{v:.8f}", ts + tf_ms - 1,
            f"{v * c:.8f}", 0, "0.00000000", "0.00000000", "0"]


def daily_from_hours(hours: OHLCV) -> OHLCV:
    """1d rows from the hours present in each UTC day (a gap stays a gap)."""
    day = hours.ts - hours.ts % DAY_MS
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    last = np.r_[starts[1:], len(hours)] - 1
    return OHLCV(day[starts].astype(np.int64), hours.open[starts], np.maximum.reduceat(hours.high, starts),
                 np.minimum.reduceat(hours.low, starts), hours.close[last], np.add.reduceat(hours.volume, starts))


class BinanceReplay:
    """Routes of the Binance.US public spot API. ``now_ms`` is the server's clock."""

    def __init__(self, data: Path, now_ms: int, symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT", "SOL/USDT"),
                 recorded: bool = False) -> None:
        self.data = data
        self.now_ms = now_ms
        self.recorded = recorded
        static = json.loads((data / "binance" / "ccxt_static_response_binanceus.json").read_text())["methods"]
        self.recorded_klines = static["fetchOHLCV"][0]["httpResponse"]
        self.recorded_ticker = static["fetchTicker"][0]["httpResponse"]
        self.exchange_info = cassette_body(data / "binance" / "binancer_spot_exchange_info.yml").encode()
        self.hours: dict[str, OHLCV] = {}
        self.days: dict[str, OHLCV] = {}
        for symbol in symbols:
            market_id = symbol.replace("/", "")
            hours = load_ohlcv_csv(data / "ohlcv" / "binanceus" / f"{symbol.replace('/', '_')}-1h.csv")
            self.hours[market_id] = hours
            self.days[market_id] = daily_from_hours(hours)

    def routes(self) -> dict[str, Handler]:
        cassettes = self.data / "binance"
        return {
            "/api/v3/exchangeInfo": lambda q: Reply(body=self.exchange_info),
            "/api/v3/time": lambda q: Reply(body=cassette_body(cassettes / "binancer_spot_time.yml").encode()),
            "/api/v3/ping": lambda q: Reply(body=cassette_body(cassettes / "binancer_spot_ping.yml").encode()),
            "/api/v3/klines": self.klines,
            "/api/v3/ticker/24hr": self.ticker,
        }

    def klines(self, q: dict[str, str]) -> Reply:
        if self.recorded:
            return Reply(body=self.recorded_klines, headers={"x-mbx-used-weight-1m": "2"})
        interval = q.get("interval", "1h")
        table, tf_ms = (self.hours, HOUR_MS) if interval == "1h" else (self.days, DAY_MS)
        bars = table.get(q.get("symbol", ""))
        if bars is None or interval not in ("1h", "1d"):
            return Reply(400, {"code": -1121, "msg": "Invalid symbol."})
        limit = min(int(q.get("limit", 500)), 1000)
        lo = int(np.searchsorted(bars.ts, int(q.get("startTime", 0)), side="left"))
        hi = int(np.searchsorted(bars.ts, min(int(q.get("endTime", self.now_ms)), self.now_ms), side="right"))
        if "startTime" not in q:
            lo = max(hi - limit, 0)
        rows = [kline_row(int(r[0]), *r[1:], tf_ms=tf_ms) for r in bars.slice(lo, min(hi, lo + limit)).rows()]
        return Reply(body=rows, headers={"x-mbx-used-weight-1m": "2"})

    def ticker(self, q: dict[str, str]) -> Reply:
        if self.recorded:
            return Reply(body=self.recorded_ticker)
        bars = self.hours.get(q.get("symbol", ""))
        if bars is None:
            return Reply(400, {"code": -1121, "msg": "Invalid symbol."})
        i = int(np.searchsorted(bars.ts, self.now_ms, side="right")) - 1
        close = f"{bars.close[i]:.8f}"
        return Reply(body={"symbol": q["symbol"], "lastPrice": close, "bidPrice": close, "askPrice": close,
                           "openTime": str(self.now_ms - DAY_MS), "closeTime": str(self.now_ms),
                           "volume": f"{bars.volume[i]:.8f}"})


class DeribitReplay:
    """Routes of Deribit's public REST API from the 2020-05-14 chain and the 2026 recorded frames."""

    def __init__(self, data: Path) -> None:
        folder = data / "deribit"
        self.chain: list[dict[str, Any]] = json.loads((folder / "btc_option_chain_2020-05-14.json").read_text())
        fixtures = folder / "fastmm_fixtures"
        self.instruments_2026 = json.loads((fixtures / "get_instruments_option.json").read_text())
        self.ticker_2026 = json.loads((fixtures / "ticker_option_prod.json").read_text())["params"]["data"]
        self.invalid_params = json.loads((fixtures / "rpc_invalid_params.json").read_text())
        self.get_time = json.loads((fixtures / "get_time.json").read_text())
        self.index_price = self.chain[0]["index_price"]
        self.delivery_prices: list[dict[str, Any]] = []  # none recorded; tests may set some
        self.use_2026 = False
        dvol = np.loadtxt(folder / "btc_dvol_1d_2022-11-06_2024-08-31.csv", delimiter=",", skiprows=1)
        self.dvol_ts, self.dvol_close = dvol[:, 0].astype(np.int64), dvol[:, 1]
        self.dvol_page_size = 1000  # Deribit's own page limit; tests lower it to see paging

    def routes(self) -> dict[str, Handler]:
        base = "/api/v2/public/"
        return {base + name: handler for name, handler in {
            "get_index_price": self.get_index_price,
            "get_instruments": self.get_instruments,
            "ticker": self.ticker,
            "get_book_summary_by_currency": self.book_summary,
            "get_delivery_prices": lambda q: Reply(body=rest_envelope(
                {"data": self.delivery_prices, "records_total": len(self.delivery_prices)})),
            "get_time": lambda q: Reply(body=self.get_time),
            "get_volatility_index_data": self.volatility_index,
        }.items()}

    def volatility_index(self, q: dict[str, str]) -> Reply:
        try:
            start, end = int(q["start_timestamp"]), int(q["end_timestamp"])
        except (KeyError, ValueError):
            return self._bad_params()
        if q.get("currency") != "BTC" or q.get("resolution") != "1D":
            return self._bad_params()
        lo = int(np.searchsorted(self.dvol_ts, start, side="left"))
        hi = int(np.searchsorted(self.dvol_ts, end, side="right"))
        first = max(lo, hi - self.dvol_page_size)
        days = zip(self.dvol_ts[first:hi].tolist(), self.dvol_close[first:hi].tolist())
        data = [[int(t), c, c, c, c] for t, c in days]
        continuation = int(self.dvol_ts[first]) - 1 if first > lo else None
        return Reply(body=rest_envelope({"data": data, "continuation": continuation}))

    def _bad_params(self) -> Reply:
        return Reply(400, self.invalid_params)

    def get_index_price(self, q: dict[str, str]) -> Reply:
        if q.get("index_name") not in ("btc_usd",):
            return self._bad_params()
        price = self.ticker_2026["index_price"] if self.use_2026 else self.index_price
        return Reply(body=rest_envelope({"index_price": price, "estimated_delivery_price": price}))

    def get_instruments(self, q: dict[str, str]) -> Reply:
        if q.get("currency") != "BTC" or q.get("kind", "option") != "option":
            return self._bad_params()
        if self.use_2026:
            return Reply(body=self.instruments_2026)
        rows = [{"instrument_name": r["instrument_name"], "kind": "option", "base_currency": "BTC",
                 "strike": r["strike"], "option_type": r["option_type"],
                 "expiration_timestamp": r["expiration_timestamp"], "contract_size": 1.0,
                 "min_trade_amount": 0.1, "tick_size": 0.0005, "is_active": True} for r in self.chain]
        return Reply(body=rest_envelope(rows))

    def ticker(self, q: dict[str, str]) -> Reply:
        name = q.get("instrument_name")
        if name == self.ticker_2026["instrument_name"]:
            return Reply(body=rest_envelope(self.ticker_2026))
        for row in self.chain:
            if row["instrument_name"] == name:
                fields = {k: v for k, v in row.items()
                          if k not in ("bids", "asks", "strike", "option_type", "expiration_timestamp")}
                return Reply(body=rest_envelope(fields))
        return Reply(400, {"jsonrpc": "2.0", "error": {"code": 10009, "message": "instrument_not_found"},
                           "usIn": 1, "usOut": 2, "usDiff": 1, "testnet": False})

    def book_summary(self, q: dict[str, str]) -> Reply:
        if q.get("currency") != "BTC" or q.get("kind", "option") != "option":
            return self._bad_params()
        rows = [{"instrument_name": r["instrument_name"], "mark_price": r["mark_price"], "mark_iv": r["mark_iv"],
                 "underlying_price": r["underlying_price"], "underlying_index": r["underlying_index"],
                 "bid_price": r["best_bid_price"], "ask_price": r["best_ask_price"],
                 "last": r["last_price"], "open_interest": r["open_interest"],
                 "interest_rate": r["interest_rate"], "estimated_delivery_price": r["estimated_delivery_price"],
                 "creation_timestamp": r["timestamp"], "base_currency": "BTC", "quote_currency": "BTC"}
                for r in self.chain]
        return Reply(body=rest_envelope(rows))
