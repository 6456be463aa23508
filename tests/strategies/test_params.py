"""The parameter contract: lookup, defaults, range and type checks, rules, warm-up."""
from __future__ import annotations

import math

import numpy as np
import pytest

from strategies.params import STRATEGY_PARAMS, get_params, resolve_params


def test_all_eleven_seed_strategies_are_registered():
    assert sorted(STRATEGY_PARAMS) == sorted([
        "sma_crossover", "ema_crossover", "rsi", "bollinger", "macd", "mean_reversion",
        "momentum", "volume_weighted", "triple_ema", "rsi_macd", "pairs_spread",
    ])
    assert [name for name in sorted(STRATEGY_PARAMS) if STRATEGY_PARAMS[name].needs_pair] == ["pairs_spread"]
    assert all(spec.description for spec in STRATEGY_PARAMS.values())


def test_unknown_strategy_names_the_name_and_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown strategy 'rsi2'; known: bollinger, ema_crossover"):
        get_params("rsi2")


def test_defaults_fill_what_the_config_leaves_out_and_floats_stay_floats():
    assert resolve_params("rsi", None) == {"period": 14, "oversold": 30.0, "overbought": 70.0}
    assert resolve_params("macd", {"signal": 5}) == {"fast": 12, "slow": 26, "signal": 5}
    resolved = resolve_params("momentum", {"threshold": 3})
    assert resolved["threshold"] == 3.0 and isinstance(resolved["threshold"], float)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("rsi", {"periods": 14}, r"rsi: unknown parameter\(s\) periods; accepted: period, oversold, overbought"),
        ("rsi", {"period": 14.5}, r"rsi.period: expected an integer, got float 14.5"),
        ("rsi", {"period": True}, r"rsi.period: expected an integer, got bool"),
        ("rsi", {"period": 0}, r"rsi.period: must be in \[1, 100000\], got 0"),
        ("rsi", {"oversold": "30"}, r"rsi.oversold: expected a number, got str"),
        ("rsi", {"overbought": math.nan}, r"rsi.overbought: must be a finite number"),
        ("rsi", {"oversold": 80.0}, r"rsi: oversold must be < overbought \(got period=14, oversold=80.0"),
        ("sma_crossover", {"fast": 50, "slow": 50}, r"sma_crossover: fast must be < slow"),
        ("macd", {"fast": 30}, r"macd: fast must be < slow"),
        ("triple_ema", {"mid": 60}, r"triple_ema: fast < mid < slow is required"),
        ("bollinger", {"num_std": -1.0}, r"bollinger.num_std: must be in"),
        ("mean_reversion", {"exit_z": -3.0}, r"mean_reversion: exit_z must be > -entry_z"),
        ("pairs_spread", {"lookback": 1}, r"pairs_spread.lookback: must be in \[2, 100000\]"),
    ],
)
def test_bad_params_are_rejected_naming_the_parameter(name, params, message):
    with pytest.raises(ValueError, match=message):
        resolve_params(name, params)


def test_warmup_is_a_function_of_the_params():
    assert get_params("sma_crossover").warmup_bars() == 51
    assert get_params("sma_crossover").warmup_bars({"slow": 100}) == 101
    assert get_params("macd").warmup_bars() == 26 + 9
    assert get_params("rsi_macd").warmup_bars({"rsi_period": 60}) == 62
    with pytest.raises(ValueError, match="fast must be < slow"):
        get_params("macd").warmup_bars({"slow": 5})


def test_numpy_scalars_from_an_optimizer_grid_are_accepted_as_plain_numbers():
    resolved = resolve_params("rsi", {"period": np.int64(21), "oversold": np.float64(25.0)})
    assert resolved == {"period": 21, "oversold": 25.0, "overbought": 70.0}
    assert type(resolved["period"]) is int and type(resolved["oversold"]) is float
