"""Every benchmark still runs: quick modes complete and return the numbers RESULTS.md shows.

One stack serves the stack benchmarks (latency before cycle: the cycle benchmark stops the
stack's signal engine while it stands in for it, and starts it again after).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import bench_bus, bench_cycle, bench_gateway, bench_latency, bench_memory, bench_scale, run_all
from tests.support.stack import Stack, stack_config


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with Stack(tmp_path_factory.mktemp("bench-stack"), stack_config(speed=36_000)) as running:
        yield running


def test_bus_quick_moves_every_message_and_measures_a_burst_at_the_default_hwm() -> None:
    r = bench_bus.run(quick=True)
    for variant in bench_bus.VARIANTS:
        assert r[f"{variant}_msgs_per_s"] > 100 and r[f"{variant}_lost"] == 0, variant
    assert r["burst_loss_our_hwm"] == 0
    # How much the default HWM drops depends on how fast this machine's receiver drains a
    # burst (a fast one loses nothing); it is a reference figure, not a property of our bus.
    assert 0 <= r["burst_loss_default_hwm"] < 1
    assert r["ours_vs_msgpack"] > 0 and r["decode_envelope_us"] > 0 and r["msgpack_unpackb_us"] > 0
    # the speed ratio's verdict depends on the machine's load; the loss verdicts must pass
    assert [row[3] for row in bench_bus.report(r) if row[0].startswith(("lost", "burst"))] == ["PASS", "PASS", ""]


def test_latency_quick_measures_acks_from_their_bars_close(stack: Stack) -> None:
    r = bench_latency.run(quick=True, stack=stack)
    [run] = r["runs"]
    assert run["speed"] == 36_000 and 0 < run["fills"] <= bench_latency.QUICK_FILLS + 5
    for span in bench_latency.SPANS:
        assert math.isfinite(run[span]["p99"]) and run[span]["p50"] <= run[span]["p99"] <= run[span]["max"]
    # the total is its parts on the machine's one clock: close -> orders sent -> answered
    assert 0 <= run["close_to_sent"]["p50"] and 0 < run["sent_to_ack"]["p50"]
    assert run["close_to_ack"]["max"] >= max(run["close_to_sent"]["max"], run["sent_to_ack"]["max"])
    assert run["close_to_bar"]["p50"] >= 0
    assert run["bars"] > 0 and math.isfinite(run["bar_lateness"]["p99"]) and math.isfinite(run["bar_sent"]["p99"])
    # a close's orders are answered together: per close, its last ack is the latest of them
    assert 0 < run["closes_with_fills"] <= run["fills"] and run["fills_per_close"]["max"] >= 1
    assert run["by_load"]["light_fills"] <= run["by_load"]["heavy_fills"] <= run["fills_per_close"]["max"]
    assert run["close_to_last_ack"]["max"] == run["close_to_ack"]["max"]
    assert 0 < run["floor_bare_path"]["p50"] <= run["floor_bare_path"]["p99"]  # the design's own floor, measured
    # the portfolio's heartbeats were heard (a count that only grows) unless the tap was too short for two
    assert run["ahead_of_tick"] is None or run["ahead_of_tick"] >= 0
    assert len(bench_latency.report(r)) == 22


def test_memory_quick_samples_every_service(stack: Stack) -> None:
    r = bench_memory.run(quick=True, stack=stack)
    for name in bench_memory.SERVICES:
        assert 5 < r[name]["rss_mb"] < 1_000
        assert "zmq" in r[name]["native_libs"]
        assert r[name]["import"]["rss_mb"] > 5
    assert r["total"]["rss_mb"] == pytest.approx(sum(r[n]["rss_mb"] for n in bench_memory.SERVICES), rel=0.05)
    assert r["restarted"] == []
    assert r["total"]["with_supervisord_pss_mb"] > r["total"]["pss_mb"] > 0
    assert any("whole stack" in row[0] for row in bench_memory.report(r))


def test_memory_exec_vs_fork_row_gives_both_totals_and_their_ratio() -> None:
    row = bench_memory._exec_vs_fork_row({"exec": {"services_pss_mb": 140.0, "with_supervisord_pss_mb": 160.0},
                                           "fork": {"services_pss_mb": 110.0, "with_supervisord_pss_mb": 124.0}})
    assert row[1] == "exec 140.0 / 160.0 MB, fork 110.0 / 124.0 MB (0.78x)"


def test_memory_floor_with_supervisord_adds_plain_supervisords_own_pss() -> None:
    runs = {"exec": {"services_pss_mb": 140.0, "with_supervisord_pss_mb": 156.5},
            "fork": {"services_pss_mb": 110.0, "with_supervisord_pss_mb": 124.0}}
    assert bench_memory._with_supervisord_row(139.5, runs)[2:] == ("<= 123 MB + plain supervisord's 16.5 MB", "PASS")
    assert bench_memory._with_supervisord_row(139.6, runs)[3] == "FAIL"
    assert bench_memory._with_supervisord_row(139.6, {})[2:] == ("", "")  # a quick run has no comparison


def test_memory_window_flag_reads_seconds_and_refuses_a_bad_one() -> None:
    assert bench_memory._window(["bench_memory"]) is None
    assert bench_memory._window(["bench_memory", "--seconds", "90"]) == 90.0
    assert bench_memory._window(["bench_memory", "--seconds", "2.5", "--quick"]) == 2.5
    for bad in (["--seconds"], ["--seconds", "0"], ["--seconds", "-5"], ["--seconds", "soon"]):
        with pytest.raises(SystemExit, match="--seconds needs a positive number"):
            bench_memory._window(["bench_memory", *bad])


def test_cycle_quick_seed_children_decide_exactly_as_the_engine(stack: Stack) -> None:
    r = bench_cycle.run(quick=True, stack=stack)  # raises if a child decided differently
    assert r["strategies_scheduled"] == 34 and r["spot_strategies"] == 14
    assert r["seed_processes_run"] == 2 and r["seed_extrapolated"]
    assert 0 < r["service_cycle_s"] < r["seed_sequential_cycle_s"]
    assert r["speedup_vs_sequential"] == pytest.approx(r["seed_sequential_cycle_s"] / r["service_cycle_s"])
    assert 0 <= r["cycles_asking_pricer"] <= r["service_cycles"]  # the engine took the published chains
    stack.wait_running()  # its signals program is back


def test_gateway_quick_answers_a_person_among_slow_and_many_clients(stack: Stack) -> None:
    stack.wait_running()
    r = bench_gateway.run(quick=True, stack=stack)
    slow = r["slow"]
    assert slow["connects"] >= bench_gateway.QUICK["slow_clients"] and slow["probes_held"] > 0
    assert slow["probe_held_max_ms"] < bench_gateway.PROBE_TARGET_MS and slow["probes_after"] > 0
    for phase in ("many", "keepalive /status", "keepalive /metrics"):
        assert r[phase]["requests"] > 0 and sum(r[phase]["failures"].values()) == 0, phase
    assert 10 < r["rss_idle_mb"] < 200 and not r["gateway_restarted"]
    assert 0 < r["uss_idle_mb"] < r["pss_idle_mb"] < r["rss_idle_mb"]
    assert len(bench_gateway.report(r)) == 11


def test_scale_quick_runs_engine_processes_against_a_real_portfolio() -> None:
    r = bench_scale.run(quick=True)
    by_count = r["sizes"]["34"]
    assert by_count["1"]["strategies_per_engine"] == {"e0": 34}
    assert sum(by_count["2"]["strategies_per_engine"].values()) == 34
    assert all(0 < by_count[e]["cycle_s"] <= by_count[e]["cycle_max_s"] for e in ("1", "2"))
    assert by_count["journaled_fills"] > 0  # real acks: the portfolio journaled the orders
    assert len(bench_scale.report(r)) == 2


def test_scaled_config_spreads_spot_replicas_over_the_symbols() -> None:
    from config.settings import parse_config

    raw = bench_scale.scaled_config(100)
    ids = [s["id"] for s in raw["strategies"]]
    assert len(ids) == len(set(ids)) == 100 and ids[34] == "momentum-btc-r1"
    assert raw["strategies"][34]["symbol"] == "S014/USDT"  # spot strategy 0, replica 1: symbol 0 + 14
    split = parse_config(bench_scale.with_engines(raw, 4, list(range(7000, 7008))))
    assert sorted(sid for e in split.engines for sid in e.strategy_ids) == sorted(ids)


def test_run_all_reports_a_failing_benchmark_and_still_renders(tmp_path: Path) -> None:
    crashed = {"status": "error", "error": "exit 1:\nBoom", "seconds": 0.5}
    ran = {"status": "ok", "seconds": 2.0, "quick_mode": True, "result": {"a": 1.5},
           "rows": [["x", "1", ">= 1", "PASS"], ["y", "0", ">= 1", "FAIL"]]}
    text = run_all.render({"bench_one": crashed, "bench_two": ran}, quick=True, started=run_all.datetime(2026, 1, 1))
    assert "| [bench_one](#bench_one) | ERROR | 0 |" in text
    assert "| [bench_two](#bench_two) | 1 PASS, 1 FAIL | 2 |" in text
    assert "Boom" in text and "nproc" in text


def test_run_all_rejects_an_unknown_benchmark_name() -> None:
    with pytest.raises(SystemExit):
        run_all.main(["--only", "bench_nonesuch"])
