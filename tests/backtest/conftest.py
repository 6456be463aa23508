"""Real bars for the backtest tests (../shared/data), loaded once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.csv_bars import load_ohlcv_csv
from common.ohlcv import OHLCV
from tests.conftest import SHARED_DATA, require_shared

BINANCE = SHARED_DATA / "ohlcv" / "binance"


def _load(name: str) -> OHLCV:
    return load_ohlcv_csv(require_shared(BINANCE / name))


@pytest.fixture(scope="session")
def btc_1h() -> OHLCV:
    return _load("BTC_USDT-1h.csv")


@pytest.fixture(scope="session")
def eth_1h() -> OHLCV:
    return _load("ETH_USDT-1h.csv")


@pytest.fixture(scope="session")
def btc_csv() -> Path:
    return require_shared(BINANCE / "BTC_USDT-1h.csv")


@pytest.fixture(scope="session")
def btc_daily_csv() -> Path:
    """Real BTC daily bars 2022-11-06 .. 2024-08-31 (the days of shared/data's DVOL file)."""
    return require_shared(BINANCE.parent / "daily" / "BTC_USD-1d_2022-11-06_2024-08-31.csv")
