"""check-lookahead: prove a strategy decides bar ``i`` from bars ``0..i`` only.

The way freqtrade's lookahead-analysis does it: run the strategy once over the whole file,
then again on prefixes of it (the file cut after bar ``n``), and compare. A strategy that
peeks at later bars gives a different signal or indicator on some bar of a prefix than on
the same bar of the full run; the report names the first such bar. Every prefix is checked
when the file is short enough, else ``checks`` prefixes spread evenly over it (and always
the first bars after warm-up, where peeking indicators usually show).

    check-lookahead rsi --csv data/binanceus/BTC_USDT-1h.csv --params '{"period": 14}'
    check-lookahead my_pkg.my_module:my_signal --csv bars.csv

Exit status: 0 no look-ahead, 1 look-ahead found (the JSON report says where), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common.csv_bars import load_ohlcv_csv
from common.ohlcv import OHLCV
from strategies.events import StrategyOutput

DEFAULT_CHECKS = 500
INDICATOR_RTOL = 1e-9  # indicators are recomputed, not copied: allow rounding, nothing more


@dataclass(frozen=True, slots=True)
class LookaheadFinding:
    """The first bar whose value on a prefix differs from the full run's."""

    bar: int
    ts: int
    field: str  # "signal" or "indicator:<name>"
    prefix_end: int  # the prefix was bars 0..prefix_end-1
    prefix_value: float | None
    full_value: float | None


@dataclass(frozen=True, slots=True)
class LookaheadReport:
    strategy: str
    bars: int
    prefixes_checked: int
    finding: LookaheadFinding | None

    @property
    def clean(self) -> bool:
        return self.finding is None


def prefix_ends(n_bars: int, checks: int, first: int = 1) -> list[int]:
    """Prefix lengths to test, ascending: all of them when there are at most ``checks``, else the
    first ``checks // 2`` and the rest spread evenly up to the full length."""
    if checks < 1:
        raise ValueError(f"checks: expected >= 1, got {checks}")
    ends = range(max(1, first), n_bars)
    if len(ends) <= checks:
        return list(ends)
    head = list(ends[: checks // 2])
    spread = np.linspace(head[-1] + 1, n_bars - 1, checks - len(head)).round().astype(int)
    return sorted(set(head) | set(int(e) for e in spread))


def _first_difference(prefix: np.ndarray, full: np.ndarray, exact: bool) -> int | None:
    if exact:
        differ = prefix != full
    else:
        both_nan = np.isnan(prefix) & np.isnan(full)
        close = np.abs(prefix - full) <= INDICATOR_RTOL * np.maximum(np.abs(full), 1.0)
        differ = ~(both_nan | close)
    hits = np.flatnonzero(differ)
    return int(hits[0]) if hits.size else None


def _value(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def find_lookahead(name: str, run: Callable[[int], StrategyOutput], data: OHLCV,
                   checks: int = DEFAULT_CHECKS) -> LookaheadReport:
    """``run(n)`` is the strategy on the first ``n`` bars (and its pair's). Prefixes are tried
    shortest first and the first one that disagrees is reported at its earliest bar: a
    strategy that peeks k bars ahead disagrees on bar i only in prefixes i+1..i+k, so the
    shortest disagreeing prefix holds the earliest such bar."""
    full = run(len(data))
    ends = prefix_ends(len(data), checks)
    for checked, end in enumerate(ends, start=1):
        out = run(end)
        fields = [("signal", out.signals, full.signals[:end], True)]
        fields += [(f"indicator:{k}", np.asarray(v, dtype=np.float64),
                    np.asarray(full.indicators[k][:end], dtype=np.float64), False)
                   for k, v in out.indicators.items() if k in full.indicators]
        found = [(bar, field, got, want) for field, got, want, exact in fields
                 if (bar := _first_difference(got, want, exact)) is not None]
        if found:
            bar, field, got, want = min(found, key=lambda f: f[0])
            finding = LookaheadFinding(bar, int(data.ts[bar]), field, end, _value(got[bar]), _value(want[bar]))
            return LookaheadReport(name, len(data), checked, finding)
    return LookaheadReport(name, len(data), len(ends), None)


def strategy_runner(name: str, data: OHLCV, params: dict[str, Any] | None,
                    pair: OHLCV | None = None) -> Callable[[int], StrategyOutput]:
    """``run(n)`` for a built-in (by name) or a user function (``"pkg.mod:fn"``); bad
    parameters fail here, once, not on every prefix."""
    from strategies import user

    if user.is_user_spec(name):
        fn = user.load_user_function(name)
        resolved = user.resolve_user_params(fn, params)
        return lambda n: user.run_user_function(fn, data.slice(0, n), resolved)
    from strategies.params import get_params
    from strategies.registry import compute_signals

    resolved = get_params(name).resolve(params)
    if get_params(name).needs_pair and pair is None:
        raise ValueError(f"{name}: needs the second leg's bars (--pair-csv)")
    return lambda n: compute_signals(name, data.slice(0, n), resolved, None if pair is None else pair.slice(0, n))


def _fail(message: str) -> int:
    print(f"check-lookahead: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check-lookahead", description=__doc__.split("\n\n")[0])
    parser.add_argument("strategy", help="a built-in name (rsi, macd, ...) or package.module:function")
    parser.add_argument("--csv", required=True, type=Path, help="OHLCV bars (the download-data format)")
    parser.add_argument("--pair-csv", type=Path, help="the second leg's bars, for pairs_spread")
    parser.add_argument("--params", default="{}", help="JSON object of strategy parameters")
    parser.add_argument("--checks", type=int, default=DEFAULT_CHECKS, help="prefixes to test (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        return _fail(f"--params: not JSON ({exc}); pass an object such as '{{\"period\": 14}}'")
    if not isinstance(params, dict):
        return _fail(f"--params: expected a JSON object, got {type(params).__name__}")
    try:
        data = load_ohlcv_csv(args.csv)
        pair = load_ohlcv_csv(args.pair_csv) if args.pair_csv else None
        if pair is not None and not np.array_equal(pair.ts, data.ts):
            return _fail(f"--pair-csv {args.pair_csv}: its bar times differ from --csv {args.csv}; align the files")
        report = find_lookahead(args.strategy, strategy_runner(args.strategy, data, params, pair), data, args.checks)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    print(json.dumps({"strategy": report.strategy, "bars": report.bars, "prefixes_checked": report.prefixes_checked,
                      "lookahead": not report.clean,
                      "first_difference": asdict(report.finding) if report.finding else None}))
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
