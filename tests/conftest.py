"""Shared fixtures: free loopback ports and the path to the real recorded market data.

Tests that need ../shared/data FAIL when it is missing, never skip: a CI run must not pass with
the parity proof or the real-data checks silently left out. Tests that start whole stacks,
browsers or long runs are marked ``slow`` here by where they live, so ``make test-fast`` (``-m
"not slow"``) is the edit-test loop and ``make test`` still runs everything.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.ports import tcp_endpoint as _tcp_endpoint
from tests.support.builders import deribit  # noqa: F401  (the fixture of the recorded Deribit, for every test)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def tcp_endpoint():
    return _tcp_endpoint


# Directories and files whose tests start a stack, a browser, a cluster or a long run.
SLOW_PATHS = ("integration/", "chaos/", "browser/", "bench/", "services/test_go_trader.py",
              "services/test_once.py", "services/test_bad_input.py", "services/test_service_imports.py",
              "backtest/test_walkforward.py", "backtest/test_spot_gbm.py", "backtest/test_lookahead.py",
              "backtest/test_cli_options.py", "backtest/test_report.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        where = Path(str(item.fspath)).resolve().relative_to(tests_dir).as_posix()
        if where.startswith(SLOW_PATHS):
            item.add_marker(pytest.mark.slow)


def require_shared(path: Path) -> Path:
    """``path`` under ../shared/data, or a failure that says what to put where."""
    if not path.exists():
        pytest.fail(f"{path} is missing: these tests read the real recordings and OHLCV in ../shared/data, "
                    f"which must sit beside this checkout ({SHARED_DATA}; its README lists the files). "
                    f"Copy or link the shared data folder there and run the tests again.", pytrace=False)
    return path


@pytest.fixture
def shared_data() -> Path:
    return require_shared(SHARED_DATA)
