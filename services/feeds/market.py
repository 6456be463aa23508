"""Market feeds behind the marketdata service: one protocol, a simulator and a CSV replay.

The service owns the sockets and the wall clock; it computes market time and calls
``advance_to``. A feed never reads the clock, so the same calls always give the same bars.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from common.bars import Bar, BarAggregator, BarStore, bars_from_ohlcv
from common.csv_bars import load_ohlcv_csv
from common.market_sim import DEFAULT_CORRELATIONS, DEFAULT_SPECS, MarketSim, SymbolSpec, sim_market
from common.ohlcv import OHLCV
from common.timeframes import DAY_MS, timeframe_ms
from services.feeds.feed import FeedUpdate, MarketFeed, Tick

if TYPE_CHECKING:
    from config.settings import Config

HISTORY_CHUNK_MS = 5 * DAY_MS  # history is generated this much at a time
_NO_ROWS = OHLCV.empty()


class _BarPipeline:
    """Base bars in, closed bars of every timeframe out, kept for history; shared by feeds."""

    def __init__(self, symbols: Sequence[str], timeframes: Sequence[str], base_ms: int, capacity: int) -> None:
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be a non-empty list without repeats, got {list(symbols)!r}")
        if not timeframes or len(set(timeframes)) != len(timeframes):
            raise ValueError(f"timeframes must be a non-empty list without repeats, got {list(timeframes)!r}")
        self.symbols = tuple(symbols)
        self.timeframes = tuple(timeframes)
        self.base_ms = base_ms
        self._aggregators = {s: BarAggregator(s, timeframes, base_ms) for s in symbols}
        self._store = BarStore(capacity)
        self._prices: dict[str, Tick] = {}
        self._rank = {tf: timeframe_ms(tf) for tf in timeframes}
        self._order = {s: i for i, s in enumerate(self.symbols)}

    def ingest(self, base: Mapping[str, OHLCV], until_ts: int, publish: bool) -> FeedUpdate:
        """Feed base bars that closed by ``until_ts``, then close what ``until_ts`` ends."""
        ticks: dict[str, Tick] = {}
        bars: list[Bar] = []
        for symbol in self.symbols:
            rows = base.get(symbol, _NO_ROWS)
            agg = self._aggregators[symbol]
            closed = agg.add(rows)
            late = agg.close_until(until_ts)
            for tf in self.timeframes:
                for part in (closed[tf], late[tf]):
                    if len(part):
                        self._store.append(symbol, tf, part)
                        if publish:
                            bars.extend(bars_from_ohlcv(symbol, tf, part))
            if len(rows):
                ticks[symbol] = (float(rows.close[-1]), int(rows.ts[-1]) + self.base_ms)
        self._prices.update(ticks)
        bars.sort(key=self._publish_order)
        return FeedUpdate(ticks if publish else {}, bars)

    def _publish_order(self, bar: Bar) -> tuple[int, int, int]:
        return (bar.ts_close, self._rank[bar.timeframe], self._order[bar.symbol])

    def history(self, symbol: str, timeframe: str, limit: int | None) -> OHLCV:
        if symbol not in self._aggregators:
            raise ValueError(f"unknown symbol {symbol!r}; this feed has {', '.join(self.symbols)}")
        if timeframe not in self._rank:
            raise ValueError(f"unknown timeframe {timeframe!r}; this feed has {', '.join(self.timeframes)}")
        return self._store.history(symbol, timeframe, limit)

    def prices(self) -> dict[str, Tick]:
        return dict(self._prices)


def _check_ts(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int ms timestamp >= 0, got {value!r}")
    return int(value)


class _PipelineFeed:
    """What the sim and replay feeds share: advance by feeding new base bars to the pipeline."""

    _pipeline: _BarPipeline
    _now: int | None

    def _base_bars(self, now: int, until: int) -> Mapping[str, OHLCV]:
        raise NotImplementedError

    def advance_to(self, ts: int) -> FeedUpdate:
        if self._now is None:
            raise RuntimeError("call start() before advance_to()")
        ts = _check_ts("ts", ts)
        if ts <= self._now:
            return FeedUpdate()
        update = self._pipeline.ingest(self._base_bars(self._now, ts), ts, publish=True)
        self._now = ts
        return update

    def history(self, symbol: str, timeframe: str, limit: int | None = None) -> OHLCV:
        return self._pipeline.history(symbol, timeframe, limit)

    def prices(self) -> dict[str, Tick]:
        return self._pipeline.prices()


class SimFeed(_PipelineFeed):
    """The seeded simulator as a feed: minute steps aggregated into the configured timeframes.

    The path starts at ``origin_ts``. Pass the same origin (and seed) after a restart and
    ``start(resume_ts)`` rebuilds the same history and continues the same path. When
    ``origin_ts`` is None, the first ``start`` sets it to ``history_days`` before the start
    day's 00:00 UTC (exposed as ``origin_ts`` so the service can keep it).
    """

    finished = False

    def __init__(
        self,
        symbols: Sequence[str],
        timeframes: Sequence[str],
        *,
        seed: int,
        history_days: int = 120,
        origin_ts: int | None = None,
        step_ms: int = 60_000,
        specs: Mapping[str, SymbolSpec] = DEFAULT_SPECS,
        correlations: Mapping[tuple[str, str], float] = DEFAULT_CORRELATIONS,
        store_capacity: int = 5000,
    ) -> None:
        if isinstance(history_days, bool) or not isinstance(history_days, int) or history_days < 0:
            raise ValueError(f"history_days must be an int >= 0, got {history_days!r}")
        self._pipeline = _BarPipeline(symbols, timeframes, step_ms, store_capacity)
        self.symbols = self._pipeline.symbols
        self.timeframes = self._pipeline.timeframes
        self.seed = seed
        self.history_days = history_days
        self.origin_ts = None if origin_ts is None else _check_ts("origin_ts", origin_ts)
        self.step_ms = step_ms
        self._sim_args = dict(seed=seed, specs=specs, correlations=correlations, step_ms=step_ms)
        self._sim: MarketSim | None = None
        if self.origin_ts is not None:
            self._sim = MarketSim(symbols, origin_ts=self.origin_ts, **self._sim_args)
        self._now: int | None = None

    @property
    def now_ts(self) -> int | None:
        return self._now

    def start(self, market_ts: int | None = None) -> int:
        """Build ``history_days`` of closed bars before ``market_ts`` (from the day's 00:00 UTC,
        so 120 days give 120 1d bars and 2880 1h bars plus today's closed hours)."""
        if self._now is not None:
            raise RuntimeError("feed already started")
        if market_ts is None:
            if self.origin_ts is None:
                raise ValueError("sim feed needs a start market time (or an origin_ts to start from)")
            market_ts = self.origin_ts + self.history_days * DAY_MS
        market_ts = _check_ts("market_ts", market_ts)
        history_from = market_ts - market_ts % DAY_MS - self.history_days * DAY_MS
        if self._sim is None:
            self.origin_ts = history_from
            self._sim = MarketSim(self.symbols, origin_ts=history_from, **self._sim_args)
        if history_from < self.origin_ts:
            raise ValueError(
                f"start {market_ts} with history_days={self.history_days} needs the path from "
                f"{history_from}, before origin_ts {self.origin_ts}"
            )
        for chunk_from in range(history_from, market_ts, HISTORY_CHUNK_MS):  # in chunks: a low memory peak
            chunk_until = min(chunk_from + HISTORY_CHUNK_MS, market_ts)
            self._pipeline.ingest(self._sim.steps(chunk_from, chunk_until), chunk_until, publish=False)
        self._now = market_ts
        return market_ts

    def _base_bars(self, now: int, until: int) -> Mapping[str, OHLCV]:
        # The step in progress at `now` is the first one not yet fed (earlier ones closed by now).
        first_open = now - (now - self.origin_ts) % self.step_ms
        return self._sim.steps(first_open, until)


class ReplayFeed(_PipelineFeed):
    """Recorded bars (one CSV per symbol) played back as if live; ticks are bar closes.

    The clock starts after ``warmup_bars`` base bars of every symbol (or at ``start_ts``):
    those bars, and their higher-timeframe aggregates, are history. Gaps in the data stay
    gaps: no bar is invented for a missing hour, and a 1d bar over a gap aggregates the hours
    that exist (open of the first, close of the last, sum of their volumes).
    """

    def __init__(
        self,
        files: Mapping[str, str | Path],
        *,
        timeframe: str = "1h",
        timeframes: Sequence[str] = ("1h", "1d"),
        warmup_bars: int = 500,
        store_capacity: int = 5000,
    ) -> None:
        if not files:
            raise ValueError("replay needs at least one {symbol: csv path}")
        if isinstance(warmup_bars, bool) or not isinstance(warmup_bars, int) or warmup_bars < 1:
            raise ValueError(f"warmup_bars must be an int >= 1, got {warmup_bars!r}")
        self.base_ms = timeframe_ms(timeframe)
        self._pipeline = _BarPipeline(list(files), timeframes, self.base_ms, store_capacity)
        self.symbols = self._pipeline.symbols
        self.timeframes = self._pipeline.timeframes
        self._bars: dict[str, OHLCV] = {}
        for symbol, path in files.items():
            bars = load_ohlcv_csv(path)
            off = np.flatnonzero(bars.ts % self.base_ms)
            if off.size:
                raise ValueError(f"{path}: bar ts={int(bars.ts[off[0]])} is not on a {timeframe} boundary")
            if len(bars) < warmup_bars:
                raise ValueError(f"{path}: {len(bars)} bars, fewer than warmup_bars={warmup_bars} for {symbol}")
            self._bars[symbol] = bars
        self.default_start_ts = max(int(b.ts[warmup_bars - 1]) + self.base_ms for b in self._bars.values())
        self.end_ts = max(int(b.ts[-1]) + self.base_ms for b in self._bars.values())
        self._now: int | None = None

    @property
    def now_ts(self) -> int | None:
        return self._now

    @property
    def finished(self) -> bool:
        return self._now is not None and self._now >= self.end_ts

    def start(self, market_ts: int | None = None) -> int:
        """Position the clock (default: after the warm-up bars); earlier bars become history."""
        if self._now is not None:
            raise RuntimeError("feed already started")
        market_ts = self.default_start_ts if market_ts is None else _check_ts("market_ts", market_ts)
        self._pipeline.ingest(self._closed_between(None, market_ts), market_ts, publish=False)
        self._now = market_ts
        return market_ts

    def _base_bars(self, now: int, until: int) -> Mapping[str, OHLCV]:
        return self._closed_between(now, until)

    def _closed_between(self, after: int | None, until: int) -> dict[str, OHLCV]:
        """Base bars whose close time is in (after, until]."""
        out = {}
        for symbol, bars in self._bars.items():
            close = bars.ts + self.base_ms
            lo = 0 if after is None else int(np.searchsorted(close, after, side="right"))
            hi = int(np.searchsorted(close, until, side="right"))
            out[symbol] = bars.slice(lo, hi)
        return out


def build_feed(
    mode: str,
    *,
    symbols: Sequence[str],
    timeframes: Sequence[str],
    seed: int = 42,
    history_days: int = 120,
    sim_origin_ts: int | None = None,
    replay_files: Mapping[str, str | Path] | None = None,
    replay_timeframe: str = "1h",
    replay_warmup_bars: int = 500,
    store_capacity: int = 5000,
    live_exchange: str = "binanceus",
    live_api_url: str | None = None,
    live_poll_seconds: float = 10.0,
    log: Any = None,
) -> MarketFeed:
    """The feed a config asks for; keyword arguments so the config schema can change freely.
    ccxt is imported only for ``live``, so sim and replay services never load it."""
    if mode == "sim":
        specs, correlations = sim_market(list(symbols))  # any symbol list, not only the three known
        return SimFeed(
            symbols, timeframes, seed=seed, history_days=history_days, origin_ts=sim_origin_ts,
            store_capacity=store_capacity, specs=specs, correlations=correlations,
        )
    if mode == "replay":
        files = dict(replay_files or {})
        missing = [s for s in symbols if s not in files]
        if missing:
            raise ValueError(f"replay_files has no CSV for symbol(s) {missing}")
        return ReplayFeed(
            {s: files[s] for s in symbols}, timeframe=replay_timeframe, timeframes=timeframes,
            warmup_bars=replay_warmup_bars, store_capacity=store_capacity,
        )
    if mode == "live":
        from services.feeds.exchange_client import CcxtSpotClient, LiveFeed

        return LiveFeed(
            symbols, timeframes, CcxtSpotClient(live_exchange, live_api_url),
            history_days=max(history_days, 1), poll_seconds=live_poll_seconds, store_capacity=store_capacity, log=log,
        )
    raise ValueError(f"unknown feed mode {mode!r}; expected 'sim', 'replay' or 'live'")


def build_feed_from_config(cfg: "Config", log: Any = None) -> MarketFeed:
    """The feed of a loaded config. The sim's origin is derived from ``feed.start`` and
    ``history_days`` alone, so a restarted service regenerates exactly the same path."""
    feed = cfg.feed
    origin = feed.start_ms - feed.start_ms % DAY_MS - feed.history_days * DAY_MS
    return build_feed(
        feed.mode,
        symbols=feed.symbols,
        timeframes=feed.timeframes,
        seed=feed.seed,
        history_days=feed.history_days,
        sim_origin_ts=origin,
        replay_files={s: str(p) for s, p in feed.replay.files.items()},
        replay_timeframe=feed.replay.timeframe,
        live_exchange=feed.live.exchange,
        live_api_url=feed.live.binance_url,
        live_poll_seconds=feed.live.poll_seconds,
        log=log,
    )
