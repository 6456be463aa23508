"""Strategies users write themselves: any importable function named ``"package.module:function"``.

The contract is the built-ins' one: ``fn(data: OHLCV, **params)`` returns a
:class:`~strategies.events.StrategyOutput`, or simply one signal per bar (1 buy, -1 sell,
0 hold). Its parameters are its keyword arguments, and their defaults declare their types:
a value given in config or on the command line must be a key it declares and of its default's
type (an int where an int is declared, any number where a float is).
"""
from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, Callable, Mapping

import numpy as np

from common.ohlcv import OHLCV
from strategies.events import StrategyOutput

UserFunction = Callable[..., Any]


class UserStrategyError(ValueError):
    """A user strategy cannot be loaded, takes parameters it does not declare, or returns junk."""


def is_user_spec(name: str) -> bool:
    """``"pkg.mod:fn"`` names a user function; a bare name is a built-in."""
    return ":" in name


def load_user_function(spec: str) -> UserFunction:
    """Import ``"package.module:function"``; the error says which half failed and why."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserStrategyError(f"{spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # a user's module may raise anything on import, even exit
        raise UserStrategyError(f"{spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    fn: object = getattr(module, attr, None)
    if not callable(fn):
        raise UserStrategyError(f"{spec!r}: module {module_name!r} has no function {attr!r}")
    return fn


def declared_params(fn: UserFunction) -> dict[str, Any]:
    """The function's keyword parameters (after the bars) and their defaults."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    missing = [p.name for p in params if p.default is inspect.Parameter.empty]
    if missing:
        raise UserStrategyError(
            f"{fn.__module__}:{fn.__name__}: parameters {missing} need defaults, which declare their types")
    return {p.name: p.default for p in params}


def resolve_user_params(fn: UserFunction, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``params``, each checked against its declared default's type."""
    declared = declared_params(fn)
    where = f"{fn.__module__}:{fn.__name__}"
    resolved = dict(declared)
    for key, value in (params or {}).items():
        if key not in declared:
            raise UserStrategyError(f"{where}: unknown parameter {key!r}; it declares {sorted(declared)}")
        default = declared[key]
        if isinstance(default, bool) or isinstance(value, bool):
            ok = type(value) is type(default)
        elif isinstance(default, int):
            ok = isinstance(value, int)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and math.isfinite(value)
        else:
            ok = default is None or isinstance(value, type(default))
        if not ok:
            raise UserStrategyError(f"{where}: parameter {key!r} expects {type(default).__name__} "
                                    f"like its default {default!r}, got {value!r}")
        resolved[key] = value
    return resolved


def run_user_function(fn: UserFunction, data: OHLCV, params: Mapping[str, Any]) -> StrategyOutput:
    """Call ``fn`` and hold its output to the built-ins' contract: one finite signal in {-1, 0, 1}
    per bar, indicators aligned with the bars."""
    where = f"{fn.__module__}:{fn.__name__}"
    try:
        out = fn(data, **params)
    except Exception as exc:  # a user's code may raise anything; say where, never crash the caller
        raise UserStrategyError(f"{where}: failed on {len(data)} bars: {type(exc).__name__}: {exc}") from None
    if isinstance(out, StrategyOutput):
        signals, indicators = out.signals, out.indicators
    else:
        signals, indicators = np.asarray(out), {}
    if signals.shape != (len(data),):
        raise UserStrategyError(f"{where}: returned {signals.shape} signals for {len(data)} bars")
    values = np.asarray(signals, dtype=np.float64)
    if not np.all(np.isin(values, (-1.0, 0.0, 1.0))):
        bad = values[~np.isin(values, (-1.0, 0.0, 1.0))][:3]
        raise UserStrategyError(f"{where}: signals must be -1, 0 or 1, got {bad.tolist()}")
    try:
        columns = {k: np.asarray(v, dtype=np.float64) for k, v in indicators.items()}
        return StrategyOutput(values.astype(np.int8), columns)
    except ValueError as exc:
        raise UserStrategyError(f"{where}: {exc}") from None
