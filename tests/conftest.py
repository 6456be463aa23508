"""Shared fixtures: free loopback ports and the path to the real recorded market data."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ports import tcp_endpoint as _tcp_endpoint

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def tcp_endpoint():
    return _tcp_endpoint


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
