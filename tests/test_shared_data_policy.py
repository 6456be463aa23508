"""Missing ../shared/data fails the tests that need it, with what to put where; never a skip."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, require_shared


def test_a_missing_shared_file_fails_and_says_what_to_put_where(tmp_path: Path):
    with pytest.raises(pytest.fail.Exception) as failed:
        require_shared(tmp_path / "ohlcv" / "binance" / "BTC_USDT-1h.csv")
    message = str(failed.value)
    assert "BTC_USDT-1h.csv is missing" in message and str(SHARED_DATA) in message
    assert "Copy or link the shared data folder there" in message


def test_a_present_shared_file_is_returned():
    path = SHARED_DATA / "README.md"
    assert require_shared(path) == path
