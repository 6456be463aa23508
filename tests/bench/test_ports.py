"""Test ports: below the ephemeral range, and one slice of it per parallel test worker."""
from __future__ import annotations

import pytest

import bench.ports as ports


@pytest.mark.parametrize(("worker", "workers"), [("gw0", "2"), ("gw1", "2"), ("gw2", "3")])
def test_each_worker_draws_from_its_own_slice(monkeypatch, worker, workers) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", workers)
    monkeypatch.setattr(ports, "_handed_out", set())
    low, high = ports._whole_range()
    span = (high - low) // int(workers)
    k = int(worker.removeprefix("gw"))
    got = [ports.free_port() for _ in range(50)]
    assert all(low + k * span <= p < low + (k + 1) * span for p in got)
    assert len(set(got)) == 50


@pytest.mark.parametrize(("worker", "workers"), [(None, None), ("master", "2"), ("gw5", "2"), ("gw0", "x")])
def test_outside_a_worker_or_with_odd_names_the_whole_range_is_used(monkeypatch, worker, workers) -> None:
    for name, value in (("PYTEST_XDIST_WORKER", worker), ("PYTEST_XDIST_WORKER_COUNT", workers)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert ports._worker_slice() == (0, 1)
    low, high = ports._whole_range()
    assert low <= ports.free_port() < high
