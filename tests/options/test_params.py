"""The numpy-free options params table: the defaults the strategies run and the ranges the config checks."""
from __future__ import annotations

import pytest

from options.params import DEFAULT_PARAMS, OPTIONS_PARAMS, params_problems
from options.strategies import DEFAULT_PARAMS as STRATEGY_DEFAULTS
from options.strategies import strategy_params


def test_the_strategies_run_the_tables_defaults():
    assert STRATEGY_DEFAULTS is DEFAULT_PARAMS
    assert DEFAULT_PARAMS["wheel"]["close_dte"] == 0.0 and DEFAULT_PARAMS["momentum_options"]["roc_period"] == 14


@pytest.mark.parametrize("name", list(OPTIONS_PARAMS))
def test_every_default_is_within_its_range_and_accepted_by_the_strategy(name):
    assert params_problems(name, DEFAULT_PARAMS[name]) == []
    assert strategy_params(name, DEFAULT_PARAMS[name]) == DEFAULT_PARAMS[name]


@pytest.mark.parametrize(("name", "params", "problems"), [
    ("wheel", {"alloc_fraction": -5}, [("alloc_fraction", "must be in [0, 1]")]),
    ("wheel", {"target_dte": 1e9}, [("target_dte", "must be in [1, 365]")]),
    ("momentum_options", {"roc_period": "lots"}, [("roc_period", "expected an integer in [1, 999]")]),
    ("momentum_options", {"roc_period": 2.0}, [("roc_period", "expected an integer in [1, 999]")]),
    ("covered_calls", {"otm": float("nan")}, [("otm", "expected a number in [0, 0.9]")]),
    ("covered_calls", {"put_otm": 0.1},
     [("put_otm", "unknown parameter of covered_calls; accepted: take_profit_pct, stop_loss_pct, close_dte, "
                  "alloc_fraction, otm, target_dte, spot_fraction")]),
    ("vol_mean_reversion", {"low_rank": 80}, [("", "low_rank must be < high_rank")]),
    ("wheel", {"take_profit_pct": 1000}, []),
])
def test_params_problems_name_the_key_and_the_allowed_range(name, params, problems):
    assert params_problems(name, params) == problems
