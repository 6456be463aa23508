"""Which cores a service runs on when ``cpu.split_cores`` is on.

A bar close's fill is a chain of hops, each waking the next process: marketdata publishes the
bar, the spot engine decides, the portfolio journals and answers. On a small host, each wake-up
that lands on another core costs an interprocessor interrupt, and the services off that path
(the pricer, the options engines, the gateway) wake at the same close and take the cores. Kept
on cores of their own, the chain hands over on a core whose caches already hold it. On two
cores, in bench_latency's stack with both placements alternated (6 rounds of 200 fills each),
the close -> fill ack median was 3.50-4.06 ms split against 4.17-5.27 ms not; confining the
off-path services alone gave nothing. bench_latency compares the two in every run.
"""
from __future__ import annotations

from typing import Iterable


def split_cores(allowed: Iterable[int]) -> tuple[frozenset[int], frozenset[int]] | None:
    """(fill path cores, off-path cores) from the cores this process may use: the fill path
    takes the upper half (rounded up), the rest go off the path. None with fewer than two
    cores: nothing to split. ValueError for a core number that is not a non-negative integer."""
    given = list(allowed)
    bad = [c for c in given if isinstance(c, bool) or not isinstance(c, int) or c < 0]
    if bad:
        raise ValueError(f"cores: expected non-negative integers, got {bad!r}")
    cores = sorted(set(given))
    if len(cores) < 2:
        return None
    off_path = len(cores) // 2
    return frozenset(cores[off_path:]), frozenset(cores[:off_path])
