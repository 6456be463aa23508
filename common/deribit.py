"""Deribit public REST API (v2, no keys): index prices, listed options, tickers, book summaries.

Payloads are decoded here, once, into typed records (:class:`~options.live_marks.ListedOption`,
:class:`~options.live_marks.OptionQuote`, :class:`DeribitTicker`); nothing past this module sees
Deribit's JSON. Every failure is one of two errors, split as common/exchange_client.py does:
:class:`DeribitUnavailable` (timeouts, 429/5xx, truncated JSON, impossible numbers: retry later)
or :class:`DeribitRequestError` (a JSON-RPC error such as invalid params: fix the request).

The helpers keep the seed's names and meaning (``fetch_available_expiries``,
``find_closest_expiry``, ``fetch_available_strikes``, ``find_closest_strike``), with the
market time passed in as ``now_ts`` and ``is_call`` instead of the seed's "call"/"put" text.
:class:`DeribitMarkSource` marks open positions (Deribit and IBKR) every pricer cycle.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import requests

from common.exchange_client import ExchangeUnavailable, OutageTracker
from options.contracts import ContractError, OptionContract, parse_instrument_name
from options.marks import MarkSourceError
from options.live_marks import LiveMark, ListedOption, OptionQuote, mark_positions
from options.venues import DAY_MS, DERIBIT

INDEX_NAMES = {"BTC": "btc_usd", "ETH": "eth_usd"}


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


class LiveDeribitSource:
    """The pricer's mark source in live mode (the ``MarkSource`` protocol of options/marks.py).

    Marks come from Deribit through :class:`DeribitMarkSource`; greeks, the ATM vol and IV
    history come from ``model`` (the sim/Black-Scholes source), and a contract Deribit cannot
    mark keeps the model's mark with its ``source`` saying so. Chains list only contracts that
    exist on Deribit, at Deribit's marks; when Deribit is down the chain request fails, so no
    new trade is opened on data that is not there.
    """

    name = "deribit-live"

    def __init__(self, client: DeribitClient, model: Any, log: Any = None) -> None:
        self.client = client
        self.model = model
        self.live = DeribitMarkSource(client, log)

    def atm_iv(self, underlying: str, ts: int) -> float:
        return self.model.atm_iv(underlying, ts)

    def iv_history(self, underlying: str, ts: int, days: int) -> Any:
        return self.model.iv_history(underlying, ts, days)

    def marks(self, contracts: Sequence[OptionContract], spot_by_underlying: Mapping[str, float],
              ts: int) -> dict[str, dict[str, Any]]:
        out = self.model.marks(contracts, spot_by_underlying, ts)
        for name, mark in self.live.marks(contracts, ts).items():
            row = dict(out.get(name, {"delta": 0.0, "gamma": 0.0, "theta": 0.0, "vega": 0.0}))
            row.update(mark_usd=mark.mark_usd, source=f"deribit:{mark.source}", instrument=mark.instrument,
                       days_shift=mark.days_shift, index_price=mark.index_price)
            row["iv"] = mark.mark_iv if mark.mark_iv is not None else row.get("iv", 0.0)
            out[name] = row
        return out

    def chain(self, venue: Any, underlying: str, spot: float, ts: int, horizon_days: int) -> Any:
        """The model chain cut to the contracts Deribit lists, with Deribit's marks and IVs."""
        chain = self.model.chain(venue, underlying, spot, ts, horizon_days)
        if venue.name != "deribit":
            return chain
        try:
            listed = {(o.expiry_ts, o.strike, o.is_call) for o in self.client.get_instruments(underlying, ts)}
            quotes, _ = self.client.book_summary(underlying)
            index_price = self.client.get_index_price(underlying)
        except (ExchangeUnavailable, DeribitRequestError, ContractError) as exc:
            raise MarkSourceError(f"live {underlying} chain unavailable: {exc}") from None
        by_key = {}
        for q in quotes.values():
            try:
                o = decode_listed({"instrument_name": q.name}, "book_summary")
            except DeribitUnavailable:
                continue
            by_key[(o.expiry_ts, o.strike, o.is_call)] = q
        chain = chain.restricted_to(listed)
        if len(chain) == 0:
            raise MarkSourceError(f"live {underlying} chain: none of the model's contracts is listed on Deribit")
        mark, iv = chain.mark.copy(), chain.iv.copy()
        for i, key in enumerate(zip(chain.expiry_ts.tolist(), chain.strike.tolist(), chain.is_call.tolist())):
            quote = by_key.get(key)
            if quote is not None:
                mark[i] = quote.mark_coin * index_price
                iv[i] = quote.mark_iv if quote.mark_iv is not None else iv[i]
        return dataclasses.replace(chain, mark=mark, iv=iv)
