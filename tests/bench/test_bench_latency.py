"""bench.bench_latency: the machine's floor it reports beside the running stack, and the rows
of its runs under other cpu settings."""
from __future__ import annotations

import time

from bench.bare_path import WARMUP_CLOSES
from bench.bench_latency import PACED_SPACING_S, SPANS, TARGET_P99_MS, TARGET_SPEED, by_load, machine_floor, report


def test_the_machine_floor_times_each_probe_and_removes_its_files(tmp_path):
    floor = machine_floor(tmp_path, samples=5)
    assert {name: len(values) for name, values in floor.items()} == \
        {"floor_fsync": 5, "floor_wake": 5, "floor_bare_path": 5}
    assert all(ms > 0 for ms in floor["floor_fsync"])  # each append was fsynced, which takes time
    assert all(ms >= 0 for ms in floor["floor_wake"])  # a sleep never ends before its deadline
    assert list(tmp_path.iterdir()) == []


def test_the_machine_floor_keeps_its_pace(tmp_path):
    """Paced 50 ms apart, five probes of each kind take at least the gaps between them: four
    between the appends, and the bare path's warm-up closes and four more."""
    started = time.monotonic()
    floor = machine_floor(tmp_path, samples=5, spacing_s=0.05)
    took = time.monotonic() - started
    assert {name: len(values) for name, values in floor.items()} == \
        {"floor_fsync": 5, "floor_wake": 5, "floor_bare_path": 5}
    assert took >= 4 * 0.05 + (WARMUP_CLOSES + 4) * 0.05


def _run(variant: dict, p50: float, p90: float, p99: float) -> dict:
    """A measured run as ``measure`` returns it: every span the same but close -> ack."""
    spread = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0}
    floors = [f"floor_{probe}{suffix}" for probe in ("fsync", "wake", "bare_path") for suffix in ("", "_paced")]
    run = {name: dict(spread) for name in (*SPANS, "close_to_last_ack", "bar_lateness", "bar_sent", *floors,
                                           "fills_per_close")}
    run["floor_bare_path_paced"] = {"p50": 2.0, "p90": 3.0, "p99": 5.0, "max": 6.0}
    run["close_to_ack"] = {"p50": p50, "p90": p90, "p99": p99, "max": p99}
    run["by_load"] = by_load([[p50] * 2, [p50] * 2, [p99] * 20])
    return {**run, "speed": TARGET_SPEED, "variant": variant, "fills": 1000, "closes_with_fills": 120, "bars": 380,
            "seconds": 120.0, "load_before": 0.1, "load_after": 0.2, "stolen_pct": 0.0, "seq_gaps": 0}


def test_the_target_is_judged_on_the_default_and_each_compared_default_against_its_run_without():
    rows = report({"runs": [_run({}, 4.0, 4.5, 6.0), _run({"cpu.background_idle": True}, 3.0, 3.5, 4.0),
                            _run({"cpu.split_cores": False}, 5.0, 6.0, 12.0),
                            _run({"bus.local_ipc": False}, 4.0, 5.0, 8.0)], "min_fills": 1000, "paced_samples": 100})
    judged = [row for row in rows if row[2] == f"p99 < {TARGET_P99_MS:g} ms"]
    assert [(row[0].split(":")[0], row[3]) for row in judged] == [("3,600x", "FAIL")]  # 6.0 ms, the default's
    assert any(row[0].startswith("3,600x, cpu.background_idle on: bar close -> fill ack") for row in rows)
    assert any(row[0].startswith("3,600x, cpu.split_cores off: bar close -> fill ack") for row in rows)
    assert any(row[0].startswith("3,600x, bus.local_ipc off: bar close -> fill ack") for row in rows)
    assert rows[-2:] == [("3,600x: close -> ack, cpu.split_cores on (the default) over off: p50 / p90 / p99",
                          "0.80x / 0.75x / 0.50x", "", ""),
                         ("3,600x: close -> ack, bus.local_ipc on (the default) over off: p50 / p90 / p99",
                          "1.00x / 0.90x / 0.75x", "", "")]


def test_without_a_run_with_a_default_off_there_is_no_comparison():
    rows = report({"runs": [_run({}, 4.0, 4.5, 4.9)], "min_fills": 1000, "paced_samples": 100})
    assert not any("over off" in row[0] for row in rows)
    assert [row[3] for row in rows if row[2] == f"p99 < {TARGET_P99_MS:g} ms"] == ["PASS"]


def test_by_load_sets_the_lightest_half_against_the_heaviest_tenth():
    # 20 closes: ten of 1 fill at 3 ms, eight of 5 fills at 4 ms, and two of 20 fills at 6 and 7 ms
    closes = [[3.0]] * 10 + [[4.0] * 5] * 8 + [[6.0] * 20, [7.0] * 20]
    load = by_load(closes)
    assert load["light_fills"] == 1 and load["light_p50"] == 3.0  # the ten 1-fill closes
    assert load["heavy_fills"] == 20 and load["heavy_p50"] == 6.5  # the two 20-fill closes
    assert load["heavy_share_pct"] == 100.0 * 40 / (10 + 40 + 40)


def test_by_load_of_one_close_and_of_none():
    assert by_load([[2.0, 2.0]]) == {"light_fills": 2.0, "light_p50": 2.0, "heavy_fills": 2.0, "heavy_p50": 2.0,
                                     "heavy_share_pct": 100.0}
    empty = by_load([])
    assert empty["light_fills"] == 0 and empty["heavy_fills"] == 0


def test_the_load_row_names_both_ends():
    rows = report({"runs": [_run({}, 4.0, 4.5, 6.0)], "min_fills": 1000, "paced_samples": 100})
    load_row = next(row for row in rows if "by load" in row[0])
    assert "up to 2 fills" in load_row[0] and "from 20 fills, 83% of the fills" in load_row[0]
    assert load_row[1] == "4.00 / 6.00 ms"


def test_the_floor_is_reported_hot_and_at_the_stacks_pace():
    rows = report({"runs": [_run({}, 4.0, 4.5, 6.0)], "min_fills": 1000, "paced_samples": 100})
    floors = [row for row in rows if "floor" in row[0] or "over the bare path" in row[0]]
    paced = f"one every {PACED_SPACING_S * 1000:g} ms"
    assert [row[0].rsplit("; ", 1)[-1].split("(")[-1] for row in floors] == \
        ["one every 10 ms, 300)", "one every 10 ms, 300)", "closes one every 10 ms, 300)",
         "closes one every 10 ms), p50 / p99",
         f"{paced}, 100)", f"{paced}, 100)", f"closes {paced}, 100)", f"closes {paced}), p50 / p99"]
    assert floors[3][1] == "4.00x / 2.00x"  # over the hot bare path: p50 1.0, p99 3.0 ms
    assert floors[7][1] == "2.00x / 1.20x"  # over the paced one: p50 2.0, p99 5.0 ms


def test_the_requests_that_waited_for_their_tick_are_reported_with_the_closes_or_as_not_seen():
    def waited_row(ahead_of_tick):
        run = {**_run({}, 3.0, 3.5, 4.0), "ahead_of_tick": ahead_of_tick}
        rows = report({"runs": [run], "min_fills": 1000, "paced_samples": 100})
        [row] = [row for row in rows if "before their bar's tick" in row[0]]
        return row[1]

    assert waited_row(2) == "2 (closes with fills: 120)"
    assert waited_row(None) == "not seen"  # fewer than two of the portfolio's heartbeats reached the tap
