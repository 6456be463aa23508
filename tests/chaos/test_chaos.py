"""A short chaos run inside the suite; `make chaos` runs the long one."""
import pytest

from tests.support.chaos import run_chaos

pytestmark = pytest.mark.timeout(300)


def test_sigkill_of_any_service_loses_or_doubles_nothing(tmp_path):
    report = run_chaos(tmp_path, seconds=35, kill_every=2.5, seed=7)
    print(report.summary())
    assert sum(report.kills.values()) >= 8
    assert report.kills["portfolio"] >= 2
    assert report.fills > 20 and report.orders_acked > 10
    assert report.state_reads > 100
    assert report.mismatches == []
