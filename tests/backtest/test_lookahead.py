"""check-lookahead: every built-in is clean on real bars; peeking user strategies are caught at
the right bar; bad input is refused with a clear message."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backtest.lookahead import find_lookahead, main, prefix_ends, strategy_runner
from common.csv_bars import write_ohlcv_csv
from strategies.params import STRATEGY_PARAMS
from strategies.user import UserStrategyError, resolve_user_params
from tests.support import user_strategies

PEEK = "tests.support.user_strategies:next_bar_peek"


@pytest.fixture(scope="module")
def bars(btc_1h, eth_1h):
    """600 real hourly bars of BTC and of ETH on the same hours."""
    common = np.intersect1d(btc_1h.ts, eth_1h.ts)[20_000:20_600]
    btc = btc_1h.slice(int(np.searchsorted(btc_1h.ts, common[0])), int(np.searchsorted(btc_1h.ts, common[-1])) + 1)
    eth = eth_1h.slice(int(np.searchsorted(eth_1h.ts, common[0])), int(np.searchsorted(eth_1h.ts, common[-1])) + 1)
    assert np.array_equal(btc.ts, eth.ts) and len(btc) == 600
    return btc, eth


@pytest.mark.parametrize("name", sorted(STRATEGY_PARAMS))
def test_every_builtin_strategy_decides_from_the_past_only(bars, name):
    btc, eth = bars
    pair = eth if STRATEGY_PARAMS[name].needs_pair else None
    report = find_lookahead(name, strategy_runner(name, btc, None, pair), btc, checks=600)
    assert report.clean, report.finding
    assert report.prefixes_checked == 599  # every prefix, 1..599 bars


def test_a_strategy_reading_the_next_bar_is_caught_on_the_first_bar(bars):
    btc, _ = bars
    report = find_lookahead(PEEK, strategy_runner(PEEK, btc, None), btc)
    finding = report.finding
    assert finding is not None and finding.field == "signal"
    # prefix of 1 bar: bar 0 has no next bar, so its signal is 0; the full run says +-1
    assert (finding.bar, finding.prefix_end, finding.prefix_value) == (0, 1, 0.0)
    assert finding.full_value == (1.0 if btc.close[1] > btc.close[0] else -1.0)
    assert finding.ts == int(btc.ts[0])


def test_a_centred_indicator_is_caught_where_its_window_first_reaches_past_the_prefix(bars):
    btc, _ = bars
    name = "tests.support.user_strategies:centred_mean"
    report = find_lookahead(name, strategy_runner(name, btc, {"window": 5}), btc)
    assert report.finding is not None and report.finding.field == "indicator:mean"
    assert report.finding.bar == 0  # the 1-bar prefix already averages differently at bar 0
    expected_full = float(np.convolve(btc.close, np.ones(5) / 5, mode="full")[2])
    assert report.finding.full_value == pytest.approx(expected_full)


def test_an_honest_user_strategy_passes(bars):
    btc, _ = bars
    name = "tests.support.user_strategies:breakout"
    assert find_lookahead(name, strategy_runner(name, btc, {"lookback": 10}), btc, checks=100).clean


def test_prefix_ends_cover_the_start_then_spread_evenly():
    assert prefix_ends(5, 10) == [1, 2, 3, 4]
    ends = prefix_ends(10_000, 100)
    assert ends[:50] == list(range(1, 51)) and ends[-1] == 9_999 and len(ends) == 100
    with pytest.raises(ValueError, match="checks"):
        prefix_ends(10, 0)


def test_a_user_strategy_that_raises_is_reported_with_the_bar_count(bars):
    run = strategy_runner("tests.support.user_strategies:breakout", bars[0], {"lookback": 0})
    with pytest.raises(UserStrategyError, match=r"breakout: failed on 12 bars: ValueError"):
        run(12)


def test_user_parameters_are_checked_against_their_declared_defaults():
    fn = user_strategies.breakout
    assert resolve_user_params(fn, {"lookback": 5}) == {"lookback": 5}
    with pytest.raises(UserStrategyError, match="unknown parameter 'period'"):
        resolve_user_params(fn, {"period": 5})
    with pytest.raises(UserStrategyError, match="expects int"):
        resolve_user_params(fn, {"lookback": "lots"})


def test_cli_exit_codes_and_report(tmp_path: Path, bars, capsys):
    btc, _ = bars
    csv = tmp_path / "BTC_USDT-1h.csv"
    write_ohlcv_csv(csv, btc.slice(0, 200))
    assert main(["rsi", "--csv", str(csv), "--params", '{"period": 14}']) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["lookahead"] is False and clean["prefixes_checked"] == 199
    assert main([PEEK, "--csv", str(csv)]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["lookahead"] is True and found["first_difference"]["bar"] == 0


@pytest.mark.parametrize("args, message", [
    (["nope", "--csv", "{csv}"], "unknown strategy 'nope'"),
    (["rsi", "--csv", "{missing}"], "No such file"),
    (["rsi", "--csv", "{csv}", "--params", "{{bad"], "--params: not JSON"),
    (["rsi", "--csv", "{csv}", "--params", "[1]"], "expected a JSON object"),
    (["rsi", "--csv", "{csv}", "--params", '{{"period": -3}}'], "period"),
    (["pairs_spread", "--csv", "{csv}"], "--pair-csv"),
    (["no_such_module:fn", "--csv", "{csv}"], "cannot import 'no_such_module'"),
    (["tests.support.user_strategies:missing", "--csv", "{csv}"], "has no function 'missing'"),
])
def test_cli_bad_input_exits_2_with_a_message(tmp_path: Path, bars, capsys, args, message):
    csv = tmp_path / "bars.csv"
    write_ohlcv_csv(csv, bars[0].slice(0, 50))
    argv = [a.format(csv=csv, missing=tmp_path / "missing.csv") for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("check-lookahead: ") and message in err
