"""Walk-forward: windows roll as promised, the winner is judged out of sample, the sweep runs
in local processes and on real local dask and ray clusters with the same results, and a cluster
address without its library, or with nothing answering there, says what to do."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

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
from bench.ports import free_port


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


def test_a_cluster_address_with_nothing_answering_says_so(monkeypatch):
    import ray

    def refuse(**_kwargs):
        raise ConnectionError("ray client connection timeout")
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ClusterUnavailableError, match=r"ray://127\.0\.0\.1:9: no ray client server answered"):
        make_mapper("ray://127.0.0.1:9")(len, [(1,)])
    port = free_port()  # nobody listens there
    with pytest.raises(ClusterUnavailableError, match=rf"no dask scheduler answered at tcp://127\.0\.0\.1:{port}"):
        monkeypatch.setattr("backtest.walkforward.DASK_CONNECT_SECONDS", 1)
        make_mapper(f"dask://127.0.0.1:{port}")(len, [(1,)])


def _sweep_spec() -> WalkForwardSpec:
    return WalkForwardSpec("sma_crossover", "BTC/USDT", "1h", train_bars=2000, test_bars=1000,
                           grid={"fast": [10, 20], "slow": [50, 100]}, objective="sharpe")


def test_sweep_on_a_local_dask_cluster_equals_the_local_process_pool(btc_1h):
    """Two dask worker processes behind a real scheduler on loopback, reached through --cluster's
    address form: the same windows, winners and out-of-sample metrics as the process pool."""
    from distributed import LocalCluster

    data = btc_1h.slice(20000, 24000)
    spec = _sweep_spec()
    local = walk_forward(spec, data, mapper=local_mapper(workers=2))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://", 1)
        remote = walk_forward(spec, data, mapper=make_mapper(address))
        workers = len(cluster.scheduler_info["workers"])
    assert workers == 2
    assert remote.windows == local.windows
    assert remote.summary == local.summary


RAY_START_SECONDS = 120  # a head's first start on a loaded 2-core machine


def _wait_until_started(port: int, proc: subprocess.Popen[bytes], temp: Path) -> None:
    """Until ``ray start`` says the runtime started (every head process up, not just the client
    port open: a client that came earlier found no server to start for it) and the port answers."""
    log = temp / "head.log"
    deadline = time.monotonic() + RAY_START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ray head exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if "Ray runtime started" in log.read_text(errors="replace"):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"ray head not up on {port} in {RAY_START_SECONDS} s: {log.read_text()[-2000:]}")


def ray_client_logs(temp: Path) -> str:
    """The tails of the head's client-server logs, for a failure's message."""
    logs = sorted((temp / "session_latest" / "logs").glob("ray_client_server*"))
    return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-1500:]}" for f in logs)


def _stop_session(proc: subprocess.Popen[bytes], marker: str) -> None:
    """The head's process group, then any ray process of this session that left it (by the
    temp dir in its command line): by PID, never by name."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (pid_dir / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(pid_dir.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


@pytest.fixture
def ray_head() -> Iterator[tuple[str, Path]]:
    """``ray start --head`` on loopback ports, its own temp dir and process group: the command
    the README gives a user. Its workers import this checkout (PYTHONPATH, absolute)."""
    root = Path(__file__).resolve().parents[2]
    temp = tempfile.mkdtemp(prefix="gt-ray-", dir="/tmp")  # ray's socket paths must stay short
    client_port = free_port()
    log = Path(temp) / "head.log"
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--disable-usage-stats",
           "--node-ip-address", "127.0.0.1", "--port", str(free_port()),
           "--ray-client-server-port", str(client_port), "--dashboard-agent-listen-port", str(free_port()),
           "--include-dashboard", "false", "--num-cpus", "2", "--temp-dir", temp]
    env = {**os.environ, "PYTHONPATH": str(root), "RAY_USAGE_STATS_ENABLED": "0"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_until_started(client_port, proc, Path(temp))
        yield f"ray://127.0.0.1:{client_port}", Path(temp)
    finally:
        _stop_session(proc, temp)
        shutil.rmtree(temp, ignore_errors=True)


# How ray's client proxy reports that the per-client server it forked died at once: a known
# ray bug (ray-project/ray#63202, a gRPC poller race in the proxier's fork), seen here as either.
RAY_SERVER_DIED = ("Starting Ray client server failed", "psutil.ZombieProcess")


def ray_server_died(error: Exception) -> bool:
    return any(sign in str(error) for sign in RAY_SERVER_DIED)


def test_sweep_on_a_local_ray_head_equals_the_local_process_pool(btc_1h, ray_head):
    """A real ray head (two CPUs) reached through --cluster's ray:// address: the same windows,
    winners and out-of-sample metrics as the process pool; the client disconnects afterwards."""
    import ray

    address, temp = ray_head
    data = btc_1h.slice(20000, 24000)
    spec = _sweep_spec()
    local = walk_forward(spec, data, mapper=local_mapper(workers=2))
    try:
        remote = walk_forward(spec, data, mapper=make_mapper(address))
    except ClusterUnavailableError as first:
        # A just-started head's client proxy has once failed to start the server of its first
        # client (CI, 2026-12-02, the logs were lost); a second client must then succeed.
        try:
            remote = walk_forward(spec, data, mapper=make_mapper(address))
        except ClusterUnavailableError as exc:
            if ray_server_died(first) and ray_server_died(exc):
                # Ray's proxy lost its per-client server twice (2 of 5 CI runs, and a local run
                # with the server a zombie, on 2026-12-02; that server's own logs stay empty):
                # ray's bug, not the sweep's.
                pytest.skip(f"ray's client proxy could not start a client server here: {exc}\n{ray_client_logs(temp)}")
            raise AssertionError(f"{first}\nthen: {exc}\n{ray_client_logs(temp)}") from None
    assert not ray.is_initialized()
    assert remote.windows == local.windows
    assert remote.summary == local.summary
    assert len(remote.windows) == 2 and remote.candidates == 4
