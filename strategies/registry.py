"""The strategy contract the signal engine and the backtester share.

Each spot strategy is registered once here with its parameter schema (defaults taken from the
function signature, so the two cannot drift), the consistency rules between parameters, and
its warm-up: how many bars it needs before the last bar's signal means anything. The engine
asks :func:`latest_signal` on every closed bar; the backtester calls :func:`compute_signals`
once over the whole history. Both run the same function, and a signal at bar ``i`` only ever
depends on bars ``0..i`` (tested), so a backtest and a paper run on the same bars agree.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from common.ohlcv import OHLCV
from strategies import oscillators, pairs, trend
from strategies.events import StrategyOutput

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Rule:
    """A consistency rule between parameters, checked after each value is in range."""

    holds: Callable[[Params], bool]
    message: str


@dataclass(frozen=True)
class StrategySpec:
    """One registered strategy: how to call it, what it accepts, how much history it needs.

    ``bounds`` maps each parameter to its inclusive ``(low, high)`` range. ``warmup(params)``
    is the number of bars after which the last bar can carry a signal.
    """

    name: str
    fn: Callable[..., StrategyOutput]
    defaults: Mapping[str, float | int]
    bounds: Mapping[str, tuple[float, float]]
    warmup: Callable[[Params], int]
    needs_pair: bool
    description: str
    rules: tuple[Rule, ...] = field(default=())

    def resolve(self, params: Params | None = None) -> dict[str, float | int]:
        """Defaults merged with ``params``, every value checked; errors name the parameter."""
        given = dict(params or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(self.defaults)}"
            )
        resolved = {key: _checked(self.name, key, given.get(key, default), default, self.bounds[key])
                    for key, default in self.defaults.items()}
        for rule in self.rules:
            if not rule.holds(resolved):
                raise ValueError(f"{self.name}: {rule.message} (got {_describe(resolved)})")
        return resolved

    def warmup_bars(self, params: Params | None = None) -> int:
        """Bars needed before the last bar's signal is meaningful, for these parameters."""
        return self.warmup(self.resolve(params))


def _checked(strategy: str, key: str, value: Any, default: float | int, bounds: tuple[float, float]) -> float | int:
    where = f"{strategy}.{key}"
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where}: must be a finite number, got {value!r}")
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(f"{where}: must be in [{low}, {high}], got {value!r}")
    return value


def _describe(params: Params) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _defaults(fn: Callable[..., StrategyOutput], skip: int) -> dict[str, float | int]:
    """Keyword defaults of a strategy function, after its ``skip`` positional bar inputs."""
    parameters = list(inspect.signature(fn).parameters.values())[skip:]
    return {p.name: p.default for p in parameters}


_LENGTH = (1, 100_000)  # any indicator length, in bars
_ZSCORE = (0.0, 10.0)
_PERCENT = (0.0, 100.0)
_FAST_BELOW_SLOW = Rule(lambda p: p["fast"] < p["slow"], "fast must be < slow")


def _spec(
    fn: Callable[..., StrategyOutput],
    bounds: Mapping[str, tuple[float, float]],
    warmup: Callable[[Params], int],
    description: str,
    rules: tuple[Rule, ...] = (),
    needs_pair: bool = False,
) -> StrategySpec:
    defaults = _defaults(fn, skip=2 if needs_pair else 1)
    if set(bounds) != set(defaults):
        raise ValueError(f"{fn.__name__}: bounds {sorted(bounds)} do not match parameters {sorted(defaults)}")
    return StrategySpec(
        name=fn.__name__,
        fn=fn,
        defaults=MappingProxyType(defaults),
        bounds=MappingProxyType(dict(bounds)),
        warmup=warmup,
        needs_pair=needs_pair,
        description=description,
        rules=rules,
    )


# Warm-up = (first index where every indicator the rule reads is defined) + 2: an event needs
# the condition on the previous bar as well, and the count is in bars, not indexes.
_SPECS = (
    _spec(trend.sma_crossover, {"fast": _LENGTH, "slow": _LENGTH}, lambda p: p["slow"] + 1,
          "SMA(fast) crosses SMA(slow)", (_FAST_BELOW_SLOW,)),
    _spec(trend.ema_crossover, {"fast": _LENGTH, "slow": _LENGTH}, lambda p: p["slow"] + 1,
          "EMA(fast) crosses EMA(slow)", (_FAST_BELOW_SLOW,)),
    _spec(oscillators.rsi, {"period": _LENGTH, "oversold": _PERCENT, "overbought": _PERCENT},
          lambda p: p["period"] + 2, "RSI crosses into oversold (buy) / overbought (sell)",
          (Rule(lambda p: p["oversold"] < p["overbought"], "oversold must be < overbought"),)),
    _spec(oscillators.bollinger, {"period": _LENGTH, "num_std": (1e-6, 10.0)}, lambda p: p["period"] + 1,
          "close crosses below the lower band (buy) / above the middle band (sell)"),
    _spec(trend.macd, {"fast": _LENGTH, "slow": _LENGTH, "signal": _LENGTH},
          lambda p: p["slow"] + p["signal"], "MACD crosses its signal line", (_FAST_BELOW_SLOW,)),
    _spec(oscillators.mean_reversion, {"period": (2, _LENGTH[1]), "entry_z": _ZSCORE, "exit_z": (-10.0, 10.0)},
          lambda p: p["period"] + 1, "z-score of close crosses below -entry_z (buy) / above exit_z (sell)",
          (Rule(lambda p: p["exit_z"] > -p["entry_z"], "exit_z must be > -entry_z"),)),
    _spec(trend.momentum, {"period": _LENGTH, "threshold": (0.0, 1000.0)}, lambda p: p["period"] + 2,
          "ROC % crosses above +threshold (buy) / below -threshold (sell)"),
    _spec(trend.volume_weighted,
          {"period": _LENGTH, "volume_period": _LENGTH, "volume_threshold": (0.0, 1000.0)},
          lambda p: max(p["period"], p["volume_period"]) + 1,
          "close above rolling VWAP on heavy volume (buy) / close crosses below VWAP (sell)"),
    _spec(trend.triple_ema, {"fast": _LENGTH, "mid": _LENGTH, "slow": _LENGTH}, lambda p: p["slow"] + 1,
          "EMAs stack fast > mid > slow (buy) / the stack breaks (sell)",
          (Rule(lambda p: p["fast"] < p["mid"] < p["slow"], "fast < mid < slow is required"),)),
    _spec(oscillators.rsi_macd,
          {"rsi_period": _LENGTH, "rsi_mid": _PERCENT, "fast": _LENGTH, "slow": _LENGTH, "signal": _LENGTH},
          lambda p: max(p["rsi_period"] + 2, p["slow"] + p["signal"]),
          "RSI and MACD start agreeing bullish (buy) / bearish (sell)", (_FAST_BELOW_SLOW,)),
    _spec(pairs.pairs_spread, {"lookback": (2, _LENGTH[1]), "entry_z": _ZSCORE, "exit_z": (-10.0, 10.0)},
          lambda p: p["lookback"] + 1,
          "z-score of log(primary/pair) crosses below -entry_z (buy) / above exit_z (sell)",
          (Rule(lambda p: p["exit_z"] > -p["entry_z"], "exit_z must be > -entry_z"),), needs_pair=True),
)

STRATEGIES: dict[str, StrategySpec] = {spec.name: spec for spec in _SPECS}


@dataclass(frozen=True, slots=True)
class LatestSignal:
    """The decision on the last bar: what the engine publishes and turns into an order."""

    signal: int
    price: float  # close of the last bar
    ts_bar: int  # open time of the last bar (ms)
    indicators: dict[str, float]  # last value of each indicator that is defined there
    enough_history: bool  # False: fewer bars than the warm-up, and the signal is forced to 0


def get_strategy(name: str) -> StrategySpec:
    """The registered strategy ``name``; the error lists the known names."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None


def resolve_params(name: str, params: Params | None) -> dict[str, float | int]:
    """Defaults of ``name`` merged with ``params``; unknown, mistyped or out-of-range values raise."""
    return get_strategy(name).resolve(params)


def compute_signals(name: str, data: OHLCV, params: Params | None = None, pair: OHLCV | None = None) -> StrategyOutput:
    """Run strategy ``name`` over all of ``data`` after checking the bars and the parameters."""
    spec = get_strategy(name)
    resolved = spec.resolve(params)
    data.validate("data")
    if spec.needs_pair:
        if pair is None:
            raise ValueError(f"{name}: needs a pair (the second leg's bars), got none")
        pair.validate("pair")
        return spec.fn(data, pair, **resolved)
    if pair is not None:
        raise ValueError(f"{name}: takes no pair, got one")
    return spec.fn(data, **resolved)


def latest_signal(name: str, data: OHLCV, params: Params | None = None, pair: OHLCV | None = None) -> LatestSignal:
    """The signal on the last bar of ``data``, equal to ``compute_signals(...).signals[-1]``."""
    if len(data) == 0:
        raise ValueError(f"{name}: no bars, cannot decide on the last one")
    spec = get_strategy(name)
    resolved = spec.resolve(params)
    output = compute_signals(name, data, resolved, pair)
    enough = len(data) >= spec.warmup(resolved)
    last = {key: float(series[-1]) for key, series in output.indicators.items()}
    return LatestSignal(
        signal=int(output.signals[-1]) if enough else 0,
        price=float(data.close[-1]),
        ts_bar=int(data.ts[-1]),
        indicators={key: value for key, value in last.items() if math.isfinite(value)},
        enough_history=enough,
    )
