"""Deribit public REST API (v2, no keys): index prices, listed options, tickers, book summaries,
and the DVOL volatility index.

Payloads are decoded here, once, into typed records (:class:`~options.live_marks.ListedOption`,
:class:`~options.live_marks.OptionQuote`, :class:`DeribitTicker`); nothing past this module sees
Deribit's JSON. Every failure is one of two errors, split as services/feeds/exchange_client.py does:
:class:`DeribitUnavailable` (timeouts, 429/5xx, truncated JSON, impossible numbers: retry later)
or :class:`DeribitRequestError` (a JSON-RPC error such as invalid params: fix the request).

The helpers keep the seed's names and meaning (``fetch_available_expiries``,
``find_closest_expiry``, ``fetch_available_strikes``, ``find_closest_strike``), with the
market time passed in as ``now_ts`` and ``is_call`` instead of the seed's "call"/"put" text.
:class:`DeribitMarkSource` marks open positions (Deribit and IBKR) every pricer cycle;
:class:`DvolHistory` keeps the DVOL history in a CSV beside the state file; and
:class:`LiveDeribitSource` is the pricer's live mark source, every number from Deribit.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import requests

from common.timeframes import DAY_MS
from options.atm_iv import YEAR_MS, ImpliedVolError, atm_iv_at, surface_at
from options.black_scholes import bs_greeks, bs_price
from options.chain import OptionChain, listed_strikes
from options.contracts import ContractError, OptionContract, listed_expiries, parse_instrument_name
from options.dvol_csv import DvolCsvError, read_dvol_csv, write_dvol_csv_atomic
from options.iv_history import IV_TARGET_DAYS, LiveIvUnavailable, completed, history_window, merge_daily
from options.live_greeks import greeks_at_mark_iv
from options.live_marks import ListedOption, LiveMark, OptionQuote, mark_positions
from options.venues import DERIBIT
from services.feeds.exchange_client import ExchangeUnavailable, OutageTracker

INDEX_NAMES = {"BTC": "btc_usd", "ETH": "eth_usd"}
SNAPSHOT_TTL_MS = 5_000  # one chain read serves the atm_iv, chain and iv requests of one options batch
MAX_DVOL_PAGES = 20  # 1D pages hold up to 1000 days: 20 pages is 55 years, far past any real history


class DeribitUnavailable(ExchangeUnavailable):
    """Temporary: the API did not answer usefully; try again after a backoff."""


class DeribitRequestError(ValueError):
    """Deribit answered with a JSON-RPC error; the message carries its code and reason."""

    def __init__(self, method: str, code: Any, message: str) -> None:
        super().__init__(f"deribit {method}: error {code}: {message}")
        self.code = code


@dataclass(frozen=True, slots=True)
class DeribitTicker:
    """``public/ticker`` of an option: the quote plus what the chain view shows."""

    quote: OptionQuote
    index_price: float
    best_bid: float | None
    best_ask: float | None
    greeks: Mapping[str, float] = field(default_factory=dict)


def _positive(value: Any, where: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise DeribitUnavailable(f"{where}: expected a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


def _optional(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def _currency(underlying: str) -> str:
    if underlying not in INDEX_NAMES:
        raise ContractError(f"underlying {underlying!r}: Deribit options exist for {', '.join(INDEX_NAMES)}")
    return underlying


def decode_listed(row: Any, where: str) -> ListedOption:
    """One ``get_instruments`` (or book summary) row; the name is the source of truth."""
    if not isinstance(row, dict) or not isinstance(row.get("instrument_name"), str):
        raise DeribitUnavailable(f"{where}: expected an object with instrument_name, got {str(row)[:80]}")
    try:
        contract = parse_instrument_name(row["instrument_name"], (DERIBIT,))
    except ContractError as exc:
        raise DeribitUnavailable(f"{where}: {exc}") from None
    expiry = row.get("expiration_timestamp")
    expiry_ts = int(expiry) if isinstance(expiry, (int, float)) and math.isfinite(expiry) else contract.expiry_ts
    return ListedOption(row["instrument_name"], contract.underlying, expiry_ts, contract.strike, contract.is_call)


def decode_quote(row: Any, where: str, ts_field: str) -> OptionQuote:
    if not isinstance(row, dict):
        raise DeribitUnavailable(f"{where}: expected an object, got {str(row)[:80]}")
    name = row.get("instrument_name")
    mark = _positive(row.get("mark_price"), f"{where}.mark_price", allow_zero=True)
    iv = _optional(row.get("mark_iv"))
    ts = row.get(ts_field)
    return OptionQuote(str(name), mark, None if iv is None or iv <= 0 else iv / 100.0,
                       _optional(row.get("underlying_price")), int(ts) if isinstance(ts, (int, float)) else 0)


class DeribitClient:
    """``requests`` against ``base_url`` (``feed.live.deribit_url``); every call is bounded by
    ``timeout_s``. Instruments are cached per currency for ``instruments_ttl_ms`` of market time."""

    def __init__(self, base_url: str = "https://www.deribit.com/api/v2", timeout_s: float = 10.0,
                 session: requests.Session | None = None, instruments_ttl_ms: int = 10 * 60_000) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.instruments_ttl_ms = instruments_ttl_ms
        self._instruments: dict[str, tuple[int, list[ListedOption]]] = {}

    # --- transport -----------------------------------------------------------------------------
    def call(self, method: str, **params: Any) -> Any:
        """``result`` of ``GET {base}/public/{method}``, or DeribitUnavailable / DeribitRequestError."""
        url = f"{self.base_url}/public/{method}"
        try:
            resp = self.session.get(url, params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise DeribitUnavailable(f"deribit {method}: {type(exc).__name__}: {exc}"[:300]) from None
        try:
            doc = json.loads(resp.content)  # json.loads rejects nothing Deribit sends; NaN checked per field
        except ValueError:
            raise DeribitUnavailable(
                f"deribit {method}: HTTP {resp.status_code}, body is not JSON ({len(resp.content)} bytes)",
                _retry_after(resp)) from None
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict) and resp.status_code < 500 \
                and resp.status_code != 429:
            err = doc["error"]
            raise DeribitRequestError(method, err.get("code"), f"{err.get('message')} {err.get('data') or ''}".strip())
        if resp.status_code != 200:
            raise DeribitUnavailable(f"deribit {method}: HTTP {resp.status_code}", _retry_after(resp))
        if not isinstance(doc, dict) or "result" not in doc:
            raise DeribitUnavailable(f"deribit {method}: response has no 'result'")
        return doc["result"]

    # --- endpoints -----------------------------------------------------------------------------
    def get_index_price(self, underlying: str) -> float:
        result = self.call("get_index_price", index_name=INDEX_NAMES[_currency(underlying)])
        if not isinstance(result, dict):
            raise DeribitUnavailable("deribit get_index_price: result is not an object")
        return _positive(result.get("index_price"), f"get_index_price {underlying}.index_price")

    def get_instruments(self, underlying: str, now_ts: int) -> list[ListedOption]:
        """Live (not expired) options of a currency, cached for ``instruments_ttl_ms``."""
        currency = _currency(underlying)
        cached = self._instruments.get(currency)
        if cached is not None and now_ts - cached[0] < self.instruments_ttl_ms:
            return cached[1]
        result = self.call("get_instruments", currency=currency, kind="option", expired="false")
        if not isinstance(result, list):
            raise DeribitUnavailable("deribit get_instruments: result is not a list")
        listed = [decode_listed(row, f"get_instruments[{i}]") for i, row in enumerate(result)]
        self._instruments[currency] = (now_ts, listed)
        return listed

    def ticker(self, instrument_name: str) -> DeribitTicker:
        result = self.call("ticker", instrument_name=instrument_name)
        where = f"ticker {instrument_name}"
        quote = decode_quote(result, where, "timestamp")
        greeks = result.get("greeks") if isinstance(result.get("greeks"), dict) else {}
        return DeribitTicker(
            quote, _positive(result.get("index_price"), f"{where}.index_price"),
            _optional(result.get("best_bid_price")), _optional(result.get("best_ask_price")),
            {k: float(v) for k, v in greeks.items() if _optional(v) is not None},
        )

    def book_summary(self, underlying: str) -> tuple[dict[str, OptionQuote], list[str]]:
        """Marks of a whole option chain in one call; rows with impossible numbers are left
        out and named in the second value, so one bad row never hides the chain."""
        result = self.call("get_book_summary_by_currency", currency=_currency(underlying), kind="option")
        if not isinstance(result, list):
            raise DeribitUnavailable("deribit get_book_summary_by_currency: result is not a list")
        quotes: dict[str, OptionQuote] = {}
        problems: list[str] = []
        for i, row in enumerate(result):
            try:
                quote = decode_quote(row, f"book_summary[{i}]", "creation_timestamp")
            except (DeribitUnavailable, ContractError) as exc:
                problems.append(str(exc))
                continue
            quotes[quote.name] = quote
        return quotes, problems

    def get_delivery_price(self, underlying: str, expiry_ts: int) -> float | None:
        """The index level an expiry settled at, or None when Deribit has none for that day."""
        day = DERIBIT.expiry_date(expiry_ts).isoformat()
        result = self.call("get_delivery_prices", index_name=INDEX_NAMES[_currency(underlying)], offset=0, count=50)
        rows = result.get("data") if isinstance(result, dict) else None
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and row.get("date") == day:
                return _positive(row.get("delivery_price"), f"get_delivery_prices {day}.delivery_price")
        return None

    def get_volatility_index_data(self, underlying: str, start_ms: int, end_ms: int,
                                  resolution: str = "1D") -> tuple[np.ndarray, int | None]:
        """One page of DVOL candles ``[[ts, open, high, low, close], ...]`` (percent, ascending)
        and Deribit's ``continuation`` (the next page's ``end_timestamp``; None when done)."""
        currency = _currency(underlying)
        result = self.call("get_volatility_index_data", currency=currency, start_timestamp=int(start_ms),
                           end_timestamp=int(end_ms), resolution=resolution)
        where = f"get_volatility_index_data {currency}"
        rows = result.get("data") if isinstance(result, dict) else None
        if not isinstance(rows, list):
            raise DeribitUnavailable(f"{where}: result.data is not a list")
        out = np.empty((len(rows), 5))
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 5):
                raise DeribitUnavailable(f"{where}: data[{i}]: expected [ts, open, high, low, close], "
                                         f"got {str(row)[:80]}")
            out[i, 0] = _positive(row[0], f"{where}: data[{i}] ts")
            for j, name in enumerate(("open", "high", "low", "close"), start=1):
                out[i, j] = _positive(row[j], f"{where}: data[{i}] {name}")
        continuation = result.get("continuation")
        if continuation is not None and (isinstance(continuation, bool) or not isinstance(continuation, int)):
            raise DeribitUnavailable(f"{where}: continuation must be an integer ms or null, got {continuation!r}")
        return out[np.argsort(out[:, 0], kind="stable")], continuation

    def fetch_dvol(self, underlying: str, start_ms: int, end_ms: int, max_pages: int = MAX_DVOL_PAGES) -> np.ndarray:
        """Daily DVOL candles in [start_ms, end_ms], every page followed through ``continuation``
        (newest page first), ascending and one per day. A continuation that does not move back
        in time, or more than ``max_pages`` pages, is DeribitUnavailable (nothing is returned)."""
        pages: list[np.ndarray] = []
        end = int(end_ms)
        for _ in range(max_pages):
            page, continuation = self.get_volatility_index_data(underlying, start_ms, end)
            pages.append(page)
            if continuation is None or continuation < start_ms:
                rows = np.concatenate(pages) if pages else np.empty((0, 5))
                _, first = np.unique(rows[:, 0], return_index=True)
                return rows[first]
            if continuation >= end:
                raise DeribitUnavailable(f"get_volatility_index_data {underlying}: continuation {continuation} does "
                                         f"not move back from end_timestamp {end}")
            end = continuation
        raise DeribitUnavailable(f"get_volatility_index_data {underlying}: continuation never ends "
                                 f"({max_pages} pages from {start_ms} to {end_ms})")

    # --- the seed's helpers --------------------------------------------------------------------
    def fetch_available_expiries(self, underlying: str, min_dte: float, max_dte: float, *, now_ts: int) -> list[int]:
        """Listed expiries (ms, ascending) whose days to expiry lie in [min_dte, max_dte]."""
        if not 0 <= min_dte <= max_dte:
            raise ValueError(f"need 0 <= min_dte <= max_dte, got min_dte={min_dte!r}, max_dte={max_dte!r}")
        expiries = {o.expiry_ts for o in self.get_instruments(underlying, now_ts)}
        return sorted(e for e in expiries if min_dte <= (e - now_ts) / DAY_MS <= max_dte)

    def find_closest_expiry(self, underlying: str, target_dte: float, *, now_ts: int) -> int:
        """The listed expiry nearest ``target_dte`` days away (ties to the earlier)."""
        expiries = sorted({o.expiry_ts for o in self.get_instruments(underlying, now_ts) if o.expiry_ts > now_ts})
        if not expiries:
            raise ContractError(f"deribit {underlying}: no listed option expiry after {now_ts} (empty chain)")
        target = now_ts + target_dte * DAY_MS
        return min(expiries, key=lambda e: (abs(e - target), e))

    def fetch_available_strikes(self, underlying: str, expiry_ts: int, *, now_ts: int) -> list[float]:
        """Strikes listed for one expiry, ascending."""
        return sorted({o.strike for o in self.get_instruments(underlying, now_ts) if o.expiry_ts == expiry_ts})

    def find_closest_strike(self, underlying: str, expiry_ts: int, is_call: bool, target_strike: float,
                            *, now_ts: int) -> float:
        """The listed strike of that expiry and side nearest ``target_strike`` (ties to the lower)."""
        strikes = sorted({o.strike for o in self.get_instruments(underlying, now_ts)
                          if o.expiry_ts == expiry_ts and o.is_call == is_call})
        if not strikes:
            side = "call" if is_call else "put"
            raise ContractError(f"deribit {underlying}: no listed {side} for expiry {expiry_ts}")
        return min(strikes, key=lambda k: (abs(k - target_strike), k))


def _retry_after(resp: requests.Response) -> float | None:
    try:
        return float(resp.headers["Retry-After"])
    except (KeyError, TypeError, ValueError):
        return None


class DeribitMarkSource:
    """Live marks for open option positions, for the pricer: per underlying and cycle, one
    book summary (the whole chain), one instrument list (cached) and one index price.

    ``marks(contracts, now_ts)`` never raises for venue trouble: a failing underlying keeps
    no marks, is logged once per outage episode and shows in ``stale_reasons()``; mapped
    expiries are logged once per contract (original -> mapped, days between).
    """

    def __init__(self, client: DeribitClient, log: Any = None) -> None:
        self.client = client
        self.log = log
        self._outages = OutageTracker(base_seconds=1.0, cap_seconds=60.0)
        self._mapped_logged: set[str] = set()

    def marks(self, contracts: Sequence[OptionContract], now_ts: int) -> dict[str, LiveMark]:
        out: dict[str, LiveMark] = {}
        by_underlying: dict[str, list[OptionContract]] = {}
        for c in contracts:
            by_underlying.setdefault(c.underlying, []).append(c)
        for underlying, group in sorted(by_underlying.items()):
            key = f"deribit {underlying}"
            if not self._outages.due(key, now_ts):
                continue
            try:
                marks = self._mark_group(underlying, group, now_ts)
            except (ExchangeUnavailable, DeribitRequestError, ContractError) as exc:
                if self._outages.failure(key, exc, now_ts) and self.log is not None:
                    self.log.warning("live_marks_unavailable", underlying=underlying, detail=str(exc)[:300])
                continue
            if self._outages.success(key) is not None and self.log is not None:
                self.log.info("live_marks_recovered", underlying=underlying)
            out.update(marks)
        return out

    def stale_reasons(self) -> list[str]:
        return self._outages.reasons()

    def outage(self, underlying: str) -> bool:
        """True while marks of ``underlying`` cannot be read."""
        return self._outages.episode(f"deribit {underlying}") is not None

    def _mark_group(self, underlying: str, group: list[OptionContract], now_ts: int) -> dict[str, LiveMark]:
        index_price = self.client.get_index_price(underlying)
        live = [c for c in group if c.expiry_ts > now_ts]
        listed: list[ListedOption] = []
        quotes: dict[str, OptionQuote] = {}
        if live:
            listed = self.client.get_instruments(underlying, now_ts)
            quotes, problems = self.client.book_summary(underlying)
            if problems and self.log is not None:
                self.log.warning("deribit_rows_dropped", underlying=underlying, count=len(problems), first=problems[0])
        settlements = {}
        for c in group:
            if c.expiry_ts <= now_ts and c.expiry_ts not in settlements:
                price = self.client.get_delivery_price(underlying, c.expiry_ts)
                if price is not None:
                    settlements[c.expiry_ts] = price
        marks, unmarked = mark_positions(group, listed, quotes, index_price, now_ts, settlements)
        for mark in marks.values():
            if mark.source == "mapped" and mark.contract.name not in self._mapped_logged and self.log is not None:
                self._mapped_logged.add(mark.contract.name)
                self.log.info("live_mark_mapped", position=mark.contract.name, original_expiry=mark.contract.expiry_ts,
                              mapped=mark.instrument, days_between=round(mark.days_shift, 2))
        for note in unmarked:
            if self.log is not None:
                self.log.warning("live_mark_missing", detail=note)
        return marks


def _day_open(ts: int) -> int:
    return ts - ts % DAY_MS


class DvolHistory:
    """Deribit's DVOL per currency, kept in ``<folder>/dvol_<currency>.csv`` beside the state
    file: read at start, topped up once a day (the missing days since the last stored one, at
    most ``window_days`` back), and rewritten atomically only after a fetch succeeded, so a bad
    reply never loses a stored day. A cache file that cannot be parsed is never overwritten.
    """

    def __init__(self, client: DeribitClient, folder: Path | None, window_days: int, log: Any = None) -> None:
        self.client = client
        self.folder = folder
        self.window_days = window_days
        self.log = log
        self._series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._unwritable: set[str] = set()
        self._outages = OutageTracker(base_seconds=5.0, cap_seconds=600.0)

    def path(self, underlying: str) -> Path | None:
        return None if self.folder is None else self.folder / f"dvol_{underlying.lower()}.csv"

    def series(self, underlying: str) -> tuple[np.ndarray, np.ndarray]:
        """The stored days (loaded from the cache on first use)."""
        if underlying not in self._series:
            empty = (np.empty(0, dtype=np.int64), np.empty(0))
            path = self.path(underlying)
            self._series[underlying] = empty
            if path is not None and path.exists():
                try:
                    self._series[underlying] = read_dvol_csv(path)
                except (DvolCsvError, OSError) as exc:
                    self._unwritable.add(underlying)
                    if self.log is not None:
                        self.log.error("dvol_cache_unreadable", path=str(path), detail=str(exc)[:300])
        return self._series[underlying]

    def refresh(self, underlying: str, now_ts: int) -> str | None:
        """Fetch the days missing up to yesterday; None when the history is current, else why not."""
        ts, values = self.series(underlying)
        yesterday = _day_open(now_ts) - DAY_MS
        if ts.size and ts[-1] >= yesterday:
            return None
        key = f"dvol {underlying}"
        episode = self._outages.episode(key)
        if not self._outages.due(key, now_ts) and episode is not None:
            return episode.detail
        start = max(int(ts[-1]) + DAY_MS if ts.size else 0, _day_open(now_ts) - (self.window_days + 1) * DAY_MS)
        try:
            rows = self.client.fetch_dvol(underlying, start, now_ts)
            new_ts, new = completed(rows[:, 0].astype(np.int64), rows[:, 4] / 100.0, now_ts)
            if not new_ts.size or new_ts[-1] < yesterday:
                raise DeribitUnavailable(f"get_volatility_index_data {underlying}: no DVOL close for "
                                         f"{DERIBIT.expiry_date(yesterday).isoformat()} in the reply "
                                         f"({len(rows)} candles from {start})")
            merged = merge_daily(ts, values, new_ts, new)
            path = self.path(underlying)
            if path is not None and underlying not in self._unwritable:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_dvol_csv_atomic(path, *merged)
        except (ExchangeUnavailable, DeribitRequestError, ContractError, OSError) as exc:
            if self._outages.failure(key, exc, now_ts) and self.log is not None:
                self.log.warning("dvol_unavailable", underlying=underlying, kept_days=int(ts.size),
                                 detail=str(exc)[:300])
            return f"{type(exc).__name__}: {exc}"[:300]
        self._series[underlying] = merged
        if self._outages.success(key) is not None and self.log is not None:
            self.log.info("dvol_recovered", underlying=underlying, days=int(merged[0].size))
        return None

    def history(self, underlying: str, now_ts: int, days: int) -> np.ndarray:
        """Closing DVOL (decimal) of the last ``days`` closed days; LiveIvUnavailable unless the
        history reaches yesterday."""
        problem = self.refresh(underlying, now_ts)
        if problem is not None:
            raise LiveIvUnavailable(f"DVOL {underlying} not current: {problem}")
        return history_window(*self.series(underlying), now_ts, days)


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """One read of a currency's listed options with Deribit's marks, as columns."""

    ts: int
    index_price: float
    expiry_ts: np.ndarray
    strike: np.ndarray
    is_call: np.ndarray
    mark_coin: np.ndarray
    mark_iv: np.ndarray  # decimal; NaN where Deribit gave none
    forward: np.ndarray  # Deribit's underlying_price; NaN where none


class LiveDeribitSource:
    """The pricer's mark source in live mode (the ``MarkSource`` protocol of options/marks.py):
    every number from Deribit, none from the simulation.

    - ATM vol: ``options.atm_iv.atm_iv_at`` on the listed chain's ``mark_iv`` around each
      expiry's forward, at ``target_days`` (DVOL's 30 days unless asked otherwise).
    - IV history: :class:`DvolHistory`.
    - Chains: the Deribit contracts listed with a ``mark_iv``, at Deribit's marks, greeks from
      Black-Scholes at that ``mark_iv`` and forward (r = 0); IBKR/CME contracts priced on the
      Deribit surface (``options.atm_iv.surface_at``), the proxy.
    - Marks: :class:`DeribitMarkSource`, greeks by ``options.live_greeks``. A position Deribit
      cannot mark keeps its last live mark with source ``stale:<reason>``; one never marked
      is left out (the pricer lists it as missing).
    When Deribit's vol cannot be read, ``atm_iv``, ``iv_history`` and ``chain`` raise
    :class:`LiveIvUnavailable`, the outage is logged once, and ``problem()`` says why until a
    read succeeds again.
    """

    name = "deribit-live"

    def __init__(self, client: DeribitClient, dvol: DvolHistory, log: Any = None) -> None:
        self.client = client
        self.dvol = dvol
        self.log = log
        self.live = DeribitMarkSource(client, log)
        self._snapshots: dict[str, ChainSnapshot] = {}
        self._last_marks: dict[str, dict[str, Any]] = {}
        self._outages = OutageTracker(base_seconds=1.0, cap_seconds=60.0)
        self._failing: dict[str, str] = {}

    # --- reading Deribit, with outage bookkeeping --------------------------------------------
    def _guarded(self, underlying: str, feed: str, ts: int, what: str, read: Any) -> Any:
        """``read()``; a failure becomes LiveIvUnavailable, logged once per outage of that feed
        (``chain``: the listed chain, ``DVOL``: the history) and kept for ``problem()``."""
        key = f"{feed} {underlying}"
        episode = self._outages.episode(key)
        if episode is not None and not self._outages.due(key, ts):
            raise LiveIvUnavailable(f"no live IV for {underlying}: {self._failing[key]} (retrying later)")
        try:
            value = read()
        except (ExchangeUnavailable, DeribitRequestError, ContractError, ImpliedVolError, LiveIvUnavailable) as exc:
            detail = f"{what}: {exc}"[:300]
            self._failing[key] = detail
            if self._outages.failure(key, exc, ts) and self.log is not None:
                self.log.warning("live_iv_unavailable", underlying=underlying, feed=feed, detail=detail)
            raise LiveIvUnavailable(f"no live IV for {underlying}: {detail}") from None
        self._outages.success(key)
        if self._failing.pop(key, None) is not None and self.log is not None:
            self.log.info("live_iv_recovered", underlying=underlying, feed=feed)
        return value

    def problem(self) -> str | None:
        """Why Deribit's vol or marks cannot be read right now (every failing feed), else None."""
        reasons = [f"{key}: {detail}" for key, detail in sorted(self._failing.items())] + self.live.stale_reasons()
        return "; ".join(reasons)[:500] if reasons else None

    def failing_underlyings(self) -> list[str]:
        return sorted({key.split(" ", 1)[1] for key in self._failing})

    def warm_up(self, underlying: str, ts: int) -> None:
        """Read the DVOL history as soon as the underlying's first price arrives (the start)."""
        try:
            self.iv_history(underlying, ts, 1)
        except LiveIvUnavailable:
            pass  # logged once by _guarded; the next iv request retries

    def snapshot(self, underlying: str, ts: int) -> ChainSnapshot:
        """The chain's columns, read at most once per ``SNAPSHOT_TTL_MS`` of market time."""
        cached = self._snapshots.get(underlying)
        if cached is not None and 0 <= ts - cached.ts < SNAPSHOT_TTL_MS:
            return cached
        index_price = self.client.get_index_price(underlying)
        listed = {o.name: o for o in self.client.get_instruments(underlying, ts)}
        quotes, _ = self.client.book_summary(underlying)
        rows = [(listed[name], q) for name, q in quotes.items() if name in listed and listed[name].expiry_ts > ts]
        snap = ChainSnapshot(
            ts, index_price,
            np.array([o.expiry_ts for o, _ in rows], dtype=np.int64), np.array([o.strike for o, _ in rows]),
            np.array([o.is_call for o, _ in rows], dtype=bool), np.array([q.mark_coin for _, q in rows]),
            np.array([np.nan if q.mark_iv is None else q.mark_iv for _, q in rows]),
            np.array([np.nan if q.underlying_price is None else q.underlying_price for _, q in rows]),
        )
        self._snapshots[underlying] = snap
        return snap

    # --- the MarkSource protocol ---------------------------------------------------------------
    def atm_iv(self, underlying: str, ts: int, target_days: float = IV_TARGET_DAYS) -> float:

        def read() -> float:
            snap = self.snapshot(underlying, ts)
            return atm_iv_at(snap.expiry_ts, snap.strike, snap.mark_iv, snap.forward, ts,
                             ts + int(target_days * DAY_MS))

        return self._guarded(underlying, "chain", ts, "ATM vol from the listed chain", read)

    def iv_history(self, underlying: str, ts: int, days: int) -> np.ndarray:
        return self._guarded(underlying, "DVOL", ts, "history", lambda: self.dvol.history(underlying, ts, days))

    def chain(self, venue: Any, underlying: str, spot: float, ts: int, horizon_days: int) -> OptionChain:
        return self._guarded(underlying, "chain", ts, f"{venue.name} chain",
                             lambda: self._chain(venue, underlying, spot, ts, horizon_days))

    def _chain(self, venue: Any, underlying: str, spot: float, ts: int, horizon_days: int) -> OptionChain:
        """Deribit: its listed rows with a mark_iv, at its marks. Another venue (IBKR/CME): that
        venue's calendar and strike grid priced on the Deribit surface (the proxy). Greeks are
        Black-Scholes at each row's vol and forward, r = 0."""
        snap = self.snapshot(underlying, ts)
        if venue.name == DERIBIT.name:
            keep = (snap.expiry_ts <= ts + horizon_days * DAY_MS) & np.isfinite(snap.mark_iv) \
                & np.isfinite(snap.forward) & (snap.forward > 0)
            if not keep.any():
                raise ImpliedVolError(f"deribit {underlying}: no listed option within {horizon_days} days "
                                      f"has a mark_iv and an underlying_price")
            rows = np.flatnonzero(keep)[np.lexsort((~snap.is_call[keep], snap.strike[keep], snap.expiry_ts[keep]))]
            expiry_ts, strike, is_call = snap.expiry_ts[rows], snap.strike[rows], snap.is_call[rows]
            forward, iv = snap.forward[rows], snap.mark_iv[rows]
            mark = snap.mark_coin[rows] * snap.index_price
        else:
            strikes = listed_strikes(venue, underlying, spot)
            expiries = np.asarray(listed_expiries(venue, underlying, ts, horizon_days), dtype=np.int64)
            expiry_ts = np.repeat(expiries, 2 * strikes.size)
            strike = np.tile(np.repeat(strikes, 2), expiries.size)
            is_call = np.tile(np.array([True, False]), expiries.size * strikes.size)
            iv, forward = surface_at(snap.expiry_ts, snap.strike, snap.mark_iv, snap.forward, ts, expiry_ts, strike)
            mark = bs_price(forward, strike, (expiry_ts - ts) / YEAR_MS, 0.0, iv, is_call)
        greeks = bs_greeks(forward, strike, (expiry_ts - ts) / YEAR_MS, 0.0, iv, is_call)
        return OptionChain(venue.name, underlying, venue.underlying(underlying).multiplier, ts,
                           float(snap.index_price), expiry_ts, strike, is_call, forward, iv,
                           np.asarray(mark, dtype=np.float64), greeks.delta, greeks.gamma, greeks.theta, greeks.vega)

    def marks(self, contracts: Sequence[OptionContract], spot_by_underlying: Mapping[str, float],
              ts: int) -> dict[str, dict[str, Any]]:
        """Deribit's mark and greeks at its mark_iv per contract; the last live mark, labelled
        stale, where Deribit gives none now; nothing where it never gave one."""
        out: dict[str, dict[str, Any]] = {}
        live = self.live.marks(contracts, ts)
        for contract in contracts:
            mark = live.get(contract.name)
            greeks = greeks_at_mark_iv(mark, ts) if mark is not None else None
            if mark is not None and greeks is not None:
                row = {"mark_usd": mark.mark_usd, **greeks, "source": f"deribit:{mark.source}",
                       "instrument": mark.instrument, "days_shift": mark.days_shift, "index_price": mark.index_price}
                self._last_marks[contract.name] = row
                out[contract.name] = row
                continue
            last = self._last_marks.get(contract.name)
            if last is not None:
                if mark is not None:
                    reason = "no-iv"
                elif self.live.outage(contract.underlying):
                    reason = "deribit-unavailable"
                else:
                    reason = "no-quote"
                out[contract.name] = {**last, "source": f"stale:{reason}"}
        return out
