"""The benchmarks' shared measures: CPU time a VM's host took, read from /proc/stat."""
from __future__ import annotations

import pytest

from bench.harness import cpu_ticks, stolen_pct

STAT = """cpu  2156827 362114 305497 9624376 33977 0 63107 541197 0 0
cpu0 1078413 181057 152748 4812188 16988 0 31553 270598 0 0
intr 123
"""


def test_cpu_ticks_sums_the_eight_times_and_takes_steal_from_the_aggregate_line():
    assert cpu_ticks(STAT) == (2156827 + 362114 + 305497 + 9624376 + 33977 + 0 + 63107 + 541197, 541197)


def test_a_kernel_without_a_steal_column_has_stolen_nothing():
    assert cpu_ticks("cpu  10 0 5 85 0 0 0\n") == (100, 0)


def test_stolen_pct_is_the_hosts_share_of_the_time_between_two_readings():
    assert stolen_pct((1_000, 10), (1_200, 40)) == pytest.approx(15.0)
    assert stolen_pct((1_000, 10), (1_000, 10)) == 0.0


def test_no_aggregate_cpu_line_is_named():
    with pytest.raises(ValueError, match="no aggregate 'cpu' line"):
        cpu_ticks("cpu0 1 2 3\nintr 5\n")


def test_this_machine_reads():
    total, stolen = cpu_ticks()
    assert total > 0 and 0 <= stolen <= total
