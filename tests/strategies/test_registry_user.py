"""The registry runs a user function ("pkg.mod:fn") as it runs a built-in: the backtester and
the engine take the same spec."""
from __future__ import annotations

import numpy as np
import pytest

from common.ohlcv import OHLCV
from strategies.params import get_params
from strategies.registry import compute_signals, latest_signal, resolve_strategy
from strategies.user import UserStrategyError
from tests.support import user_strategies

SPEC = "tests.support.user_strategies:breakout"


def bars(closes: list[float]) -> OHLCV:
    c = np.asarray(closes, dtype=np.float64)
    return OHLCV.from_rows([[i * 3_600_000, x, x, x, x, 1.0] for i, x in enumerate(c)])


def test_a_user_function_runs_with_its_declared_params():
    data = bars([10, 11, 12, 13, 9, 14])
    got = compute_signals(SPEC, data, {"lookback": 2})
    # bar 2: 12 > max(10, 11) buy; bar 3 buy; bar 4: 9 < min(12, 13) sell; bar 5: 14 > max(13, 9) buy
    assert got.signals.tolist() == [0, 0, 1, 1, -1, 1]
    assert got.signals.tolist() == user_strategies.breakout(data, lookback=2).tolist()
    latest = latest_signal(SPEC, data, {"lookback": 2})
    assert (latest.signal, latest.price, latest.ts_bar, latest.enough_history) == (1, 14.0, 5 * 3_600_000, True)


def test_resolve_fills_defaults_and_a_user_function_needs_one_bar():
    assert resolve_strategy(SPEC, None) == ({"lookback": 20}, 1)
    assert resolve_strategy("rsi", None)[1] == get_params("rsi").warmup_bars()  # a built-in keeps its warm-up


@pytest.mark.parametrize(("spec", "params", "pair", "fragment"), [
    (SPEC, {"lookbak": 2}, None, "unknown parameter 'lookbak'"),
    (SPEC, {"lookback": 2.5}, None, "parameter 'lookback' expects int"),
    (SPEC, None, bars([1, 2]), "user strategies take no pair"),
    ("tests.support.nothing_here:fn", None, None, "cannot import 'tests.support.nothing_here'"),
])
def test_bad_specs_and_params_are_refused(spec, params, pair, fragment):
    with pytest.raises((UserStrategyError, ValueError)) as caught:
        compute_signals(spec, bars([1, 2, 3]), params, pair)
    assert fragment in str(caught.value)


def test_the_readme_shows_examples_breakout_whole_in_under_20_lines():
    from tests.conftest import REPO

    example = (REPO / "examples" / "breakout.py").read_text()
    readme = (REPO / "README.md").read_text()
    assert f"```python\n{example}```" in readme and len(example.splitlines()) < 20
