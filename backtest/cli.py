"""``backtest``: spot, options and walk-forward backtests from the command line.

    backtest spot --strategy sma_crossover --csv BTC_USDT-1h.csv [--params '{"fast": 10}'] [--out DIR]
    backtest spot --config config/default.json --id momentum-btc --csv BTC_USDT-1h.csv
    backtest spot --config config/default.json --all --data-dir ../shared/data/ohlcv/binance
    backtest spot --strategy rsi --sim --days 365
    backtest options --underlying BTC --since 2023-01-01 --capital 1000 --max-positions 4   # download-data's files
    backtest options --csv BTC_USD-1d_2022-11-06_2024-08-31.csv --config config/default.json
    backtest walkforward --strategy sma_crossover --csv BTC_USDT-1h.csv --train-bars 4380 --test-bars 1095

The timeframe is the file's bar spacing and the symbol its name (or --symbol); a flag or config
entry that contradicts either is refused. Every run prints its metrics; ``--out DIR`` also writes
metrics.json, trades.csv, fills.csv, equity.csv, report.png and report.html (per strategy in a
subfolder when there are several).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

import numpy as np

from backtest.data import BacktestDataError, align_pair, csv_path_for, load_csv, sim_bars, window
from backtest.metrics import OBJECTIVES
from backtest.report import ReportData, spot_report_data, write_report
from backtest.spot import BacktestResult, run_spot_backtest
from backtest.walkforward import ClusterUnavailableError
from common.csv_bars import name_parts, spacing_timeframe
from common.market_sim import DEFAULT_SPECS
from common.ohlcv import OHLCV
from common.timeframes import DAY_MS, TIMEFRAME_MS
from trading.risk import RiskLimits

if TYPE_CHECKING:
    from backtest.options import OptionsBacktestResult
    from options.risk import OptionsRiskLimits

SUMMARY_KEYS = ("total_return_pct", "cagr_pct", "sharpe", "sortino", "max_drawdown_pct", "win_rate_pct",
                "profit_factor", "exposure_pct", "trades", "fees")
DEFAULT_SIM_START = "2023-01-01"
DEFAULT_CONFIG = "config/default.json"


class CliError(ValueError):
    """A command line that cannot run; printed as one line, exit status 2."""


def parse_time(text: str | None, flag: str) -> int | None:
    """``2023-01-01``, ``2023-01-01T12:00:00Z`` (UTC) or integer ms."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{flag}: expected a date like 2023-01-01 or ms since the epoch, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def parse_json_object(text: str | None, flag: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{flag}: not valid JSON ({exc.msg} at column {exc.colno}): {text!r}") from None
    if not isinstance(value, dict):
        raise CliError(f"{flag}: expected a JSON object like {{\"fast\": 10}}, got {text!r}")
    return value


# --- bars ------------------------------------------------------------------------------------------
def _add_data_flags(p: argparse.ArgumentParser) -> None:
    source = p.add_argument_group("bars (one source)")
    source.add_argument("--csv", help="OHLCV CSV of the traded symbol (download-data / replay format)")
    source.add_argument("--pair-csv", help="CSV of the second leg, for pairs strategies")
    source.add_argument("--data-dir", help="folder of SYMBOL-TIMEFRAME.csv files, e.g. BTC_USDT-1h.csv")
    source.add_argument("--sim", action="store_true", help="bars from the seeded simulator (the sim feed)")
    source.add_argument("--days", type=int, default=365, help="simulated days (with --sim; default 365)")
    source.add_argument("--seed", type=int, default=7, help="simulator seed (with --sim; default 7)")
    p.add_argument("--since", help="first bar to trade (UTC date or ms); earlier bars warm indicators up")
    p.add_argument("--until", help="bars before this time only (UTC date or ms)")


class Bars(NamedTuple):
    """Bars to backtest and what they are: the symbol and timeframe are the file's own."""

    data: OHLCV
    pair: OHLCV | None
    symbol: str
    timeframe: str
    origin: str  # the file (or "simulator") they came from


# download-data's folders are searched for these timeframes in this order when no source is given.
DISCOVERY_TIMEFRAMES = ("1d", "4h", "1h", "30m", "15m", "5m", "1m")
DOWNLOAD_ROOT = Path("data")


def download_data_file(base: str, root: Path = DOWNLOAD_ROOT, pattern: str = "*/{base}_*-*.csv") -> Path:
    """The bars ``download-data`` fetched for ``base`` (``data/<exchange>/<BASE>_<QUOTE>-<tf>.csv``),
    the coarsest timeframe first: an options backtest decides once a day."""
    found = {}
    for path in sorted(root.glob(pattern.format(base=base))):
        parts = name_parts(path)
        if parts is not None and parts[0].startswith(f"{base}/"):
            found.setdefault(parts[1], path)
    for timeframe in DISCOVERY_TIMEFRAMES:
        if timeframe in found:
            return found[timeframe]
    raise CliError(f"no bars for {base}: none in {root}/{pattern.format(base=base)}; fetch them with "
                   f"`download-data --exchange binanceus --symbols {base}/USDT --timeframe 1d --since 2022-10-01`, "
                   f"or give --csv FILE, --data-dir DIR or --sim")


def checked_timeframe(data: OHLCV, path: Path, wanted: str | None, asked_by: str) -> str:
    """The timeframe of the file's bar spacing; a wanted one that contradicts it is refused."""
    spacing = spacing_timeframe(data, str(path))
    named = name_parts(path)
    if named is not None and named[1] != spacing:
        raise CliError(f"{path}: the file name says {named[1]} bars but they are {spacing} apart")
    if wanted is not None and wanted != spacing:
        raise CliError(f"{asked_by} {wanted} contradicts {path}: its bars are {spacing} apart "
                       f"(drop {asked_by.split()[0]} or give a {wanted} file)")
    return spacing


def checked_symbol(path: Path, wanted: str | None, asked_by: str) -> str:
    """The symbol the file name states, or the wanted one when it states none; they must agree."""
    named = name_parts(path)
    if named is None:
        if wanted is None:
            raise CliError(f"{path}: the file name does not say the symbol (like BTC_USDT-1h.csv); give --symbol")
        return wanted
    if wanted is not None and wanted != named[0]:
        raise CliError(f"{asked_by} {wanted} contradicts {path}, whose name says {named[0]}")
    return named[0]


class BarSource:
    """Bars by (symbol, timeframe) from the flags: one CSV, a folder of CSVs, the simulator,
    or (``discover``) the files download-data wrote. The timeframe is always the bars' own
    spacing, and the symbol the file's name: a flag or config entry that contradicts either
    is refused, naming both."""

    def __init__(self, args: argparse.Namespace, discover: bool = False) -> None:
        chosen = [flag for flag, on in (("--csv", args.csv), ("--data-dir", args.data_dir), ("--sim", args.sim)) if on]
        if len(chosen) > 1 or (not chosen and not discover):
            raise CliError(f"give exactly one bar source: --csv FILE, --data-dir DIR or --sim (got {chosen or 'none'})")
        self.args = args
        self.until = parse_time(args.until, "--until")
        self._sim: dict[tuple[str, str], OHLCV] = {}

    def bars(self, symbol: str | None, timeframe: str | None, pair_symbol: str | None = None, *,
             asked_by: str = "--timeframe", symbol_asked_by: str = "--symbol", base: str | None = None) -> Bars:
        """Bars of ``symbol`` (None: the file's) at the file's timeframe, which must be
        ``timeframe`` when one is asked for (``asked_by`` names who asked)."""
        args = self.args
        if args.sim:
            symbol, timeframe = symbol or f"{base or 'BTC'}/USDT", timeframe or "1h"
            primary, pair, origin = self._simulated(symbol, timeframe), None, "simulator"
            if pair_symbol:
                pair = self._simulated(pair_symbol, timeframe)
        else:
            if args.data_dir and symbol is None and base is not None:
                path = download_data_file(base, Path(args.data_dir), "{base}_*-*.csv")
            elif args.data_dir:
                if symbol is None:
                    raise CliError("--data-dir: give --symbol (or --config) to say which file to read")
                path = self._in_dir(Path(args.data_dir), symbol, timeframe)
            elif args.csv:
                path = Path(args.csv)
            else:
                path = download_data_file(base or (symbol or "BTC/USDT").split("/")[0])
            primary = load_csv(path)
            origin = str(path)
            symbol = checked_symbol(path, symbol, symbol_asked_by)
            timeframe = checked_timeframe(primary, path, timeframe, asked_by)
            pair = None
            if args.data_dir and pair_symbol:
                pair = load_csv(csv_path_for(args.data_dir, pair_symbol, timeframe))
            elif pair_symbol or getattr(args, "pair_csv", None):
                if not args.pair_csv:
                    raise CliError(f"this strategy trades a pair ({symbol} vs {pair_symbol}): give --pair-csv FILE")
                pair = load_csv(args.pair_csv)
                checked_timeframe(pair, Path(args.pair_csv), timeframe, "--pair-csv")
        if self.until is not None:
            primary = window(primary, None, self.until, symbol)
            pair = None if pair is None else window(pair, None, self.until, pair_symbol or "pair")
        if pair is not None:
            primary, pair = align_pair(primary, pair)
        return Bars(primary, pair, symbol, timeframe, origin)

    @staticmethod
    def _in_dir(folder: Path, symbol: str, timeframe: str | None) -> Path:
        if timeframe is not None:
            return csv_path_for(folder, symbol, timeframe)
        stem = symbol.replace("/", "_")
        files = sorted(folder.glob(f"{stem}-*.csv"))
        if len(files) != 1:
            raise CliError(f"--data-dir {folder}: {len(files)} files {stem}-*.csv; give --timeframe to pick one")
        return files[0]

    def _simulated(self, symbol: str, timeframe: str) -> OHLCV:
        key = (symbol, timeframe)
        if key not in self._sim:
            start = parse_time(self.args.since or DEFAULT_SIM_START, "--since")
            start -= start % DAY_MS
            # The warm-up comes before --since: 60 extra days of the same path.
            made = sim_bars(list(DEFAULT_SPECS), timeframe, start_ms=start - 60 * DAY_MS,
                            days=self.args.days + 60, seed=self.args.seed)
            if symbol not in made:
                raise CliError(f"--sim: no simulated market for {symbol}; known: {', '.join(made)}")
            self._sim.update({(s, timeframe): bars for s, bars in made.items()})
        return self._sim[key]


# --- output ----------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def print_table(rows: list[tuple[str, dict[str, Any]]], keys: Sequence[str] = SUMMARY_KEYS) -> None:
    header = ["strategy", *keys]
    body = [[name, *(_cell(m.get(k)) for k in keys)] for name, m in rows]
    widths = [max(len(r[c]) for r in [header, *body]) for c in range(len(header))]
    for row in [header, *body]:
        print("  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths))))


# --- spot --------------------------------------------------------------------------------------------
def _spot_jobs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], float, float]:
    """(backtests to run, fee %, slippage %) from --strategy or --config."""
    if args.config:
        from config.settings import load_config, use_strategies_dir
        from trading.portfolio import strategy_metas

        cfg = load_config(args.config)
        use_strategies_dir(cfg)
        limits = {m.strategy_id: m.limits for m in strategy_metas(cfg)}
        if args.all:
            chosen = [sc for sc in cfg.spot_strategies() if sc.script is None]  # a script reads only the present
        elif args.id:
            sc = cfg.strategy(args.id)
            if not sc.is_spot:
                raise CliError(f"--id {args.id}: is an options strategy; use `backtest options`")
            if sc.script is not None:
                raise CliError(f"--id {args.id}: runs the script {sc.script}, which decides on the present only "
                               f"and cannot be backtested; write it as a function (see README)")
            chosen = [sc]
        else:
            raise CliError("--config needs --id ID or --all")
        jobs = [dict(strategy_id=sc.id, strategy=sc.strategy, symbol=sc.symbol, timeframe=sc.timeframe,
                     params=dict(sc.params), pair_symbol=sc.pair, capital=sc.capital, limits=limits[sc.id],
                     asked_by=f"config timeframe of {sc.id}", symbol_asked_by=f"config symbol of {sc.id}")
                for sc in chosen]
        if args.timeframe is not None and any(job["timeframe"] != args.timeframe for job in jobs):
            raise CliError(f"--timeframe {args.timeframe} contradicts the config's timeframe "
                           f"{jobs[0]['timeframe']} of {jobs[0]['strategy_id']}; drop --timeframe")
        fee = cfg.fee_pct if args.fee_pct is None else args.fee_pct
        slippage = cfg.slippage_pct if args.slippage_pct is None else args.slippage_pct
        return jobs, fee, slippage
    if not args.strategy:
        raise CliError("give --strategy NAME, or --config FILE with --id ID or --all")
    job = dict(strategy_id=args.strategy, strategy=args.strategy, symbol=args.symbol, timeframe=args.timeframe,
               params=parse_json_object(args.params, "--params"), pair_symbol=args.pair_symbol,
               capital=1000.0, limits=RiskLimits(), asked_by="--timeframe", symbol_asked_by="--symbol")
    return [job], 0.1 if args.fee_pct is None else args.fee_pct, 0.0 if args.slippage_pct is None else args.slippage_pct


def run_spot(args: argparse.Namespace) -> int:
    jobs, fee, slippage = _spot_jobs(args)
    if args.capital is not None:
        for job in jobs:
            job["capital"] = args.capital
    source = BarSource(args)
    since = parse_time(args.since, "--since")
    results: list[BacktestResult] = []
    total_bars, total_seconds = 0, 0.0
    for job in jobs:
        bars = source.bars(job["symbol"], job["timeframe"], job["pair_symbol"], asked_by=job["asked_by"],
                           symbol_asked_by=job["symbol_asked_by"])
        started = time.perf_counter()
        result = run_spot_backtest(job["strategy_id"], job["strategy"], bars.symbol, bars.timeframe, bars.data,
                                   job["params"], bars.pair, job["capital"], fee, slippage, job["limits"], since)
        total_seconds += time.perf_counter() - started
        total_bars += len(result.data)
        results.append(result)
    print_table([(r.strategy_id, r.metrics) for r in results])
    print(f"{len(results)} backtest(s), {total_bars} bars in {total_seconds:.3f} s "
          f"({total_bars / max(total_seconds, 1e-9):,.0f} bars/s)")
    if args.out:
        out = Path(args.out)
        for r in results:
            write_report(spot_report_data(r), out / r.strategy_id if len(results) > 1 else out)
        print(f"reports written to {out}")
    return 0


# --- options -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptionsJobs:
    """The options strategies of one underlying as the services run them, from the config."""

    strategies: list[tuple[str, str, str, dict[str, Any]]]  # (id, strategy, venue, params)
    capital: dict[str, float]
    limits: dict[str, "OptionsRiskLimits"]  # the signal engine's
    risk_limits: dict[str, RiskLimits]  # id -> the portfolio's limits
    max_positions: int
    min_score: float
    risk_free_rate: float
    fee_pct: float
    slippage_pct: float
    iv_rank_days: int


def options_jobs(args: argparse.Namespace, underlying: str) -> OptionsJobs:
    """Each configured options strategy of ``underlying`` on the chosen venues, with the params,
    capital and limits the services give it (``options_params``, ``strategy_metas``); the
    command line's --capital, --max-positions, --min-score, --fee-pct and --slippage-pct win."""
    from config.settings import load_config
    from options.risk import OptionsRiskLimits
    from trading.engine import options_params
    from trading.portfolio import strategy_metas

    cfg = load_config(args.config)
    chosen = [sc for sc in cfg.options_strategies() if sc.underlying == underlying and sc.venue in args.venue]
    if not chosen:
        raise CliError(f"--config {args.config}: no options strategy on {underlying} at venue(s) "
                       f"{', '.join(args.venue)}")
    metas = {m.strategy_id: m for m in strategy_metas(cfg)}
    venue = cfg.venue_options(chosen[0].venue)
    return OptionsJobs(
        strategies=[(sc.id, sc.strategy, sc.venue, options_params(sc.strategy, sc.params, sc.theta_harvest))
                    for sc in chosen],
        capital={sc.id: float(args.capital if args.capital is not None else sc.capital) for sc in chosen},
        limits={sc.id: OptionsRiskLimits(max_drawdown_pct=sc.max_drawdown_pct) for sc in chosen},
        risk_limits={sc.id: metas[sc.id].limits for sc in chosen},
        max_positions=args.max_positions if args.max_positions is not None else venue.max_positions,
        min_score=args.min_score if args.min_score is not None else venue.min_score,
        risk_free_rate=venue.risk_free_rate,
        fee_pct=cfg.fee_pct if args.fee_pct is None else args.fee_pct,
        slippage_pct=cfg.slippage_pct if args.slippage_pct is None else args.slippage_pct,
        iv_rank_days=cfg.options.iv_rank_days,
    )


def _underlying(args: argparse.Namespace) -> str:
    """--underlying, else the base of --csv's file name, else BTC; they must agree."""
    named = name_parts(args.csv) if args.csv else None
    base = named[0].split("/")[0] if named else None
    if args.underlying and base and args.underlying != base:
        raise CliError(f"--underlying {args.underlying} contradicts {args.csv}, whose name says {named[0]}")
    return args.underlying or base or "BTC"


def print_reasons(result: "OptionsBacktestResult", capital: Mapping[str, float]) -> None:
    """Per strategy: what it opened, or why it opened nothing; every kind of reason a proposal
    was not taken, with its count and latest text."""
    for sid, run in result.books.items():
        metrics = result.metrics[sid]
        print(f"{sid}: opened {metrics['opened']} option leg(s) at capital ${capital[sid]:,.0f}")
        if metrics["opened"] == 0:
            minimum = run.last_reasons.get("venue minimum")
            if minimum:
                print(f"  cannot trade at ${capital[sid]:,.0f}: {minimum}")
        for line in metrics["why_not"]:
            print(f"  {line}")


def run_options(args: argparse.Namespace) -> int:
    from backtest.options import run_options_backtest

    underlying = _underlying(args)
    jobs = options_jobs(args, underlying)
    source = BarSource(args, discover=True)
    bars = source.bars(args.symbol, args.timeframe, base=underlying)
    if bars.symbol.split("/")[0] != underlying:
        raise CliError(f"--underlying {underlying} contradicts {bars.origin}, whose name says {bars.symbol}")
    data = bars.data
    spacing = "" if args.sim else " from the bar spacing"
    print(f"bars: {bars.origin} ({bars.symbol}, {bars.timeframe}{spacing}, {len(data)} bars)")
    started = time.perf_counter()
    result = run_options_backtest(underlying, data, bars.timeframe, capital=min(jobs.capital.values()),
                                  max_positions=jobs.max_positions, min_score=jobs.min_score,
                                  risk_free_rate=jobs.risk_free_rate, strategies=jobs.strategies,
                                  capital_by_id=jobs.capital, limits_by_id=jobs.limits,
                                  risk_limits_by_id=jobs.risk_limits, iv_csv=args.iv_csv,
                                  iv_rank_days=jobs.iv_rank_days,
                                  vol_lookback_days=args.vol_lookback_days, fee_pct=jobs.fee_pct,
                                  slippage_pct=jobs.slippage_pct, every_hours=args.every_hours,
                                  trade_from_ms=parse_time(args.since, "--since"), progress=args.progress)
    elapsed = time.perf_counter() - started
    print_table(list(result.metrics.items()),
                (*SUMMARY_KEYS[:5], "opened", "trades", "fills", "rejected_by_risk", "fees"))
    print(f"{len(result.books)} options strategies, {result.close_ts.size} decision steps in {elapsed:.2f} s")
    print(f"ATM vol: {result.iv_source}")
    print_reasons(result, jobs.capital)
    if args.out:
        out = Path(args.out)
        for sid, run in result.books.items():
            equity = np.asarray(run.equity)
            trades = [{"ts": f.ts_event, "kind": f.kind, "instrument": f.instrument, "side": f.side,
                       "quantity": f.quantity, "price": f.price, "fee": f.fee, "pnl": f.realized_pnl,
                       "reason": f.extra.get("reason", "")} for f in run.fills]
            write_report(ReportData(f"{sid}: {run.strategy} on {run.venue.name} {underlying}", result.close_ts,
                                    result.spot, equity, run.book.initial_capital, result.metrics[sid], run.fills,
                                    trades, price_label=f"{underlying} spot"), out / sid)
        print(f"reports written to {out}")
    return 0


# --- walk-forward ----------------------------------------------------------------------------------------
def run_walkforward(args: argparse.Namespace) -> int:
    from backtest.walkforward import WalkForwardSpec, make_mapper, walk_forward

    grid = parse_json_object(args.grid, "--grid") or None
    bars = BarSource(args).bars(args.symbol, args.timeframe, args.pair_symbol)
    data, pair = bars.data, bars.pair
    spec = WalkForwardSpec(args.strategy, bars.symbol, bars.timeframe, args.train_bars, args.test_bars,
                           args.step_bars, grid, args.samples, args.seed_search, args.objective, args.capital,
                           0.1 if args.fee_pct is None else args.fee_pct,
                           0.0 if args.slippage_pct is None else args.slippage_pct)
    since = parse_time(args.since, "--since")
    if since is not None:
        data = window(data, since, None, bars.symbol)
        pair = None if pair is None else window(pair, since, None, args.pair_symbol or "pair")
    mapper = make_mapper(args.cluster, args.workers, args.progress)
    started = time.perf_counter()
    result = walk_forward(spec, data, pair, mapper)
    elapsed = time.perf_counter() - started
    rows = [(f"#{w['window']} {json.dumps(w['params'])}", w["test_metrics"]) for w in result.windows]
    print_table(rows, ("total_return_pct", "sharpe", "sortino", "max_drawdown_pct", "trades"))
    print(json.dumps(result.summary))
    print(f"{len(result.windows)} windows x {result.candidates} candidates in {elapsed:.2f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "walkforward.json").write_text(json.dumps({"summary": result.summary, "windows": result.windows},
                                                         indent=2, default=str) + "\n", encoding="utf-8")
        print(f"written {out / 'walkforward.json'}")
    return 0


# --- the parser ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backtest", description="Backtest go-trader strategies on the shared logic.")
    sub = parser.add_subparsers(dest="command", required=True)

    spot = sub.add_parser("spot", help="spot strategies over CSV or simulated bars")
    spot.add_argument("--strategy", help="registered strategy name, e.g. sma_crossover")
    spot.add_argument("--params", help='JSON object of parameters, e.g. \'{"fast": 10, "slow": 30}\'')
    spot.add_argument("--config", help="config file: backtest its entries with their params and risk limits")
    spot.add_argument("--id", help="with --config: the strategy id to backtest")
    spot.add_argument("--all", action="store_true", help="with --config: every spot strategy")
    _add_common(spot)
    spot.set_defaults(run=run_spot, capital=None)

    options = sub.add_parser("options", help="options strategies with BS premiums over the underlying's bars")
    options.add_argument("--underlying", choices=("BTC", "ETH"), help="default: the CSV's file name says it, else BTC")
    options.add_argument("--venue", nargs="+", default=["deribit", "ibkr"], choices=("deribit", "ibkr"))
    options.add_argument("--config", default=DEFAULT_CONFIG,
                         help="strategies, params, capital and limits as the services run them (default %(default)s)")
    options.add_argument("--max-positions", type=int, help="open option positions per strategy at most "
                                                            "(default: the config's)")
    options.add_argument("--min-score", type=float, help="score a new trade needs (default: the config's min_score)")
    options.add_argument("--iv-csv", help="DVOL CSV (columns timestamp_ms,dvol_close in percent, as download-data "
                                          "--dvol writes it) to decide on instead of realized vol")
    options.add_argument("--vol-lookback-days", type=float, default=30.0)
    options.add_argument("--every-hours", type=float, default=24.0, help="market hours between decisions")
    _add_common(options)
    # --capital overrides every strategy's configured capital; --fee-pct (% of each option leg's
    # premium) and --slippage-pct the config's.
    options.set_defaults(run=run_options)

    wf = sub.add_parser("walkforward", help="rolling train/test parameter optimisation")
    wf.add_argument("--strategy", required=True)
    wf.add_argument("--train-bars", type=int, required=True)
    wf.add_argument("--test-bars", type=int, required=True)
    wf.add_argument("--step-bars", type=int)
    wf.add_argument("--grid", help='JSON object of value lists, e.g. \'{"fast": [10, 20], "slow": [50, 100]}\'')
    wf.add_argument("--samples", type=int, help="random search: this many grid points")
    wf.add_argument("--seed-search", type=int, default=0, help="random search seed")
    wf.add_argument("--objective", choices=OBJECTIVES, default="sharpe")
    wf.add_argument("--cluster", help="ray://host:port or dask://host:port (needs the cluster extra)")
    wf.add_argument("--workers", type=int, help="local worker processes (default: CPU count)")
    _add_common(wf)
    wf.set_defaults(run=run_walkforward, capital=1000.0)
    return parser


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--symbol", help="e.g. BTC/USDT; default: the CSV's file name says it (BTC_USDT-1h.csv), "
                                    "BTC/USDT with --sim")
    p.add_argument("--pair-symbol", help="second leg of a pairs strategy, e.g. ETH/USDT")
    p.add_argument("--timeframe", choices=tuple(TIMEFRAME_MS),
                   help="default: the CSV's bar spacing (a contradicting value is refused), 1h with --sim")
    p.add_argument("--capital", type=float)
    p.add_argument("--fee-pct", type=float)
    p.add_argument("--slippage-pct", type=float)
    p.add_argument("--out", help="folder for metrics.json, trades.csv, report.png, report.html")
    p.add_argument("--progress", action="store_true", help="progress bars on long runs")
    _add_data_flags(p)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CliError, BacktestDataError, ValueError, FileNotFoundError, ClusterUnavailableError) as exc:
        print(f"backtest {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
