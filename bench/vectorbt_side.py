"""The vectorbt half of bench_backtest, run as a script by an interpreter that has vectorbt.

vectorbt needs numba (and pulls in ipywidgets, plotly, scikit-learn ...), none of which
go-trader uses, so it may live in a venv of its own; this script imports only numpy and
vectorbt, nothing of ours. For each series in the input it runs the rule of bench_backtest
the way a vectorbt user writes it: ``vbt.MA`` 20 and 50 of the close, ``ma_crossed_above`` /
``ma_crossed_below`` as entries and exits, ``Portfolio.from_signals`` all in (size inf), long
only, 0.1% fees, filled at the close, then the orders and the final value read out. go-trader
refuses a buy of less than ``dust`` USD notional (``trading.ledger.DUST_NOTIONAL_USD``), so
vectorbt gets the same rule: a minimum size at each entry bar of ``dust`` USD of coins with
the fee on top (an all-in buy of cash ``C`` sizes ``C / (price * (1 + fee))``, below the
minimum exactly when ``C`` is below ``dust``; exits have no minimum, as in go-trader). The first
call (numba compiles or loads its cache) is timed apart from the warm runs. The same portfolio
is also run on go-trader's own signals: the engines compared with the indicators set aside.

Usage: ``python bench/vectorbt_side.py IN.npz OUT.npz RUNS``. IN holds ``close.NAME`` (float64)
and ``signals.NAME`` (int8, go-trader's) per series, and ``capital``, ``fee``, ``dust``, ``fast``, ``slow``.
OUT holds per series ``NAME.own.{bar,side,price}`` and ``NAME.given.{bar,side,price}`` (side 1
buy, -1 sell), ``NAME.own.value`` and ``NAME.given.value`` (final portfolio values),
``NAME.first_s`` and ``NAME.warm_s`` (seconds of each warm run).
"""
from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import vectorbt as vbt


def _orders(pf: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(bar, side +1/-1, price) of every order and the final value of a one-column portfolio."""
    records = pf.orders.values  # structured: id, col, idx, size, price, fees, side (0 buy, 1 sell)
    side = np.where(records["side"] == 0, 1, -1).astype(np.int8)
    return records["idx"].astype(np.int64), side, records["price"].astype(np.float64), float(pf.final_value())


def entry_min_size(close: np.ndarray, entries: np.ndarray, fee: float, dust: float) -> np.ndarray:
    """vectorbt's ``min_size`` (in coins) for go-trader's dust rule: at each entry bar, the
    coins ``dust`` USD buys with the fee on top; no minimum elsewhere (exits)."""
    return np.where(entries, dust / (close * (1.0 + fee)), 0.0)


def own_rule(close: np.ndarray, fast: int, slow: int, capital: float, fee: float,
             dust: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The whole rule in vectorbt: its indicators, its crossings, its portfolio."""
    fast_ma = vbt.MA.run(close, fast)
    slow_ma = vbt.MA.run(close, slow)
    entries = fast_ma.ma_crossed_above(slow_ma)
    pf = vbt.Portfolio.from_signals(close, entries, fast_ma.ma_crossed_below(slow_ma), init_cash=capital, fees=fee,
                                    min_size=entry_min_size(close, entries.to_numpy(), fee, dust))
    return _orders(pf)


def given_signals(close: np.ndarray, signals: np.ndarray, capital: float, fee: float,
                  dust: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """vectorbt's portfolio on go-trader's signals (+1 entry, -1 exit)."""
    entries = signals == 1
    pf = vbt.Portfolio.from_signals(close, entries, signals == -1, init_cash=capital, fees=fee,
                                    min_size=entry_min_size(close, entries, fee, dust))
    return _orders(pf)


def main(argv: list[str]) -> int:
    source, target, runs = argv[1], argv[2], int(argv[3])
    with np.load(source) as data:
        inputs = {key: data[key] for key in data.files}
    capital, fee, dust = float(inputs["capital"]), float(inputs["fee"]), float(inputs["dust"])
    fast, slow = int(inputs["fast"]), int(inputs["slow"])
    out: dict[str, Any] = {"vectorbt_version": np.array(vbt.__version__)}
    for key in sorted(k for k in inputs if k.startswith("close.")):
        name = key.split(".", 1)[1]
        close = inputs[key]
        start = time.perf_counter()
        own = own_rule(close, fast, slow, capital, fee, dust)
        out[f"{name}.first_s"] = np.array(time.perf_counter() - start)
        warm = []
        for _ in range(runs):
            start = time.perf_counter()
            own = own_rule(close, fast, slow, capital, fee, dust)
            warm.append(time.perf_counter() - start)
        out[f"{name}.warm_s"] = np.array(warm)
        given = given_signals(close, inputs[f"signals.{name}"], capital, fee, dust)
        for label, (bar, side, price, value) in (("own", own), ("given", given)):
            out.update({f"{name}.{label}.bar": bar, f"{name}.{label}.side": side, f"{name}.{label}.price": price,
                        f"{name}.{label}.value": np.array(value)})
    np.savez(target, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
