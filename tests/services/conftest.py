"""Fixtures the service tests share."""
from __future__ import annotations

import pytest

from tests.support.builders import portfolio_service
from tests.support.stack import stack_config


@pytest.fixture
def portfolio_60x(tmp_path):
    """The portfolio service in this process on the stack config, its feed at 60x."""
    raw = stack_config(speed=60)
    raw["state_file"] = str(tmp_path / "state" / "state.json")
    with portfolio_service(raw, tmp_path) as svc:
        yield svc
