"""Walk-forward optimisation: choose parameters on a training window, judge them on the next,
unseen window, roll forward, repeat.

Each window's candidates are scored with the same ``run_spot_backtest`` the CLI runs, by the
chosen objective (Sharpe, Sortino or return / max drawdown); the best one is then run on the
test window with the training bars as indicator warm-up only (``trade_from_ms``), so test
results are out of sample. Evaluations run in local processes by default; ``cluster`` takes
``ray://host:port`` or ``dask://host:port`` and runs the very same function there (the
``cluster`` pip extra; neither library is a default dependency).
"""
from __future__ import annotations

import itertools
import math
import os
import random
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from backtest.metrics import OBJECTIVES, objective_value
from backtest.spot import run_spot_backtest
from common.ohlcv import OHLCV
from strategies.params import get_params
from trading.risk import RiskLimits

Task = tuple[Any, ...]
Mapper = Callable[[Callable[[Task], Any], list[Task]], list[Any]]
CLUSTER_EXTRA = 'pip install "go-trader[cluster]"'
DASK_CONNECT_SECONDS = 30


class ClusterUnavailableError(RuntimeError):
    """A cluster address was given but its client library is not installed or not reachable."""


@dataclass(frozen=True)
class WalkForwardSpec:
    """One sweep: which strategy, how windows roll, what is searched and how it is judged."""

    strategy: str
    symbol: str
    timeframe: str
    train_bars: int
    test_bars: int
    step_bars: int | None = None  # default: test_bars (test windows tile the data)
    grid: Mapping[str, Sequence[Any]] | None = None  # default: default_grid(strategy)
    random_samples: int | None = None  # None: the whole grid; N: N random grid points
    seed: int = 0
    objective: str = "sharpe"
    capital: float = 1000.0
    fee_pct: float = 0.1
    slippage_pct: float = 0.0
    limits: RiskLimits = field(default_factory=RiskLimits)

    def __post_init__(self) -> None:
        for name in ("train_bars", "test_bars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"walk-forward {name}: must be an integer >= 2, got {value!r}")
        if self.step_bars is not None and (isinstance(self.step_bars, bool) or not isinstance(self.step_bars, int)
                                           or self.step_bars < 1):
            raise ValueError(f"walk-forward step_bars: must be an integer >= 1, got {self.step_bars!r}")
        if self.random_samples is not None and (isinstance(self.random_samples, bool)
                                                or not isinstance(self.random_samples, int) or self.random_samples < 1):
            raise ValueError(f"walk-forward random_samples: must be an integer >= 1, got {self.random_samples!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"walk-forward objective: must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        get_params(self.strategy)


def default_grid(strategy: str) -> dict[str, list[Any]]:
    """Half, one and two times each default, kept inside the parameter's bounds."""
    spec = get_params(strategy)
    grid: dict[str, list[Any]] = {}
    for name, default in spec.defaults.items():
        low, high = spec.bounds[name]
        values = []
        for factor in (0.5, 1.0, 2.0):
            value = max(round(default * factor), 1) if isinstance(default, int) else default * factor
            if low <= value <= high and value not in values:
                values.append(value)
        grid[name] = values
    return grid


def parameter_candidates(strategy: str, grid: Mapping[str, Sequence[Any]] | None = None,
                         random_samples: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Every valid grid point (combinations a strategy's rules refuse, like fast >= slow, are
    dropped), or ``random_samples`` of them drawn with ``seed``."""
    spec = get_params(strategy)
    grid = dict(default_grid(strategy) if grid is None else grid)
    unknown = sorted(set(grid) - set(spec.defaults))
    if unknown:
        raise ValueError(f"{strategy}: grid has unknown parameter(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(spec.defaults)}")
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{strategy}: grid.{name} must be a non-empty list of values, got {values!r}")
    names = list(grid)
    candidates = []
    for combo in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, combo))
        try:
            candidates.append(spec.resolve(params))
        except ValueError:
            continue
    if not candidates:
        raise ValueError(f"{strategy}: no valid parameter combination in the grid {grid}")
    if random_samples is not None and random_samples < len(candidates):
        candidates = random.Random(seed).sample(candidates, random_samples)
    return candidates


def rolling_windows(n_bars: int, train_bars: int, test_bars: int,
                    step_bars: int | None = None) -> list[tuple[int, int, int]]:
    """(train_start, test_start, test_end) bar indexes; every test window is full length."""
    step = step_bars or test_bars
    if n_bars < train_bars + test_bars:
        raise ValueError(f"walk-forward: {n_bars} bars are fewer than train_bars + test_bars = "
                         f"{train_bars + test_bars}")
    return [(start, start + train_bars, start + train_bars + test_bars)
            for start in range(0, n_bars - train_bars - test_bars + 1, step)]


# --- the unit of work, importable by any worker ----------------------------------------------------
def evaluate(task: Task) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """Backtest a chunk of candidates on one slice: ``(tag, spec, data, pair, trade_from_ms,
    [(index, params), ...])`` -> ``[(index, params, metrics), ...]``."""
    _tag, spec, data, pair, trade_from_ms, chunk = task
    out = []
    for index, params in chunk:
        result = run_spot_backtest(f"wf-{spec.strategy}", spec.strategy, spec.symbol, spec.timeframe, data, params,
                                   pair, spec.capital, spec.fee_pct, spec.slippage_pct, spec.limits, trade_from_ms)
        out.append((index, params, result.metrics))
    return out


# --- where the work runs -----------------------------------------------------------------------------
def local_mapper(workers: int | None = None, progress: bool = False) -> Mapper:
    """A process pool on this machine (``workers`` default: the CPU count)."""
    def run(fn: Callable[[Task], Any], tasks: list[Task]) -> list[Any]:
        count = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
        if count == 1:
            return [fn(t) for t in _progress(tasks, progress, len(tasks))]
        results: list[Any] = [None] * len(tasks)
        with ProcessPoolExecutor(max_workers=count) as pool:
            futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
            for future in _progress(as_completed(futures), progress, len(tasks)):
                results[futures[future]] = future.result()
        return results
    return run


def _progress(items: Any, enabled: bool, total: int) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc="walk-forward", unit="task")


def _ray_mapper(address: str) -> Mapper:
    try:
        import ray
    except ImportError:
        raise ClusterUnavailableError(
            f"--cluster {address}: ray is not installed; install the optional extra: {CLUSTER_EXTRA}") from None

    def run(fn: Callable[[Task], Any], tasks: list[Task]) -> list[Any]:
        try:
            context = ray.init(address=address, logging_level="WARNING")
        except ConnectionError as exc:  # ray's client gives up after its own retries
            ray.shutdown()  # no half-made client left behind for the next attempt
            raise ClusterUnavailableError(
                f"--cluster {address}: no ray client server answered there ({exc}); start one with "
                f"`ray start --head --ray-client-server-port PORT`") from None
        with context:  # disconnected with the sweep, not left open
            remote = ray.remote(fn)
            return list(ray.get([remote.remote(t) for t in tasks]))
    return run


def _dask_mapper(address: str) -> Mapper:
    try:
        from dask.distributed import Client
    except ImportError:
        raise ClusterUnavailableError(
            f"--cluster {address}: dask.distributed is not installed; install it with "
            f'pip install "dask[distributed]" (or the optional extra: {CLUSTER_EXTRA})') from None
    scheduler = address.replace("dask://", "tcp://", 1)

    def run(fn: Callable[[Task], Any], tasks: list[Task]) -> list[Any]:
        try:
            client = Client(scheduler, timeout=DASK_CONNECT_SECONDS)
        except OSError as exc:  # TimeoutError included: no scheduler there
            raise ClusterUnavailableError(
                f"--cluster {address}: no dask scheduler answered at {scheduler} ({exc}); start one with "
                f"`dask scheduler`") from None
        with client:  # closed with the sweep, not leaked
            return list(client.gather(client.map(fn, tasks, pure=False)))
    return run


def make_mapper(cluster: str | None = None, workers: int | None = None, progress: bool = False) -> Mapper:
    """Local processes when ``cluster`` is None or 'local'; ray or dask for their addresses."""
    if cluster is None or cluster == "local":
        return local_mapper(workers, progress)
    if cluster.startswith("ray://"):
        return _ray_mapper(cluster)
    if cluster.startswith("dask://"):
        return _dask_mapper(cluster)
    raise ValueError(f"--cluster: expected ray://host:port, dask://host:port or local, got {cluster!r}")


# --- the sweep -------------------------------------------------------------------------------------
@dataclass
class WalkForwardResult:
    spec: WalkForwardSpec
    candidates: int
    windows: list[dict[str, Any]]
    summary: dict[str, Any]


def _chunks(items: list[Any], count: int) -> list[list[Any]]:
    size = max(1, math.ceil(len(items) / count))
    return [items[i:i + size] for i in range(0, len(items), size)]


def walk_forward(spec: WalkForwardSpec, data: OHLCV, pair: OHLCV | None = None,
                 mapper: Mapper | None = None, chunks_per_window: int = 4) -> WalkForwardResult:
    """Optimise on each training window, then test the winner on the window after it."""
    mapper = mapper or local_mapper()
    candidates = list(enumerate(parameter_candidates(spec.strategy, spec.grid, spec.random_samples, spec.seed)))
    windows = rolling_windows(len(data), spec.train_bars, spec.test_bars, spec.step_bars)

    def legs(lo: int, hi: int) -> tuple[OHLCV, OHLCV | None]:
        return data.slice(lo, hi), None if pair is None else pair.slice(lo, hi)

    train_tasks = []
    for w, (train_start, test_start, _) in enumerate(windows):
        train_data, train_pair = legs(train_start, test_start)
        for chunk in _chunks(candidates, chunks_per_window):
            train_tasks.append((w, spec, train_data, train_pair, None, chunk))
    best: dict[int, tuple[float, int, dict[str, Any], dict[str, Any]]] = {}
    for task, scored in zip(train_tasks, mapper(evaluate, train_tasks)):
        w = task[0]
        for index, params, metrics in scored:
            key = (objective_value(metrics, spec.objective), -index)
            if w not in best or key > (best[w][0], -best[w][1]):
                best[w] = (key[0], index, params, metrics)

    test_tasks = []
    for w, (train_start, test_start, test_end) in enumerate(windows):
        window_data, window_pair = legs(train_start, test_end)
        _, index, params, _ = best[w]
        test_tasks.append((w, spec, window_data, window_pair, int(data.ts[test_start]), [(index, params)]))
    reports = []
    growth = 1.0
    for task, scored in zip(test_tasks, mapper(evaluate, test_tasks)):
        w = task[0]
        train_start, test_start, test_end = windows[w]
        train_score, _, params, train_metrics = best[w]
        test_metrics = scored[0][2]
        growth *= 1.0 + test_metrics["total_return_pct"] / 100.0
        reports.append({
            "window": w,
            "train_start_ts": int(data.ts[train_start]),
            "test_start_ts": int(data.ts[test_start]),
            "test_end_ts": int(data.ts[test_end - 1]),
            "params": params,
            "train_objective": None if math.isinf(train_score) else train_score,
            "train_metrics": train_metrics,
            "test_metrics": test_metrics,
        })
    test_objectives = [objective_value(r["test_metrics"], spec.objective) for r in reports]
    finite = [v for v in test_objectives if math.isfinite(v)]
    summary = {
        "objective": spec.objective,
        "windows": len(reports),
        "candidates": len(candidates),
        "oos_compounded_return_pct": (growth - 1.0) * 100.0,
        "oos_mean_objective": sum(finite) / len(finite) if finite else None,
        "oos_profitable_windows": sum(r["test_metrics"]["total_return_pct"] > 0 for r in reports),
    }
    return WalkForwardResult(spec, len(candidates), reports, summary)
