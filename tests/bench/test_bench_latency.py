"""bench.bench_latency: the machine's floor it reports beside the running stack."""
from __future__ import annotations

from bench.bench_latency import machine_floor


def test_the_machine_floor_times_each_probe_and_removes_its_files(tmp_path):
    floor = machine_floor(tmp_path, samples=5)
    assert {name: len(values) for name, values in floor.items()} == \
        {"floor_fsync": 5, "floor_wake": 5, "floor_bare_path": 5}
    assert all(ms > 0 for ms in floor["floor_fsync"])  # each append was fsynced, which takes time
    assert all(ms >= 0 for ms in floor["floor_wake"])  # a sleep never ends before its deadline
    assert list(tmp_path.iterdir()) == []
