"""Walk-forward: windows roll as promised, the winner is judged out of sample, the sweep runs
in local processes, and a cluster address without its library says which extra to install."""
from __future__ import annotations

import logging
import sys

import pytest

from backtest.metrics import objective_value
from backtest.spot import run_spot_backtest
from backtest.walkforward import (
    CLUSTER_EXTRA,
    ClusterUnavailableError,
    WalkForwardSpec,
    default_grid,
    local_mapper,
    make_mapper,
    parameter_candidates,
    rolling_windows,
    walk_forward,
)


def test_rolling_windows_tile_the_data():
    assert rolling_windows(100, 40, 20) == [(0, 40, 60), (20, 60, 80), (40, 80, 100)]
    assert rolling_windows(100, 40, 20, step_bars=30) == [(0, 40, 60), (30, 70, 90)]
    with pytest.raises(ValueError, match="fewer than"):
        rolling_windows(50, 40, 20)


def test_candidates_drop_combinations_the_strategy_refuses():
    got = parameter_candidates("sma_crossover", {"fast": [10, 50], "slow": [20, 50]})
    assert got == [{"fast": 10, "slow": 20}, {"fast": 10, "slow": 50}]
    assert default_grid("sma_crossover") == {"fast": [10, 20, 40], "slow": [25, 50, 100]}
    sampled = parameter_candidates("sma_crossover", None, random_samples=3, seed=1)
    assert len(sampled) == 3 and all(p["fast"] < p["slow"] for p in sampled)
    assert sampled == parameter_candidates("sma_crossover", None, random_samples=3, seed=1)


@pytest.mark.parametrize("grid, message", [
    ({"period": [5]}, "unknown parameter"),
    ({"fast": []}, "non-empty list"),
    ({"fast": [60], "slow": [50]}, "no valid parameter combination"),
])
def test_bad_grids(grid, message):
    with pytest.raises(ValueError, match=message):
        parameter_candidates("sma_crossover", grid)


def test_bad_spec():
    with pytest.raises(ValueError, match="objective"):
        WalkForwardSpec("sma_crossover", "BTC/USDT", "1h", 100, 50, objective="profit")
    with pytest.raises(ValueError, match="train_bars"):
        WalkForwardSpec("sma_crossover", "BTC/USDT", "1h", 1, 50)


def test_sweep_in_local_processes_picks_the_train_best_and_tests_out_of_sample(btc_1h):
    data = btc_1h.slice(20000, 26000)
    grid = {"fast": [10, 20], "slow": [50, 100]}
    spec = WalkForwardSpec("sma_crossover", "BTC/USDT", "1h", train_bars=2000, test_bars=1000, grid=grid,
                           objective="sortino")
    result = walk_forward(spec, data, mapper=local_mapper(workers=2))
    assert [w["window"] for w in result.windows] == [0, 1, 2, 3]
    for w, (train_start, test_start, test_end) in zip(result.windows, rolling_windows(6000, 2000, 1000)):
        train = data.slice(train_start, test_start)
        scores = {tuple(p.values()): objective_value(
            run_spot_backtest("c", "sma_crossover", "BTC/USDT", "1h", train, p).metrics, "sortino")
            for p in parameter_candidates("sma_crossover", grid)}
        assert w["train_objective"] == pytest.approx(max(scores.values()))
        assert scores[tuple(w["params"].values())] == max(scores.values())
        oos = run_spot_backtest("c", "sma_crossover", "BTC/USDT", "1h", data.slice(train_start, test_end),
                                w["params"], trade_from_ms=int(data.ts[test_start]))
        assert w["test_metrics"] == oos.metrics
        assert w["test_metrics"]["bars"] == 1000
    growth = 1.0
    for w in result.windows:
        growth *= 1 + w["test_metrics"]["total_return_pct"] / 100
    assert result.summary["oos_compounded_return_pct"] == pytest.approx((growth - 1) * 100)


def test_cluster_selection():
    assert callable(make_mapper(None)) and callable(make_mapper("local"))
    with pytest.raises(ValueError, match="ray://host:port"):
        make_mapper("spark://x:1")


@pytest.mark.parametrize("address, library", [("ray://10.0.0.5:10001", "ray"), ("dask://10.0.0.5:8786", "dask")])
def test_cluster_address_without_its_library_names_the_extra(monkeypatch, address, library):
    for name in ("ray", "dask", "dask.distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: import raises ImportError
    with pytest.raises(ClusterUnavailableError) as err:
        make_mapper(address)
    assert CLUSTER_EXTRA in str(err.value) and library in str(err.value)


def test_sweep_on_a_local_dask_cluster_equals_the_local_process_pool(btc_1h):
    """Two dask worker processes behind a real scheduler on loopback, reached through --cluster's
    address form: the same windows, winners and out-of-sample metrics as the process pool."""
    from distributed import LocalCluster

    data = btc_1h.slice(20000, 24000)
    spec = WalkForwardSpec("sma_crossover", "BTC/USDT", "1h", train_bars=2000, test_bars=1000,
                           grid={"fast": [10, 20], "slow": [50, 100]}, objective="sharpe")
    local = walk_forward(spec, data, mapper=local_mapper(workers=2))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://", 1)
        remote = walk_forward(spec, data, mapper=make_mapper(address))
        workers = len(cluster.scheduler_info["workers"])
    assert workers == 2
    assert remote.windows == local.windows
    assert remote.summary == local.summary
