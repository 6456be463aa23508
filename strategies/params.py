"""What a spot strategy accepts: parameter names, defaults, ranges, rules between them, warm-up.

Declared apart from the strategy functions so that checking a config, which every service
does on start (the gateway included), needs no numpy. ``strategies.registry`` binds each entry
to its function and refuses to import if a function's keyword defaults differ from the ones
declared here, so the two cannot drift.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any, Callable, Mapping

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Rule:
    """A consistency rule between parameters, checked after each value is in range."""

    holds: Callable[[Params], bool]
    message: str


@dataclass(frozen=True)
class StrategyParams:
    """One strategy's parameter contract and how much history it needs.

    ``bounds`` maps each parameter to its inclusive ``(low, high)`` range. ``warmup(params)``
    is the number of bars after which the last bar can carry a signal.
    """

    name: str
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


def _checked(strategy: str, key: str, value: object, default: float | int, bounds: tuple[float, float]) -> float | int:
    where = f"{strategy}.{key}"
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise ValueError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, Real):
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


_LENGTH = (1, 100_000)  # any indicator length, in bars
_ZSCORE = (0.0, 10.0)
_PERCENT = (0.0, 100.0)
_FAST_BELOW_SLOW = Rule(lambda p: p["fast"] < p["slow"], "fast must be < slow")


def _params(
    name: str,
    ranged: Mapping[str, tuple[float | int, tuple[float, float]]],
    warmup: Callable[[Params], int],
    description: str,
    rules: tuple[Rule, ...] = (),
    needs_pair: bool = False,
) -> StrategyParams:
    """``ranged`` maps each parameter to (default, (low, high))."""
    return StrategyParams(
        name=name,
        defaults=MappingProxyType({key: default for key, (default, _bounds) in ranged.items()}),
        bounds=MappingProxyType({key: bounds for key, (_default, bounds) in ranged.items()}),
        warmup=warmup,
        needs_pair=needs_pair,
        description=description,
        rules=rules,
    )


# Warm-up = (first index where every indicator the rule reads is defined) + 2: an event needs
# the condition on the previous bar as well, and the count is in bars, not indexes.
_ALL = (
    _params("sma_crossover", {"fast": (20, _LENGTH), "slow": (50, _LENGTH)}, lambda p: p["slow"] + 1,
            "SMA(fast) crosses SMA(slow)", (_FAST_BELOW_SLOW,)),
    _params("ema_crossover", {"fast": (12, _LENGTH), "slow": (26, _LENGTH)}, lambda p: p["slow"] + 1,
            "EMA(fast) crosses EMA(slow)", (_FAST_BELOW_SLOW,)),
    _params("rsi", {"period": (14, _LENGTH), "oversold": (30.0, _PERCENT), "overbought": (70.0, _PERCENT)},
            lambda p: p["period"] + 2, "RSI crosses into oversold (buy) / overbought (sell)",
            (Rule(lambda p: p["oversold"] < p["overbought"], "oversold must be < overbought"),)),
    _params("bollinger", {"period": (20, _LENGTH), "num_std": (2.0, (1e-6, 10.0))}, lambda p: p["period"] + 1,
            "close crosses below the lower band (buy) / above the middle band (sell)"),
    _params("macd", {"fast": (12, _LENGTH), "slow": (26, _LENGTH), "signal": (9, _LENGTH)},
            lambda p: p["slow"] + p["signal"], "MACD crosses its signal line", (_FAST_BELOW_SLOW,)),
    _params("mean_reversion",
            {"period": (48, (2, _LENGTH[1])), "entry_z": (2.0, _ZSCORE), "exit_z": (0.0, (-10.0, 10.0))},
            lambda p: p["period"] + 1, "z-score of close crosses below -entry_z (buy) / above exit_z (sell)",
            (Rule(lambda p: p["exit_z"] > -p["entry_z"], "exit_z must be > -entry_z"),)),
    _params("momentum", {"period": (14, _LENGTH), "threshold": (5.0, (0.0, 1000.0))}, lambda p: p["period"] + 2,
            "ROC % crosses above +threshold (buy) / below -threshold (sell)"),
    _params("volume_weighted",
            {"period": (24, _LENGTH), "volume_period": (24, _LENGTH), "volume_threshold": (1.5, (0.0, 1000.0))},
            lambda p: max(p["period"], p["volume_period"]) + 1,
            "close above rolling VWAP on heavy volume (buy) / close crosses below VWAP (sell)"),
    _params("triple_ema", {"fast": (8, _LENGTH), "mid": (21, _LENGTH), "slow": (55, _LENGTH)},
            lambda p: p["slow"] + 1, "EMAs stack fast > mid > slow (buy) / the stack breaks (sell)",
            (Rule(lambda p: p["fast"] < p["mid"] < p["slow"], "fast < mid < slow is required"),)),
    _params("rsi_macd",
            {"rsi_period": (14, _LENGTH), "rsi_mid": (50.0, _PERCENT), "fast": (12, _LENGTH),
             "slow": (26, _LENGTH), "signal": (9, _LENGTH)},
            lambda p: max(p["rsi_period"] + 2, p["slow"] + p["signal"]),
            "RSI and MACD start agreeing bullish (buy) / bearish (sell)", (_FAST_BELOW_SLOW,)),
    _params("pairs_spread", {"lookback": (72, (2, _LENGTH[1])), "entry_z": (2.0, _ZSCORE),
                             "exit_z": (0.0, (-10.0, 10.0))},
            lambda p: p["lookback"] + 1,
            "z-score of log(primary/pair) crosses below -entry_z (buy) / above exit_z (sell)",
            (Rule(lambda p: p["exit_z"] > -p["entry_z"], "exit_z must be > -entry_z"),), needs_pair=True),
)

STRATEGY_PARAMS: dict[str, StrategyParams] = {entry.name: entry for entry in _ALL}


def get_params(name: str) -> StrategyParams:
    """The parameter contract of strategy ``name``; the error lists the known names."""
    try:
        return STRATEGY_PARAMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGY_PARAMS))}") from None


def resolve_params(name: str, params: Params | None) -> dict[str, float | int]:
    """Defaults of ``name`` merged with ``params``; unknown, mistyped or out-of-range values raise."""
    return get_params(name).resolve(params)
