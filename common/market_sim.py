"""A seeded simulator of correlated crypto markets, so the whole bot runs offline.

The path is a sequence of fixed steps (default one minute) from ``origin_ts``. Steps are made
a day at a time: day ``k`` draws all its random numbers from
``np.random.default_rng([seed, k])`` and starts from the state the previous day ended in. So
the price at a market time depends only on (seed, origin_ts, parameters), never on how many
calls it took to get there, and a restarted service regenerates exactly the same history.

What the path has, and why:
- correlated log returns (Cholesky of the correlation matrix) at each symbol's annual vol;
- volatility clustering: a common log-vol factor, AR(1) per hour, mean-corrected so the
  average variance still matches the annual vol;
- regimes that switch every several hours: up trend, down trend, and a range that pulls the
  price back to where the range began, so trend and mean-reversion strategies both meet their
  conditions within a sim day or two;
- a weak pull to the configured price level, so months of running stay near realistic levels;
- volume: log-normal per hour, higher on big moves and in volatile hours.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from common.ohlcv import OHLCV
from common.timeframes import DAY_MS, HOUR_MS

YEAR_MS = 365 * DAY_MS  # crypto trades every day
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """Level and character of one simulated market."""

    start_price: float  # USD at origin_ts, and the level the path is weakly pulled to
    annual_vol: float  # e.g. 0.55 for 55 %
    volume_per_hour: float  # median traded volume per hour, in base units (coins)


DEFAULT_SPECS: dict[str, SymbolSpec] = {
    "BTC/USDT": SymbolSpec(start_price=90_000.0, annual_vol=0.55, volume_per_hour=900.0),
    "ETH/USDT": SymbolSpec(start_price=3_000.0, annual_vol=0.70, volume_per_hour=15_000.0),
    "SOL/USDT": SymbolSpec(start_price=140.0, annual_vol=0.90, volume_per_hour=120_000.0),
}

DEFAULT_CORRELATIONS: dict[tuple[str, str], float] = {
    ("BTC/USDT", "ETH/USDT"): 0.80,
    ("BTC/USDT", "SOL/USDT"): 0.70,
    ("ETH/USDT", "SOL/USDT"): 0.75,
}


GENERATED_CORRELATION = 0.5  # a symbol the sim has no spec for moves with the others (a common beta)


def sim_market(symbols: Sequence[str]) -> tuple[dict[str, SymbolSpec], dict[tuple[str, str], float]]:
    """Specs and pairwise correlations for any symbol list: the known symbols keep theirs; any
    other symbol gets a spec derived from its name (CRC-32: a price of 1..10,000 USD, 50-110 %
    annual vol), so the same name always makes the same market, and correlation 0.5 with every
    other symbol (positive definite: 0.5 on all pairs plus the known block's excess over it)."""
    specs = {s: DEFAULT_SPECS[s] for s in symbols if s in DEFAULT_SPECS}
    for s in symbols:
        if s not in specs:
            h = zlib.crc32(s.encode("utf-8"))
            specs[s] = SymbolSpec(start_price=float(10 ** (h % 4001 / 1000)), annual_vol=0.5 + (h >> 12) % 61 / 100,
                                  volume_per_hour=10_000.0)
    correlations = {(a, b): DEFAULT_CORRELATIONS.get((a, b), DEFAULT_CORRELATIONS.get((b, a), GENERATED_CORRELATION))
                    for i, a in enumerate(symbols) for b in symbols[i + 1:]}
    return specs, correlations


@dataclass(frozen=True, slots=True)
class SimDynamics:
    """Shape of the path beyond level, vol and correlation; defaults give realistic crypto."""

    vol_of_vol: float = 0.45  # stdev of the log of the common volatility multiplier
    vol_half_life_hours: float = 12.0  # how long a calm or a storm lasts
    regime_mean_hours: float = 10.0  # mean time between regime switches
    trend_drift: float = 0.25  # drift per hour in a trend, in units of the hourly vol
    range_pull: float = 0.12  # share of the distance to the range anchor recovered per hour
    level_half_life_days: float = 120.0  # weak pull back to SymbolSpec.start_price
    wick: float = 0.6  # intrabar excursion beyond open/close, in step vols
    volume_dispersion: float = 0.3  # stdev of the log of the hourly volume


@dataclass(frozen=True, slots=True)
class _DayState:
    """Where one day ends and the next begins."""

    log_price: np.ndarray
    vol_state: float
    regime: int  # 0 range, +1 up trend, -1 down trend
    anchor: np.ndarray  # log price the range pulls to


@dataclass(frozen=True, slots=True)
class _Day:
    index: int
    open: np.ndarray  # (steps, symbols)
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    end: _DayState = field(repr=False)


def correlation_matrix(symbols: Sequence[str], correlations: Mapping[tuple[str, str], float]) -> np.ndarray:
    """Full matrix from pairwise values (either order); a missing pair is an error, not 0."""
    n = len(symbols)
    corr = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = symbols[i], symbols[j]
            value = correlations.get((a, b), correlations.get((b, a)))
            if value is None:
                raise ValueError(f"no correlation given for the pair ({a}, {b})")
            if not -1.0 < value < 1.0:
                raise ValueError(f"correlation ({a}, {b}) must be in (-1, 1), got {value!r}")
            corr[i, j] = corr[j, i] = value
    return corr


class MarketSim:
    """Deterministic minute (or other step) bars for several correlated symbols."""

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        seed: int,
        origin_ts: int,
        specs: Mapping[str, SymbolSpec] = DEFAULT_SPECS,
        correlations: Mapping[tuple[str, str], float] = DEFAULT_CORRELATIONS,
        step_ms: int = 60_000,
        dynamics: SimDynamics = SimDynamics(),
    ) -> None:
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be a non-empty list without repeats, got {list(symbols)!r}")
        for name, value in (("seed", seed), ("origin_ts", origin_ts), ("step_ms", step_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if step_ms == 0 or HOUR_MS % step_ms:
            raise ValueError(f"step_ms must divide one hour ({HOUR_MS} ms), got {step_ms}")
        if origin_ts % step_ms:
            raise ValueError(f"origin_ts {origin_ts} is not a multiple of step_ms {step_ms}")
        missing = [s for s in symbols if s not in specs]
        if missing:
            raise ValueError(f"no simulation spec for symbol(s) {missing}; known: {sorted(specs)}")
        for s in symbols:
            spec = specs[s]
            if not (spec.start_price > 0 and spec.annual_vol > 0 and spec.volume_per_hour > 0):
                raise ValueError(f"spec for {s} needs start_price, annual_vol and volume_per_hour > 0, got {spec}")
        try:
            self._cholesky = np.linalg.cholesky(correlation_matrix(symbols, correlations))
        except np.linalg.LinAlgError:
            raise ValueError(f"correlations for {list(symbols)} are not a valid (positive definite) matrix") from None

        self.symbols = tuple(symbols)
        self.seed = seed
        self.origin_ts = origin_ts
        self.step_ms = step_ms
        self.dynamics = dynamics
        self.steps_per_hour = HOUR_MS // step_ms
        self.steps_per_day = DAY_MS // step_ms
        self._vol_step = np.array([specs[s].annual_vol for s in symbols]) * math.sqrt(step_ms / YEAR_MS)
        self._vol_hour = self._vol_step * math.sqrt(self.steps_per_hour)
        self._log_level = np.log([specs[s].start_price for s in symbols])
        self._volume_per_hour = np.array([specs[s].volume_per_hour for s in symbols])
        self._initial = _DayState(self._log_level.copy(), 0.0, 0, self._log_level.copy())
        self._latest: _Day | None = None

    def steps(self, from_ts: int, until_ts: int) -> dict[str, OHLCV]:
        """Step bars with ``from_ts <= ts_open`` and ``ts_open + step_ms <= until_ts``, per symbol.

        Asking for days before the last one made regenerates from the origin (the path is
        sequential); moving forward costs only the new days.
        """
        if from_ts < self.origin_ts:
            raise ValueError(f"from_ts {from_ts} is before the simulation origin {self.origin_ts}")
        first = -(-(from_ts - self.origin_ts) // self.step_ms)
        stop = (until_ts - self.origin_ts) // self.step_ms
        if stop <= first:
            return {s: OHLCV.empty() for s in self.symbols}
        spd = self.steps_per_day
        parts: list[tuple[_Day, int, int]] = []
        for day_index in range(first // spd, (stop - 1) // spd + 1):
            day = self._day(day_index)
            lo = max(first - day_index * spd, 0)
            hi = min(stop - day_index * spd, spd)
            parts.append((day, lo, hi))
        ts = self.origin_ts + np.arange(first, stop, dtype=np.int64) * self.step_ms
        # One (symbols, steps) copy per column, each symbol's row a contiguous view of it:
        # five numpy copies per call however many symbols, which matters for a live step of 3 rows.
        by_symbol = [
            np.ascontiguousarray(np.concatenate([getattr(d, c)[lo:hi] for d, lo, hi in parts]).T)
            for c in _VALUE_COLUMNS
        ]
        return {symbol: OHLCV(ts, *(col[j] for col in by_symbol)) for j, symbol in enumerate(self.symbols)}

    def _day(self, index: int) -> _Day:
        latest = self._latest
        if latest is not None and latest.index == index:
            return latest
        if latest is None or latest.index > index:
            latest = self._generate_day(0, self._initial)
        while latest.index < index:
            latest = self._generate_day(latest.index + 1, latest.end)
        self._latest = latest
        return latest

    def _generate_day(self, index: int, start: _DayState) -> _Day:
        dyn = self.dynamics
        n = len(self.symbols)
        steps, hours, sph = self.steps_per_day, 24, self.steps_per_hour
        rng = np.random.default_rng([self.seed, index])
        # Always the same draws in the same order, whatever the state: the stream per day is fixed.
        shocks = rng.standard_normal((steps, n)) @ self._cholesky.T
        wicks = np.abs(rng.standard_normal((2, steps, n)))
        step_volume_noise = rng.standard_normal((steps, n))
        vol_innovations = rng.standard_normal(hours)
        switch_draws = rng.random(hours)
        choice_draws = rng.random(hours)
        hour_volume_noise = rng.standard_normal((hours, n))

        phi = 0.5 ** (1.0 / dyn.vol_half_life_hours)
        innovation_sd = dyn.vol_of_vol * math.sqrt(1.0 - phi * phi)
        level_pull = math.log(2.0) / (dyn.level_half_life_days * 24.0)
        switch_p = 1.0 / dyn.regime_mean_hours

        vol_mult = np.empty(hours)
        drift_per_step = np.empty((hours, n))
        shock_scaled = shocks * self._vol_step
        hour_shock_sum = shock_scaled.reshape(hours, sph, n).sum(axis=1)
        log_price, vol_state, regime, anchor = start.log_price, start.vol_state, start.regime, start.anchor
        for h in range(hours):
            vol_state = phi * vol_state + innovation_sd * vol_innovations[h]
            m = math.exp(vol_state - dyn.vol_of_vol**2)
            if switch_draws[h] < switch_p:
                others = [r for r in (0, 1, -1) if r != regime]
                regime = others[int(choice_draws[h] * 2.0)]
                if regime == 0:
                    anchor = log_price
            if regime == 0:
                drift = -dyn.range_pull * (log_price - anchor)
            else:
                drift = regime * dyn.trend_drift * self._vol_hour * m
            drift = drift - level_pull * (log_price - self._log_level)
            vol_mult[h] = m
            drift_per_step[h] = drift / sph
            log_price = log_price + drift + m * hour_shock_sum[h]

        step_mult = np.repeat(vol_mult, sph)[:, None]
        increments = np.repeat(drift_per_step, sph, axis=0) + shock_scaled * step_mult
        log_close = start.log_price + np.cumsum(increments, axis=0)
        close = np.exp(log_close)
        open_ = np.vstack([np.exp(start.log_price)[None, :], close[:-1]])
        wick = dyn.wick * self._vol_step * step_mult
        high = np.maximum(open_, close) * np.exp(wick * wicks[0])
        low = np.minimum(open_, close) * np.exp(-wick * wicks[1])
        hour_volume = self._volume_per_hour * np.exp(dyn.volume_dispersion * hour_volume_noise)
        volume = (
            np.repeat(hour_volume, sph, axis=0) / sph
            * np.exp(0.5 * step_volume_noise - 0.125)
            * (0.5 + 0.5 * shocks**2)
            * step_mult
        )
        end = _DayState(log_close[-1].copy(), vol_state, regime, np.asarray(anchor).copy())
        return _Day(index, open_, high, low, close, volume, end)
