"""The backtester takes a user function by the same spec as the engine, with the same warm-up rule."""
from __future__ import annotations

import numpy as np
import pytest

from backtest.spot import run_spot_backtest
from common.ohlcv import OHLCV
from tests.support import user_strategies

SPEC = "tests.support.user_strategies:breakout"


def test_a_user_function_is_backtested_on_its_own_signals():
    closes = np.r_[np.linspace(100, 130, 40), np.linspace(129, 80, 40)]
    data = OHLCV.from_rows([[i * 3_600_000, c, c, c, c, 1.0] for i, c in enumerate(closes)])
    result = run_spot_backtest("mine", SPEC, "BTC/USDT", "1h", data, {"lookback": 3}, fee_pct=0.0)
    signals = user_strategies.breakout(data, lookback=3)
    first_buy, first_sell = int(np.argmax(signals == 1)), int(np.argmax(signals == -1))
    assert (first_buy, first_sell) == (3, 41)
    assert [f.side for f in result.fills] == ["buy", "sell"]
    assert result.params == {"lookback": 3}
    assert result.fills[0].price == pytest.approx(closes[3]) and result.fills[1].price == pytest.approx(closes[41])


def test_a_bad_param_is_named():
    data = OHLCV.from_rows([[0, 1, 1, 1, 1, 1.0]])
    with pytest.raises(ValueError, match="unknown parameter 'lookbak'"):
        run_spot_backtest("mine", SPEC, "BTC/USDT", "1h", data, {"lookbak": 3})
