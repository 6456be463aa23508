"""The live spot feed: closed bars and tickers from a CCXT exchange (Binance.US by default).

Three layers, top to bottom:

- :class:`LiveFeed` implements the ``MarketFeed`` protocol of services/feeds/feed.py. A background
  thread polls the exchange; ``advance_to`` only hands over what the thread fetched, so the
  marketdata loop never waits on the network. A bar is published once, after it closed.
- :class:`CcxtSpotClient` is the adapter: ccxt is imported inside it (a sim service never
  loads its 77 MB), venue payloads become :class:`~common.ohlcv.OHLCV` arrays and ticks at the
  edge, and every ccxt error becomes :class:`ExchangeUnavailable` (temporary, retry) or
  :class:`ExchangeRejected` (operational, a person must act), as freqtrade splits them.
- Pure pieces with time passed in: :func:`backoff_seconds`, :func:`classify_error`,
  :class:`OutageTracker` (one log line per outage episode, the retry schedule, and the stale
  reasons the service shows in /status and /healthz).

No strategy trades on stale data: bad rows (NaN, non-positive prices, broken high/low) are
dropped by :func:`common.bars.sanitize_bars` and never published, a feed with no fresh bar is
``stale``, and the engine refuses a strategy whose newest bar is older than market time allows.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from common.bars import Bar, BarStore, bars_from_ohlcv, concat_ohlcv, sanitize_bars
from common.ohlcv import OHLCV
from common.timeframes import DAY_MS, timeframe_ms
from common.wall import wall_ms
from services.feeds.feed import FeedUpdate

TEMPORARY = "temporary"
OPERATIONAL = "operational"
PAGE_LIMIT = 1000  # Binance's largest klines page

# ccxt class names (any class in the exception's MRO) that mean "try again later".
_TEMPORARY_CCXT = {"NetworkError", "RequestTimeout", "DDoSProtection", "RateLimitExceeded",
                   "ExchangeNotAvailable", "OnMaintenance", "InvalidNonce", "BadResponse", "NullResponse"}


class ExchangeUnavailable(Exception):
    """A temporary failure (timeout, 429/5xx, maintenance, malformed data): retry with backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ExchangeRejected(ValueError):
    """An operational failure (unknown symbol, unsupported call): retrying will not help."""


def backoff_seconds(attempt: int, *, base: float = 1.0, cap: float = 60.0,
                    retry_after: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = first retry): base * 2^(attempt-1),
    at most ``cap``; a venue's Retry-After wins when it asks for longer."""
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be an int >= 1, got {attempt!r}")
    if not (base > 0 and cap >= base):
        raise ValueError(f"backoff needs 0 < base <= cap, got base={base!r}, cap={cap!r}")
    wait = min(cap, base * 2.0 ** min(attempt - 1, 60))
    if retry_after is not None and math.isfinite(retry_after) and retry_after > wait:
        return float(retry_after)
    return wait


def classify_error(exc: BaseException) -> str:
    """TEMPORARY for network trouble and bad data, OPERATIONAL for what a retry cannot fix."""
    if isinstance(exc, ExchangeUnavailable):
        return TEMPORARY
    if isinstance(exc, ExchangeRejected):
        return OPERATIONAL
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _TEMPORARY_CCXT or isinstance(exc, (TimeoutError, ConnectionError)):
        return TEMPORARY
    if "BaseError" in names:  # any other ccxt error: BadSymbol, NotSupported, AuthenticationError...
        return OPERATIONAL
    if isinstance(exc, (OSError, ValueError)):  # sockets; undecodable or impossible values
        return TEMPORARY
    return OPERATIONAL


@dataclass
class Episode:
    """One run of consecutive failures of one source (a series, a ticker, a chain)."""

    kind: str
    detail: str
    first_ms: int
    attempts: int
    retry_at_ms: int


class OutageTracker:
    """Failures per source key, with the retry schedule; time is passed in.

    ``failure`` returns True only for the first failure of an episode (log it once);
    ``success`` returns the episode that just ended (log the recovery once).
    """

    def __init__(self, base_seconds: float = 1.0, cap_seconds: float = 60.0) -> None:
        self.base = base_seconds
        self.cap = cap_seconds
        self._episodes: dict[str, Episode] = {}

    def failure(self, key: str, exc: BaseException, now_ms: int) -> bool:
        kind = classify_error(exc)
        ep = self._episodes.get(key)
        attempts = 1 if ep is None else ep.attempts + 1
        retry_after = getattr(exc, "retry_after", None)
        cap = self.cap
        wait = cap if kind == OPERATIONAL else backoff_seconds(attempts, base=self.base, cap=cap,
                                                               retry_after=retry_after)
        detail = f"{type(exc).__name__}: {exc}"[:300]
        self._episodes[key] = Episode(kind, detail, now_ms if ep is None else ep.first_ms, attempts,
                                      now_ms + int(wait * 1000))
        return ep is None

    def success(self, key: str) -> Episode | None:
        return self._episodes.pop(key, None)

    def due(self, key: str, now_ms: int) -> bool:
        ep = self._episodes.get(key)
        return ep is None or now_ms >= ep.retry_at_ms

    def episode(self, key: str) -> Episode | None:
        return self._episodes.get(key)

    def reasons(self) -> list[str]:
        return [f"{key}: {ep.kind} failure x{ep.attempts} since {ep.first_ms} ({ep.detail})"
                for key, ep in sorted(self._episodes.items())]


def closed_rows(rows: OHLCV, since_ts: int, now_ts: int, tf_ms: int) -> OHLCV:
    """Rows that opened at or after ``since_ts`` and closed by ``now_ts`` (the exchange also
    sends the bar still forming; it is left for a later poll)."""
    keep = (rows.ts >= since_ts) & (rows.ts + tf_ms <= now_ts)
    return OHLCV(*(getattr(rows, c)[keep] for c in ("ts", "open", "high", "low", "close", "volume")))


class SpotClient(Protocol):
    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int | None, limit: int) -> OHLCV: ...

    def fetch_last_price(self, symbol: str) -> tuple[float, int]: ...


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


class CcxtSpotClient:
    """A CCXT exchange, public endpoints only, with its own rate limiter on.

    ``api_url`` (``feed.live.binance_url``) replaces the scheme and host of every API entry
    that points at the exchange's public host, so tests aim the real ccxt code at a replay
    server on 127.0.0.1.
    """

    def __init__(self, exchange_id: str = "binanceus", api_url: str | None = None, timeout_ms: int = 10_000) -> None:
        import ccxt

        factory = getattr(ccxt, exchange_id, None)
        if factory is None or not isinstance(factory, type):
            raise ExchangeRejected(f"feed.live.exchange: unknown CCXT exchange id {exchange_id!r}")
        self.exchange = factory({"enableRateLimit": True, "timeout": int(timeout_ms)})
        self.exchange_id = exchange_id
        if api_url:
            self._point_at(api_url.rstrip("/"))
        self._markets_loaded = False

    def _point_at(self, api_url: str) -> None:
        urls = self.exchange.urls["api"]
        public = urls.get("public") if isinstance(urls, dict) else None
        if not isinstance(public, str):
            raise ExchangeRejected(f"{self.exchange_id}: no urls['api']['public'] entry to override")
        host = "/".join(public.split("/")[:3])  # https://api.binance.us
        for key, value in list(urls.items()):
            if isinstance(value, str) and value.startswith(host):
                urls[key] = api_url + value[len(host):]

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            if not self._markets_loaded:
                self.exchange.load_markets()
                self._markets_loaded = True
            return fn(*args, **kwargs)
        except Exception as exc:  # ccxt and requests errors: classify, never leak venue types
            message = f"{self.exchange_id} {what}: {type(exc).__name__}: {exc}"[:400]
            if classify_error(exc) == TEMPORARY:
                raise ExchangeUnavailable(message, self._retry_after()) from exc
            raise ExchangeRejected(message) from exc

    def _retry_after(self) -> float | None:
        headers = getattr(self.exchange, "last_response_headers", None) or {}
        for name, value in dict(headers).items():
            if name.lower() == "retry-after":
                try:
                    return float(value)
                except (TypeError, ValueError):
                    return None
        return None

    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int | None, limit: int) -> OHLCV:
        """Rows as the exchange sent them (missing or bad numbers become NaN, checked later)."""
        raw = self._call(f"fetch_ohlcv {symbol} {timeframe}", self.exchange.fetch_ohlcv, symbol, timeframe,
                         since=since, limit=limit)
        if not isinstance(raw, list) or not all(isinstance(r, (list, tuple)) and len(r) >= 6 for r in raw):
            raise ExchangeUnavailable(f"{self.exchange_id} fetch_ohlcv {symbol} {timeframe}: malformed response")
        if not raw:
            return OHLCV.empty()
        ts = np.array([int(r[0]) if isinstance(r[0], (int, float)) and math.isfinite(r[0]) else -1 for r in raw],
                      dtype=np.int64)
        values = np.array([[_number(v) for v in r[1:6]] for r in raw], dtype=np.float64)
        return OHLCV(ts, *values.T)

    def fetch_last_price(self, symbol: str) -> tuple[float, int]:
        ticker = self._call(f"fetch_ticker {symbol}", self.exchange.fetch_ticker, symbol)
        price = _number(ticker.get("last") if isinstance(ticker, dict) else None)
        ts = ticker.get("timestamp") if isinstance(ticker, dict) else None
        if not (math.isfinite(price) and price > 0):
            raise ExchangeUnavailable(f"{self.exchange_id} ticker {symbol}: last price {price!r} is not > 0")
        return price, int(ts) if isinstance(ts, (int, float)) and math.isfinite(ts) else -1


@dataclass
class _Series:
    symbol: str
    timeframe: str
    tf_ms: int
    fetched_until: int | None = None  # open ts of the newest closed bar fetched

    @property
    def key(self) -> str:
        return f"{self.symbol} {self.timeframe}"


class LiveFeed:
    """Closed bars and last prices of ``symbols`` from an exchange, polled in the background."""

    finished = False

    def __init__(
        self,
        symbols: Sequence[str],
        timeframes: Sequence[str],
        client: SpotClient,
        *,
        history_days: int = 30,
        poll_seconds: float = 10.0,
        store_capacity: int = 5000,
        log: Any = None,
        background: bool = True,
        clock: Callable[[], int] | None = None,
        backoff_cap_seconds: float = 60.0,
    ) -> None:
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be a non-empty list without repeats, got {list(symbols)!r}")
        if not timeframes or len(set(timeframes)) != len(timeframes):
            raise ValueError(f"timeframes must be a non-empty list without repeats, got {list(timeframes)!r}")
        if isinstance(history_days, bool) or not isinstance(history_days, int) or history_days < 1:
            raise ValueError(f"history_days must be an int >= 1, got {history_days!r}")
        if not (isinstance(poll_seconds, (int, float)) and poll_seconds > 0):
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds!r}")
        self.symbols = tuple(symbols)
        self.timeframes = tuple(sorted(timeframes, key=timeframe_ms))
        self.client = client
        self.history_ms = history_days * DAY_MS
        self.poll_seconds = float(poll_seconds)
        self.log = log
        self.background = background
        self.clock = clock if clock is not None else lambda: int(wall_ms())  # looked up per call
        self.grace_ms = max(int(3 * self.poll_seconds * 1000), 60_000)
        self._series = [_Series(s, tf, timeframe_ms(tf)) for s in self.symbols for tf in self.timeframes]
        self._rank = {tf: i for i, tf in enumerate(self.timeframes)}
        self._store = BarStore(store_capacity)
        self._inbox: list[Bar] = []
        self._new_ticks: dict[str, tuple[float, int]] = {}
        self._prices: dict[str, tuple[float, int]] = {}
        self._outages = OutageTracker(base_seconds=min(1.0, self.poll_seconds), cap_seconds=backoff_cap_seconds)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._now: int | None = None

    # --- MarketFeed ------------------------------------------------------------------------
    @property
    def now_ts(self) -> int | None:
        return self._now

    def start(self, market_ts: int | None = None) -> int:
        """Fetch the warm-up history (one bounded attempt per source; what fails is retried
        by the poller and shows as stale), then poll in the background."""
        if self._now is not None:
            raise RuntimeError("feed already started")
        now = self.clock() if market_ts is None else int(market_ts)
        self.poll(now)
        with self._lock:
            self._store_bars(self._take_ready(now))
            self._new_ticks.clear()
        self._now = now
        if self.background:
            self._thread = threading.Thread(target=self._run, name="live-feed-poller", daemon=True)
            self._thread.start()
        return now

    def advance_to(self, ts: int) -> FeedUpdate:
        """Hand over the bars closed by ``ts`` and the tickers fetched since the last call."""
        if self._now is None:
            raise RuntimeError("call start() before advance_to()")
        with self._lock:
            ready = self._take_ready(ts)
            self._store_bars(ready)
            ticks, self._new_ticks = self._new_ticks, {}
        self._now = max(self._now, int(ts))
        order = {s: i for i, s in enumerate(self.symbols)}
        ready.sort(key=lambda b: (b.ts_close, self._rank[b.timeframe], order[b.symbol]))
        return FeedUpdate(ticks, ready)

    def _take_ready(self, ts: int) -> list[Bar]:
        ready = [b for b in self._inbox if b.ts_close <= ts]
        self._inbox = [b for b in self._inbox if b.ts_close > ts]
        return ready

    def _store_bars(self, bars: list[Bar]) -> None:
        by_series: dict[tuple[str, str], list[list[float]]] = {}
        for b in bars:
            by_series.setdefault((b.symbol, b.timeframe), []).append(
                [b.ts_open, b.open, b.high, b.low, b.close, b.volume])
        for (symbol, tf), rows in by_series.items():
            self._store.append(symbol, tf, OHLCV.from_rows(rows))

    def history(self, symbol: str, timeframe: str, limit: int | None = None) -> OHLCV:
        if symbol not in self.symbols:
            raise ValueError(f"unknown symbol {symbol!r}; this feed has {', '.join(self.symbols)}")
        if timeframe not in self.timeframes:
            raise ValueError(f"unknown timeframe {timeframe!r}; this feed has {', '.join(self.timeframes)}")
        with self._lock:
            return self._store.history(symbol, timeframe, limit)

    def prices(self) -> dict[str, tuple[float, int]]:
        with self._lock:
            return dict(self._prices)

    # --- staleness -------------------------------------------------------------------------
    def stale_reasons(self, now_ts: int | None = None) -> list[str]:
        """Why the data cannot be trusted right now (empty when it can)."""
        now = self._now if now_ts is None else now_ts
        with self._lock:
            reasons = self._outages.reasons()
            for series in self._series:
                if series.fetched_until is None:
                    reasons.append(f"{series.key}: no history received yet")
                elif now is not None and now - (series.fetched_until + series.tf_ms) > series.tf_ms + self.grace_ms:
                    reasons.append(f"{series.key}: newest closed bar closed at {series.fetched_until + series.tf_ms}, "
                                   f"overdue at {now}")
        return reasons

    @property
    def stale(self) -> bool:
        return bool(self.stale_reasons())

    # --- polling ---------------------------------------------------------------------------
    def poll(self, now_ms: int) -> None:
        """One round: new closed bars of every due series, then every ticker. Never raises
        for venue trouble: failures go to the outage tracker and the log, once per episode."""
        for series in self._series:
            if self._outages.due(series.key, now_ms) and self._bar_due(series, now_ms):
                self._guarded(series.key, now_ms, lambda s=series: self._poll_series(s, now_ms))
        for symbol in self.symbols:
            key = f"ticker {symbol}"
            if self._outages.due(key, now_ms):
                self._guarded(key, now_ms, lambda s=symbol: self._poll_ticker(s))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll(self.clock())

    def _bar_due(self, series: _Series, now_ms: int) -> bool:
        return series.fetched_until is None or now_ms >= series.fetched_until + 2 * series.tf_ms

    def _guarded(self, key: str, now_ms: int, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:  # every venue failure ends here; the feed keeps running
            with self._lock:
                first = self._outages.failure(key, exc, now_ms)
                ep = self._outages.episode(key)
            if first and self.log is not None and ep is not None:
                self.log.warning("live_data_problem", source=key, kind=ep.kind, detail=ep.detail,
                                 retry_in_s=round((ep.retry_at_ms - now_ms) / 1000, 1))
            return
        with self._lock:
            ended = self._outages.success(key)
        if ended is not None and self.log is not None:
            self.log.info("live_data_recovered", source=key, failed_attempts=ended.attempts,
                          outage_s=round((now_ms - ended.first_ms) / 1000, 1))

    def _poll_series(self, series: _Series, now_ms: int) -> None:
        since = now_ms - self.history_ms if series.fetched_until is None else series.fetched_until + series.tf_ms
        since -= since % series.tf_ms
        pages: list[OHLCV] = []
        cursor = since
        while cursor + series.tf_ms <= now_ms:
            page = self.client.fetch_ohlcv(series.symbol, series.timeframe, cursor, PAGE_LIMIT)
            pages.append(page)
            if len(page) < PAGE_LIMIT or not len(page) or int(page.ts[-1]) < cursor:
                break
            cursor = int(page.ts[-1]) + series.tf_ms
        rows = closed_rows(concat_ohlcv(pages), since, now_ms, series.tf_ms)
        clean, problems = sanitize_bars(rows)
        if len(clean) and series.fetched_until is not None:
            clean = clean.slice(int(np.searchsorted(clean.ts, series.fetched_until, side="right")), None)
        if len(clean):
            with self._lock:
                self._inbox.extend(bars_from_ohlcv(series.symbol, series.timeframe, clean))
                series.fetched_until = int(clean.ts[-1])
        if problems:
            raise ExchangeUnavailable(f"{len(problems)} bad bar(s) dropped, first: {problems[0]}")
        if not len(clean) and now_ms - (since + series.tf_ms) > self.grace_ms:
            # a bar just closed may take the venue a moment; after the grace it is an outage
            raise ExchangeUnavailable(f"no closed bar returned since {since} (empty or malformed response)")

    def _poll_ticker(self, symbol: str) -> None:
        price, ts = self.client.fetch_last_price(symbol)
        with self._lock:
            previous = self._prices.get(symbol)
            tick = (price, ts if ts > 0 else self.clock())
            if previous != tick:
                self._prices[symbol] = tick
                self._new_ticks[symbol] = tick

