"""The runtime's glibc allocator settings: applied before zmq starts its threads, refusals left out."""
from __future__ import annotations

import pytest

from services import runtime
from services.runtime import MALLOC_SETTINGS, M_ARENA_MAX, M_MMAP_THRESHOLD, ServiceRuntime, tune_malloc


class FakeLibc:
    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 0 if param == self.refuse else 1


def test_every_setting_is_asked_for_and_only_the_accepted_ones_are_reported():
    libc = FakeLibc(refuse=M_ARENA_MAX)
    applied = tune_malloc(libc)
    assert libc.calls == [(-8, 2), (-3, 131_072), (-1, 131_072)]
    assert applied == [(M_MMAP_THRESHOLD, 131_072), (-1, 131_072)]


@pytest.mark.skipif(runtime._libc is None, reason="not glibc")
def test_a_service_on_glibc_runs_with_all_the_settings():
    rt = ServiceRuntime("probe")
    try:
        assert rt.malloc_settings == list(MALLOC_SETTINGS)
    finally:
        rt.close()
