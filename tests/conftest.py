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


# Where the tests live that start a stack, a browser, a cluster, subprocesses or a long run, or
# that take more than about a second on a loaded machine: directories, files, and single tests
# (``file::test_name``, every parametrization). ``make test-fast`` (``-m "not slow"``) runs the
# rest in under a minute on two shared cores; ``make test`` runs everything.
SLOW_PATHS = (
    # stacks, browsers, clusters, benchmarks and long runs
    "integration/", "chaos/", "browser/", "bench/", "services/test_go_trader.py", "services/test_once.py",
    "services/test_bad_input.py", "services/test_service_imports.py", "backtest/test_walkforward.py",
    "backtest/test_spot_gbm.py", "backtest/test_lookahead.py", "backtest/test_cli_options.py",
    "backtest/test_report.py",
    "services/test_gateway.py::test_a_running_stack_posts_cycle_summaries_and_never_writes_the_url",
    # subprocesses (services, CLIs, seed scripts), loopback servers with timeouts, real data runs
    "scripts/", "properties/", "backtest/test_cli.py", "backtest/test_options.py",
    "backtest/test_options_dvol.py", "backtest/test_spot.py", "strategies/test_incremental.py",
    "common/test_bus_auth.py", "services/feeds/test_exchange_client.py", "services/feeds/test_deribit.py",
    "services/feeds/test_deribit_live_iv.py", "services/feeds/test_market.py", "services/test_cli.py",
    "services/test_cli_errors.py", "services/test_download_data.py", "services/test_marketdata_clock.py",
    "services/test_marketdata_publish.py", "services/test_portfolio_attacks.py", "services/test_gateway_http.py",
    "services/test_gateway_schema.py", "services/test_discord_webhook.py",
    "common/test_state_store.py::test_equity_curve_memory_is_allocated_once_and_stays_flat",
    "config/test_settings.py::test_ten_thousand_strategies_are_refused_naming_round_budget_and_ceiling",
    "config/test_settings.py::test_cli_check_", "config/test_config_user.py::test_the_gateway_never_imports_user_code",
    "deploy/test_systemd_unit.py::test_the_unit_runs_the_live_config_and_checks_it_first",
    "options/test_black_scholes.py::test_importing_the_pricer_math_does_not_load_scipy_until_it_prices",
    "options/test_black_scholes.py::test_implied_vol_agrees_with_brentq_on_a_wide_random_chain",
    "services/test_runtime.py::test_the_heartbeat_keeps_beating_while_a_request_waits_on_a_silent_peer",
    "services/test_script_runner.py::test_a_failing_script_is_named_with_what_went_wrong",
    "services/test_signals_spot.py::test_spot_signals_follow_the_bars_and_are_rebuilt_after_a_gap",
    "services/test_signals_options.py::test_options_skip_with_a_reason_while_the_pricer_is_down",
    "services/test_signals_user.py::test_user_functions_and_scripts_trade_beside_the_builtins_and_failures_stay_contained",
    "trading/test_portfolio.py::test_any_value_in_any_option_position_field_loads_or_is_refused_by_key_path",
    "trading/test_ledger.py::test_journal_alone_rebuilds_the_books_after_500_random_orders",
    "backtest/test_data.py::test_window_and_pairs", "strategies/test_registry_real_data.py",
    "common/test_market_sim.py::test_realized_vol_and_correlation_are_near_the_targets",
    "common/test_market_sim.py::test_price_levels_and_volumes_are_realistic_over_120_days",
    "services/test_gateway.py::test_requests_stay_correct_while_the_loop_replaces_the_cache",
)
TESTS_DIR = Path(__file__).resolve().parent


def where_in_tests(path: Path) -> str:
    """``path`` relative to tests/, with a trailing slash for a directory (as SLOW_PATHS names them)."""
    where = Path(path).resolve().relative_to(TESTS_DIR).as_posix()
    return where + "/" if Path(path).is_dir() else where


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under ``-m "not slow"`` a slow directory or file is not even imported: all its tests would be
    deselected anyway, and importing them is a good part of the fast lane's time."""
    if config.getoption("markexpr") != "not slow":
        return None
    try:
        where = where_in_tests(collection_path)
    except ValueError:  # outside tests/
        return None
    return True if where in SLOW_PATHS or where.startswith(tuple(p for p in SLOW_PATHS if p.endswith("/"))) else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if f"{where_in_tests(Path(str(item.fspath)))}::{item.name}".startswith(SLOW_PATHS):
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
