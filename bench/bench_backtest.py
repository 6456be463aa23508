"""Spot backtest throughput: go-trader against backtrader on the same SMA(20)/SMA(50) rule.

Run: ``python -m bench.bench_backtest [--quick]`` from the repo root. ``run()`` returns the
numbers, ``report()`` the rows with verdicts. Quick mode: 10k and 100k bars only, fewer runs.

The rule: all-in long-only, buy when SMA(20) crosses above SMA(50), sell everything when it
crosses below, 0.1% fee on each side, fills at the signal bar's close (backtrader with
cheat-on-close, ``coc=True``, so neither engine waits for the next open). go-trader's risk
limits are opened wide so nothing but the rule trades. Both engines get the same bars. go-trader
refuses a buy under $1 notional (``trading.ledger.DUST_NOTIONAL_USD``: it would only pay fees);
vectorbt gets the same rule (a minimum size at its entries); backtrader's book never comes near
$1 on the BTC series it runs.

Data: 10k bars are the last 10,000 real Binance BTC/USDT 1h bars (../shared/data). 100k and
1M bars tile the whole real series (45,024 bars, Aug 2017 - Oct 2022), each copy rescaled to
open at the previous copy's last close: every bar is a real bar's shape and the rule sees the
real history again and again. The copies' 4.5x growth (BTC's, then) is taken out by a constant
factor per bar (exp(-g) with g the real series' mean log growth per bar): carried on over 22 copies
it would reach 1e17 USD, beyond the 1e12 a ledger records. Not time-reversed or flat data: on that the rule
loses, and 11,700 round trips at 0.2% fees drive any book to ~1e-10 of its start, where
go-trader's drawdown kill switch (even at a 100% limit, which trips at 99.999999999%) stops it
while backtrader trades on.

vectorbt (``bench/vectorbt_side.py``, in its own interpreter: ``VECTORBT_PYTHON``, else this
one) runs the same rule on the same bars plus the reference GBM series of
tests/backtest/test_spot_gbm.py (100k and 1M bars; the 1M fall to ~e^-30 of their start, where
the book ends below $1 and the dust rule stops both engines' buys): its own MA crossings, and, to
set the indicators aside, its portfolio on go-trader's signals. Its first call (numba compiling
or loading its cache) is timed apart from the warm runs. The two sides are timed in paired
rounds (go-trader on each series, a first call untimed and a second timed, then one vectorbt
process's first call and a timed warm run on each), so a slow spell of the machine falls on
both. Issue 15's floor from 100k bars on: at least vectorbt's warm bars/s (the median of the
rounds' ratios), with identical trade lists.

Timing: go-trader from bars in memory to fills, equity and metrics (signals included);
backtrader ``cerebro.run()`` (its feed preload, indicators and broker; observers off, which
only helps it). Median of several runs. backtrader is not a project dependency: it is pip
installed into this interpreter on first use. Target: at least 100x backtrader's bars/s with
the same trade list.
"""
from __future__ import annotations

import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backtest.spot import BacktestResult, run_spot_backtest, strategy_signals
from bench.harness import Row, verdict
from common.csv_bars import load_ohlcv_csv
from common.ohlcv import OHLCV
from common.timeframes import HOUR_MS
from trading.ledger import DUST_NOTIONAL_USD
from trading.risk import RiskLimits

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ohlcv" / "binance" / "BTC_USDT-1h.csv"
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
RUNS = {10_000: 7, 100_000: 7, 1_000_000: 5}
QUICK_RUNS = {10_000: 5, 100_000: 3}
BACKTRADER_RUNS = {10_000: 3, 100_000: 1, 1_000_000: 1}
BACKTRADER_PIN = "backtrader==1.9.78.123"
FEE_PCT = 0.1
CAPITAL = 10_000.0
TARGET_RATIO = 100.0
GBM_SIZES, QUICK_GBM_SIZES = (100_000, 1_000_000), (100_000,)
VECTORBT_RUNS, QUICK_VECTORBT_RUNS = 5, 3
VECTORBT_FLOOR = 1.0  # issue 15: at least vectorbt's bars/s ...
VECTORBT_FLOOR_FROM_BARS = 100_000  # ... from 100k bars on (below, fixed costs dominate both)
VECTORBT_SIDE = Path(__file__).resolve().parent / "vectorbt_side.py"
VECTORBT_TIMEOUT_S = 1200  # its first call compiles with numba: minutes on a loaded machine
SMA = {"fast": 20, "slow": 50}
# Nothing but the rule trades: no drawdown kill, no daily stop, no loss-streak pause, all in.
WIDE_OPEN = RiskLimits(max_drawdown_pct=100.0, max_position_pct=100.0, daily_loss_pct=100.0, circuit_breaker_ms=0)


def tiled_bars(real: OHLCV, n: int) -> OHLCV:
    """``n`` hourly bars: the real series' last ``n`` if it is long enough, else copies of the
    whole series, each rescaled to open at the previous copy's last close, the whole detrended
    (every bar scaled by the same factor per bar, so each bar keeps its real shape)."""
    if n <= len(real):
        return real.tail(n)
    block = np.stack([real.open, real.high, real.low, real.close, real.volume])
    parts, scale, total = [], 1.0, 0
    while total < n:
        part = block.copy()
        part[:4] *= scale
        parts.append(part)
        scale *= float(real.close[-1]) / float(real.open[0])
        total += block.shape[1]
    cols = np.concatenate(parts, axis=1)[:, :n]
    # detrended by the series' mean growth per bar, so 1M bars stay in BTC's real price range
    # (carried on, 22 copies would reach 1e17 USD, beyond what a ledger records)
    growth = np.log(float(real.close[-1]) / float(real.open[0])) / block.shape[1]
    cols[:4] *= np.exp(-growth * np.arange(n))
    ts = int(real.ts[0]) + np.arange(n, dtype=np.int64) * HOUR_MS
    return OHLCV(ts, *(np.ascontiguousarray(c) for c in cols)).validate("tiled bars")


def gbm_bars(n: int, seed: int = 3, drift: float = -3e-5, vol: float = 0.01) -> OHLCV:
    """The reference GBM series of tests/backtest/test_spot_gbm.py: hourly closes
    exp(cumsum(N(drift, vol))) from 50,000, which over 1M bars end ~e^-30 of their start."""
    rng = np.random.default_rng(seed)
    close = 50_000.0 * np.exp(np.cumsum(rng.normal(drift, vol, n)))
    ts = 1_600_000_000_000 - 1_600_000_000_000 % HOUR_MS + np.arange(n, dtype=np.int64) * HOUR_MS
    open_ = np.r_[close[0], close[:-1]]
    return OHLCV(ts, open_, np.maximum(open_, close), np.minimum(open_, close), close, np.ones(n))


def _median_seconds(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _warm_seconds(fn: Callable[[], Any]) -> float:
    """One call untimed, then one timed: go-trader's side of a paired round, like vectorbt's,
    whose timed run follows its first call on the same series in its process."""
    fn()
    return _median_seconds(fn, 1)[0]


def go_trader_run(bars: OHLCV) -> BacktestResult:
    """The backtest as a user gets it (fills, equity curve, metrics, final state): what is
    timed against vectorbt, whose timed run likewise ends at its order records and final value."""
    return run_spot_backtest("bench-sma", "sma_crossover", "BTC/USDT", "1h", bars, SMA,
                             capital=CAPITAL, fee_pct=FEE_PCT, limits=WIDE_OPEN)


def go_trader_trades(bars: OHLCV) -> tuple[list[tuple[int, str, float]], float]:
    """[(bar index, side, price)] and the final equity of the go-trader run."""
    result = go_trader_run(bars)
    index = np.searchsorted(bars.ts + HOUR_MS, [f.ts_event for f in result.fills])
    return [(int(i), f.side, f.price) for i, f in zip(index, result.fills)], float(result.equity[-1])


def ensure_backtrader() -> Any:
    """Import backtrader, pip-installing the pinned version into this interpreter if missing."""
    try:
        return importlib.import_module("backtrader")
    except ImportError:
        print(f"installing {BACKTRADER_PIN} for the benchmark ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", BACKTRADER_PIN],
                       check=True)
        importlib.invalidate_caches()
        return importlib.import_module("backtrader")


def backtrader_run(bt: Any, bars: OHLCV) -> tuple[list[tuple[int, str, float]], float]:
    """The same rule in backtrader; returns the trades and final equity."""
    import pandas as pd

    frame = pd.DataFrame({"open": bars.open, "high": bars.high, "low": bars.low, "close": bars.close,
                          "volume": bars.volume},
                         index=pd.to_datetime(bars.ts, unit="ms"))
    trades: list[tuple[int, str, float]] = []

    class SmaCross(bt.Strategy):
        def __init__(self) -> None:
            self.cross = bt.ind.CrossOver(bt.ind.SMA(self.data.close, period=20),
                                          bt.ind.SMA(self.data.close, period=50))

        def next(self) -> None:
            if not self.position and self.cross[0] > 0:
                # All in, as go-trader sizes it, less 1e-9: backtrader rejects an order whose
                # cost + commission exceeds the cash by a rounding error ("Margin").
                price = self.data.close[0]
                self.buy(size=self.broker.getcash() / (price * (1.0 + FEE_PCT / 100.0)) * (1.0 - 1e-9))
            elif self.position and self.cross[0] < 0:
                self.close()

        def notify_order(self, order: Any) -> None:
            if order.status == order.Completed:  # reported on the next bar; executed at the signal bar
                trades.append((order.executed.dt, "buy" if order.isbuy() else "sell", order.executed.price))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame))
    cerebro.addstrategy(SmaCross)
    cerebro.broker.setcash(CAPITAL)
    cerebro.broker.setcommission(commission=FEE_PCT / 100.0)
    cerebro.broker.set_coc(True)
    cerebro.broker.set_checksubmit(False)
    cerebro.run()
    executed_ms = np.array([bt.num2date(dt).replace(tzinfo=timezone.utc).timestamp() * 1000 for dt, _, _ in trades])
    index = np.searchsorted(bars.ts, np.rint(executed_ms).astype(np.int64))
    return [(int(i), side, price) for i, (_, side, price) in zip(index, trades)], float(cerebro.broker.getvalue())


def compare_trades(ours: list[tuple[int, str, float]], theirs: list[tuple[int, str, float]],
                   other: str = "backtrader") -> dict[str, Any]:
    """Same bars and sides, prices within 1e-9 relative; the first difference if not."""
    same_count = len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if a[0] != b[0] or a[1] != b[1] or abs(a[2] - b[2]) > 1e-9 * abs(a[2]):
            return {"agree": False, "first_difference": {"trade": k, "go_trader": a, other: b}}
    if not same_count:
        return {"agree": False, "first_difference": {"trade": min(len(ours), len(theirs)),
                                                     "go_trader_count": len(ours), f"{other}_count": len(theirs)}}
    return {"agree": True}


def vectorbt_python() -> tuple[str, str | None]:
    """(the interpreter that runs vectorbt, why it cannot or None): ``VECTORBT_PYTHON`` or this one."""
    python = os.environ.get("VECTORBT_PYTHON") or sys.executable
    probe = subprocess.run([python, "-c", "import vectorbt"], capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return python, (f"{python} cannot import vectorbt ({last}): pip install -r requirements-bench.txt, "
                        "or set VECTORBT_PYTHON to a python that has it")
    return python, None


def run_vectorbt(python: str, series: dict[str, OHLCV], runs: int) -> dict[str, dict[str, Any]]:
    """vectorbt_side.py over ``series`` in ``python``: per series its trades (own crossings and on
    go-trader's signals), final values and timings."""
    with tempfile.TemporaryDirectory(prefix="go-trader-vectorbt-") as tmp:
        source, target = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        arrays: dict[str, Any] = {"capital": CAPITAL, "fee": FEE_PCT / 100.0, "dust": DUST_NOTIONAL_USD, **SMA}
        for name, bars in series.items():
            arrays[f"close.{name}"] = bars.close
            arrays[f"signals.{name}"] = strategy_signals("sma_crossover", bars, SMA)[0]
        np.savez(source, **arrays)
        subprocess.run([python, str(VECTORBT_SIDE), str(source), str(target), str(runs)], check=True,
                       timeout=VECTORBT_TIMEOUT_S)
        with np.load(target) as out:
            got = {key: out[key] for key in out.files}
    sides = {1: "buy", -1: "sell"}
    return {name: {
        "version": str(got["vectorbt_version"]),
        "first_s": float(got[f"{name}.first_s"]),
        "warm_s": statistics.median(got[f"{name}.warm_s"].tolist()),
        **{f"{label}_trades": [(int(i), sides[int(side)], float(price)) for i, side, price in
                               zip(got[f"{name}.{label}.bar"], got[f"{name}.{label}.side"],
                                   got[f"{name}.{label}.price"])] for label in ("own", "given")},
        **{f"{label}_final_value": float(got[f"{name}.{label}.value"]) for label in ("own", "given")},
    } for name in series}


def vectorbt_comparison(ours: dict[str, tuple[OHLCV, list[tuple[int, str, float]], float]], data: dict[str, str],
                        runs: int) -> dict[str, Any]:
    """go-trader (bars, trades, final equity per series) against vectorbt, in
    ``runs`` paired rounds: go-trader warm on each series (``_warm_seconds``), then a vectorbt
    process's warm run on each, seconds apart, so both sides see the machine in the same state
    (this 2-core VM's speed drifts: the same 1M-bar backtest took 179 ms and, an hour later,
    250 to 313 ms). The ratio is the median of the rounds' ratios. Neither side's timing holds
    the turning of its trades into the (bar, side, price) lists compared here."""
    python, missing = vectorbt_python()
    if missing:
        return {"ran": False, "why": missing}
    series = {name: bars for name, (bars, _, _) in ours.items()}
    first: dict[str, dict[str, Any]] = {}
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in series}  # (ours, theirs) seconds
    for _ in range(runs):
        timed = {name: _warm_seconds(lambda: go_trader_run(bars)) for name, bars in series.items()}
        theirs = run_vectorbt(python, series, 1)
        first = first or theirs
        for name in series:
            rounds[name].append((timed[name], theirs[name]["warm_s"]))
    rows = []
    for name, (bars, trades, equity) in ours.items():
        v = first[name]
        own, given = compare_trades(trades, v["own_trades"], "vectorbt"), compare_trades(trades, v["given_trades"],
                                                                                         "vectorbt")
        ours_s = statistics.median(o for o, _ in rounds[name])
        theirs_s = statistics.median(t for _, t in rounds[name])
        rows.append({"series": name, "bars": len(bars), "data": data[name], "vectorbt_runs": runs,
                     "go_trader_bars_per_s": len(bars) / ours_s, "vectorbt_bars_per_s": len(bars) / theirs_s,
                     "vectorbt_first_call_s": v["first_s"], "fills": len(trades),
                     "ratio": statistics.median(t / o for o, t in rounds[name]),
                     "round_ratios": [t / o for o, t in rounds[name]],
                     "floor": len(bars) >= VECTORBT_FLOOR_FROM_BARS,
                     "go_trader_final_equity": equity, "vectorbt_final_value": v["own_final_value"],
                     "agree_own_crossings": own["agree"], "agree_our_signals": given["agree"],
                     "first_difference": own.get("first_difference") or given.get("first_difference")})
    met = all(r["agree_own_crossings"] and r["agree_our_signals"] and (not r["floor"] or r["ratio"] >= VECTORBT_FLOOR)
              for r in rows)
    return {"ran": True, "python": python, "version": first[next(iter(first))]["version"], "results": rows,
            "met": met}


def run(quick: bool = False, sizes: tuple[int, ...] | None = None) -> dict[str, Any]:
    bt = ensure_backtrader()
    real = load_ohlcv_csv(DATA)
    runs = QUICK_RUNS if quick else RUNS
    rows = []
    ours_by_series: dict[str, tuple[OHLCV, list[tuple[int, str, float]], float]] = {}  # timed in vectorbt's rounds
    data: dict[str, str] = {}
    for n in sizes or (QUICK_SIZES if quick else SIZES):
        bars = tiled_bars(real, n)
        ours_s, (ours, ours_equity) = _median_seconds(lambda: go_trader_trades(bars), runs.get(n, 3))
        theirs_s, (theirs, theirs_equity) = _median_seconds(lambda: backtrader_run(bt, bars), BACKTRADER_RUNS.get(n, 1))
        ours_by_series[f"btc_{n}"] = (bars, ours, ours_equity)
        data[f"btc_{n}"] = "real BTC" if n <= len(real) else f"real BTC, tiled x{n / len(real):.1f}"
        rows.append({
            "bars": n,
            "data": "real" if n <= len(real) else f"real, tiled x{n / len(real):.1f}",
            "go_trader_runs": runs.get(n, 3),
            "backtrader_runs": BACKTRADER_RUNS.get(n, 1),
            "go_trader_s": ours_s,
            "go_trader_bars_per_s": n / ours_s,
            "backtrader_s": theirs_s,
            "backtrader_bars_per_s": n / theirs_s,
            "ratio": theirs_s / ours_s,
            "fills": len(ours),
            "go_trader_final_equity": ours_equity,
            "backtrader_final_equity": theirs_equity,
            **compare_trades(ours, theirs),
        })
    for n in QUICK_GBM_SIZES if quick else GBM_SIZES:
        gbm = gbm_bars(n)
        ours_by_series[f"gbm_{n}"] = (gbm, *go_trader_trades(gbm))
        data[f"gbm_{n}"] = f"GBM, seed 3, ends {float(gbm.close[-1] / gbm.close[0]):.1e} of its start"
    return {"rule": f"SMA(20)/SMA(50) all-in long-only, 0.1% fee, fill at signal close, no buy under "
                    f"${DUST_NOTIONAL_USD:g} notional (go-trader's dust rule; vectorbt: the same as its min_size)",
            "target_ratio": TARGET_RATIO,
            "results": rows, "met": all(r["ratio"] >= TARGET_RATIO and r["agree"] for r in rows),
            "vectorbt": vectorbt_comparison(ours_by_series, data, QUICK_VECTORBT_RUNS if quick else VECTORBT_RUNS)}


def report(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [("rule", r["rule"], "", "")]
    for x in r["results"]:
        size = f"{x['bars']:,} bars ({x['data']})"
        agree = "yes" if x["agree"] else f"no: {x['first_difference']}"
        rows += [
            (f"{size}: go-trader / backtrader bars/s (medians of {x['go_trader_runs']} / {x['backtrader_runs']})",
             f"{x['go_trader_bars_per_s']:,.0f} / {x['backtrader_bars_per_s']:,.0f}", "", ""),
            (f"{size}: speed vs backtrader", f"{x['ratio']:,.0f}x", f">= {TARGET_RATIO:.0f}x",
             verdict(x["ratio"] >= TARGET_RATIO)),
            (f"{size}: trade lists agree ({x['fills']} fills each)", agree, "same bars, sides, prices",
             verdict(x["agree"])),
        ]
    return rows + vectorbt_report(r["vectorbt"])


def vectorbt_report(v: dict[str, Any]) -> list[Row]:
    if not v["ran"]:
        return [("vectorbt comparison", f"not run: {v['why']}", "", "")]
    rows: list[Row] = []
    for x in v["results"]:
        size = f"{x['bars']:,} bars ({x['data']})"
        agree = ("yes; yes" if x["agree_own_crossings"] and x["agree_our_signals"] else
                 f"{'yes' if x['agree_own_crossings'] else 'no'}; {'yes' if x['agree_our_signals'] else 'no'}: "
                 f"{x['first_difference']}")
        rows += [
            (f"{size}: go-trader / vectorbt {v['version']} bars/s (medians of {x['vectorbt_runs']} paired rounds: "
             f"go-trader, then a vectorbt warm run; its first call {x['vectorbt_first_call_s']:.1f} s)",
             f"{x['go_trader_bars_per_s']:,.0f} / {x['vectorbt_bars_per_s']:,.0f}", "", ""),
            (f"{size}: speed vs vectorbt (median of the rounds' ratios; lowest, highest)",
             f"{x['ratio']:.2f}x ({min(x['round_ratios']):.2f}, {max(x['round_ratios']):.2f})",
             f">= {VECTORBT_FLOOR:g}x (issue 15)" if x["floor"] else "(reference)",
             verdict(x["ratio"] >= VECTORBT_FLOOR) if x["floor"] else ""),
            (f"{size}: trade lists agree with vectorbt (its own crossings; on our signals), {x['fills']} fills",
             agree, "same bars, sides, prices", verdict(x["agree_own_crossings"] and x["agree_our_signals"])),
        ]
    return rows


def main() -> int:
    result = run(quick="--quick" in sys.argv)
    print(result["rule"])
    print(f"{'bars':>9} {'go-trader bars/s':>17} {'backtrader bars/s':>18} {'ratio':>7} {'fills':>6}  "
          f"{'trades agree':<12} {'final equity (ours / bt)':<28} data")
    for r in result["results"]:
        agree = "yes" if r["agree"] else f"NO {r['first_difference']}"
        print(f"{r['bars']:>9} {r['go_trader_bars_per_s']:>17,.0f} {r['backtrader_bars_per_s']:>18,.0f} "
              f"{r['ratio']:>6.0f}x {r['fills']:>6}  {agree:<12} "
              f"{r['go_trader_final_equity']:>12,.2f} / {r['backtrader_final_equity']:<12,.2f} {r['data']}")
    print(f"target >= {TARGET_RATIO:.0f}x with the same trades: {'met' if result['met'] else 'NOT met'}")
    vectorbt = result["vectorbt"]
    for measure, value, target, judged in vectorbt_report(vectorbt):
        print(" | ".join(part for part in (measure, value, target, judged) if part))
    return 0 if result["met"] and vectorbt.get("met", True) else 1


if __name__ == "__main__":
    sys.exit(main())
