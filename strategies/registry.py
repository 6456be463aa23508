"""The strategy contract the signal engine and the backtester share.

Each spot strategy's parameters, rules and warm-up are declared in ``strategies.params``
(numpy-free, so checking a config stays light); here each is bound to its function, and the
import fails if a function's keyword defaults differ from the declared ones. The backtester
calls :func:`compute_signals` once over the whole history; :func:`latest_signal` is the same
run read on its last bar. A signal at bar ``i`` only ever depends on bars ``0..i`` (tested).
The signal engine runs the bar-by-bar forms in :mod:`strategies.incremental`, which are tested
to equal :func:`compute_signals` at every bar, so a backtest and a paper run on the same bars
agree.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from common.ohlcv import OHLCV
from strategies import oscillators, pairs, trend, user
from strategies.events import StrategyOutput
from strategies.params import STRATEGY_PARAMS, Params, StrategyParams, get_params

StrategyFunction = Callable[..., StrategyOutput]


def signature_drift(fn: StrategyFunction, params: StrategyParams) -> str | None:
    """How ``fn``'s keyword defaults (after its bar inputs) differ from ``params``, or None."""
    skip = 2 if params.needs_pair else 1
    found = {p.name: p.default for p in list(inspect.signature(fn).parameters.values())[skip:]}
    declared = dict(params.defaults)
    if found == declared and all(type(found[k]) is type(declared[k]) for k in found):
        return None
    return f"{params.name}: the function's defaults {found} differ from strategies.params {declared}"


def bind_functions(functions: Mapping[str, StrategyFunction],
                   contracts: Mapping[str, StrategyParams]) -> dict[str, StrategyFunction]:
    """``functions`` checked against ``contracts``: same names, same defaults, or a ValueError."""
    if set(functions) != set(contracts):
        raise ValueError(f"strategy functions {sorted(functions)} do not match strategies.params {sorted(contracts)}")
    drift = [d for name, fn in functions.items() if (d := signature_drift(fn, contracts[name]))]
    if drift:
        raise ValueError("; ".join(drift))
    return dict(functions)


FUNCTIONS = bind_functions({fn.__name__: fn for fn in (
    trend.sma_crossover, trend.ema_crossover, oscillators.rsi, oscillators.bollinger, trend.macd,
    oscillators.mean_reversion, trend.momentum, trend.volume_weighted, trend.triple_ema, oscillators.rsi_macd,
    pairs.pairs_spread,
)}, STRATEGY_PARAMS)


@dataclass(frozen=True, slots=True)
class LatestSignal:
    """The decision on the last bar: what the engine publishes and turns into an order."""

    signal: int
    price: float  # close of the last bar
    ts_bar: int  # open time of the last bar (ms)
    indicators: dict[str, float]  # last value of each indicator that is defined there
    enough_history: bool  # False: fewer bars than the warm-up, and the signal is forced to 0


def resolve_strategy(name: str, params: Params | None = None) -> tuple[dict[str, Any], int]:
    """``name``'s parameters checked and completed, and the bars it needs before its last bar's
    signal counts. A user function (``"pkg.mod:fn"``) declares no warm-up: it returns 0 itself
    until it has enough bars, so one bar is enough here."""
    if user.is_user_spec(name):
        return user.resolve_user_params(user.load_user_function(name), params), 1
    spec = get_params(name)
    resolved = spec.resolve(params)
    return resolved, spec.warmup(resolved)


def compute_signals(name: str, data: OHLCV, params: Params | None = None, pair: OHLCV | None = None) -> StrategyOutput:
    """Run strategy ``name`` (a built-in, or a user function ``"pkg.mod:fn"``) over all of
    ``data`` after checking the bars and the parameters."""
    if user.is_user_spec(name):
        if pair is not None:
            raise ValueError(f"{name}: user strategies take no pair, got one")
        fn = user.load_user_function(name)
        resolved = user.resolve_user_params(fn, params)
        data.validate("data")
        return user.run_user_function(fn, data, resolved)
    spec = get_params(name)
    resolved = spec.resolve(params)
    data.validate("data")
    fn = FUNCTIONS[name]
    if spec.needs_pair:
        if pair is None:
            raise ValueError(f"{name}: needs a pair (the second leg's bars), got none")
        pair.validate("pair")
        return fn(data, pair, **resolved)
    if pair is not None:
        raise ValueError(f"{name}: takes no pair, got one")
    return fn(data, **resolved)


def latest_signal(name: str, data: OHLCV, params: Params | None = None, pair: OHLCV | None = None) -> LatestSignal:
    """The signal on the last bar of ``data``, equal to ``compute_signals(...).signals[-1]``."""
    if len(data) == 0:
        raise ValueError(f"{name}: no bars, cannot decide on the last one")
    resolved, warmup = resolve_strategy(name, params)
    output = compute_signals(name, data, resolved, pair)
    enough = len(data) >= warmup
    last = {key: float(series[-1]) for key, series in output.indicators.items()}
    return LatestSignal(
        signal=int(output.signals[-1]) if enough else 0,
        price=float(data.close[-1]),
        ts_bar=int(data.ts[-1]),
        indicators={key: value for key, value in last.items() if math.isfinite(value)},
        enough_history=enough,
    )
