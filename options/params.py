"""What each options strategy accepts: parameter names, defaults and ranges, without numpy.

The config check runs in every service, the numpy-free gateway included, so the table lives
here rather than beside the strategy functions in options/strategies.py, which takes its
defaults from ``DEFAULT_PARAMS`` below. Ranges are inclusive; an integer parameter (its
default is an int) takes integers only. Units: ``*_pct`` are percent, ``*_otm`` and
``alloc_fraction`` fractions (0.12 = 12 % out of the money), ``*_dte`` days, ranks 0-100.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping


@dataclass(frozen=True, slots=True)
class OptionsParam:
    default: float | int
    low: float
    high: float

    @property
    def integer(self) -> bool:
        return isinstance(self.default, int)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in [{self.low:g}, {self.high:g}]"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        if self.integer and (isinstance(value, bool) or not isinstance(value, int)):
            return f"expected {self.describe()}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"expected {self.describe()}"
        if not self.low <= value <= self.high:
            return f"must be in [{self.low:g}, {self.high:g}]"
        return None


@dataclass(frozen=True, slots=True)
class ParamsRule:
    """A rule between parameters, checked on the defaults overlaid with the given values."""

    holds: Callable[[Mapping[str, float]], bool]
    message: str


_EXITS = {
    "take_profit_pct": OptionsParam(60.0, 0.0, 1000.0),  # above 100 a short never takes profit
    "stop_loss_pct": OptionsParam(200.0, 0.0, 10_000.0),
    "close_dte": OptionsParam(3.0, 0.0, 365.0),  # 0: hold to expiry
    "alloc_fraction": OptionsParam(0.25, 0.0, 1.0),
}
_TARGET_DTE = (1.0, 365.0)
_SPOT_FRACTION = OptionsParam(0.5, 0.0, 1.0)  # of capital spent on the coins a buy-write or married put holds
_OTM = (0.0, 0.9)


def _dte(default: float) -> OptionsParam:
    return OptionsParam(default, *_TARGET_DTE)


def _otm(default: float) -> OptionsParam:
    return OptionsParam(default, *_OTM)


OPTIONS_PARAMS: Mapping[str, Mapping[str, OptionsParam]] = MappingProxyType({
    "momentum_options": MappingProxyType({**_EXITS, "roc_period": OptionsParam(14, 1, 999),
                                          "roc_threshold_pct": OptionsParam(5.0, 0.0, 1000.0),
                                          "target_dte": _dte(37.0)}),
    "vol_mean_reversion": MappingProxyType({**_EXITS, "high_rank": OptionsParam(75.0, 0.0, 100.0),
                                            "low_rank": OptionsParam(25.0, 0.0, 100.0), "target_dte": _dte(30.0),
                                            "strangle_otm": _otm(0.10)}),
    "protective_puts": MappingProxyType({**_EXITS, "otm": _otm(0.12), "target_dte": _dte(45.0),
                                         "spot_fraction": _SPOT_FRACTION}),
    "covered_calls": MappingProxyType({**_EXITS, "otm": _otm(0.12), "target_dte": _dte(21.0),
                                       "spot_fraction": _SPOT_FRACTION}),
    "wheel": MappingProxyType({**_EXITS, "close_dte": OptionsParam(0.0, 0.0, 365.0), "put_otm": _otm(0.06),
                               "call_otm": _otm(0.0), "target_dte": _dte(37.0),
                               "min_premium_pct": OptionsParam(2.0, 0.0, 100.0)}),
})

PARAMS_RULES: Mapping[str, tuple[ParamsRule, ...]] = MappingProxyType({
    "vol_mean_reversion": (ParamsRule(lambda p: p["low_rank"] < p["high_rank"], "low_rank must be < high_rank"),),
})

DEFAULT_PARAMS: dict[str, dict[str, float]] = {
    name: {key: spec.default for key, spec in table.items()} for name, table in OPTIONS_PARAMS.items()
}


def params_problems(name: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, problem)`` for every unknown, mistyped or out-of-range parameter of strategy ``name``,
    then any broken rule between them (key ``""``); empty when ``params`` are sound."""
    table = OPTIONS_PARAMS[name]
    problems = []
    for key, value in params.items():
        spec = table.get(key)
        if spec is None:
            problems.append((key, f"unknown parameter of {name}; accepted: {', '.join(table)}"))
            continue
        problem = spec.problem(value)
        if problem:
            problems.append((key, problem))
    if not problems:
        merged = {key: params.get(key, spec.default) for key, spec in table.items()}
        problems += [("", rule.message) for rule in PARAMS_RULES.get(name, ()) if not rule.holds(merged)]
    return problems
