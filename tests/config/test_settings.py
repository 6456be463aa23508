"""The config: shipped files load, seed and native forms agree, and every mistake is named."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.schema import render_markdown
from config.settings import (
    DOCS_PATH,
    OPTIONS_STRATEGY_NAMES,
    ConfigError,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "config" / "default.json"
LIVE = REPO / "config" / "live.json"
JAN_1_2026_MS = 20454 * 86_400_000  # 56 years of 365 days + 14 leap days (1972..2024)


def spot(**overrides):
    entry = {"id": "momentum-btc", "type": "spot", "strategy": "momentum", "symbol": "BTC/USDT",
             "timeframe": "1h", "capital": 1000, "max_drawdown_pct": 60}
    return {**entry, **overrides}


def option(**overrides):
    entry = {"id": "deribit-vol-btc", "type": "options", "strategy": "vol_mean_reversion", "venue": "deribit",
             "underlying": "BTC", "capital": 1000, "max_drawdown_pct": 20}
    return {**entry, **overrides}


def raw_config(*strategies, **top):
    return {"strategies": list(strategies) or [spot(), option()], **top}


def errors_of(raw, tmp_path=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, base_dir=tmp_path)
    return caught.value.errors


def one_error(raw, tmp_path=None) -> str:
    errors = errors_of(raw, tmp_path)
    assert len(errors) == 1, errors
    return errors[0]


# ---- shipped files ----------------------------------------------------------------------------

def test_default_json_runs_34_strategies_on_the_simulator():
    config = load_config(DEFAULT)
    assert (len(config.strategies), len(config.spot_strategies()), len(config.options_strategies())) == (34, 14, 20)
    assert config.feed.mode == "sim" and config.feed.speed == 3600 and config.feed.seed == 7
    assert config.feed.start_ms == JAN_1_2026_MS
    assert config.feed.timeframes == ("1h", "1d")
    assert {s.capital for s in config.spot_strategies()} == {1000.0}
    # Options books hold what the venues' minimum sizes need (docs: README "Options capital").
    assert {(s.underlying, s.capital) for s in config.options_strategies()} == {("BTC", 50_000.0), ("ETH", 20_000.0)}
    assert {s.interval_seconds for s in config.spot_strategies()} == {300}
    assert {s.interval_seconds for s in config.options_strategies()} == {1200}
    assert {s.max_drawdown_pct for s in config.spot_strategies()} == {60.0}
    assert {s.max_drawdown_pct for s in config.options_strategies()} == {20.0}
    assert {s.strategy for s in config.options_strategies()} == set(OPTIONS_STRATEGY_NAMES)
    assert sum(s.venue == "deribit" for s in config.options_strategies()) == 10
    harvested = {s.strategy for s in config.options_strategies() if s.theta_harvest.enabled}
    assert harvested == {"vol_mean_reversion", "covered_calls", "wheel"}
    assert config.strategy("pairs-btc-sol").pair == "SOL/USDT"
    assert config.state_file.is_absolute()


def test_live_json_has_the_same_strategies_on_a_real_time_live_feed():
    live, default = load_config(LIVE), load_config(DEFAULT)
    assert live.feed.mode == "live" and live.feed.speed == 1.0
    assert live.strategies == default.strategies
    assert live.state_file != default.state_file


def test_symbols_and_timeframes_cover_pairs_and_option_underlyings():
    config = load_config(DEFAULT)
    assert config.symbols_and_timeframes() == (
        ("BTC/USDT", "1h"), ("BTC/USDT", "1d"), ("ETH/USDT", "1h"), ("ETH/USDT", "1d"),
        ("SOL/USDT", "1h"), ("SOL/USDT", "1d"),
    )


# ---- seed form ----------------------------------------------------------------------------------

SEED = {
    "interval_seconds": 300, "state_file": "scheduler/state.json",
    "strategies": [
        {"id": "momentum-btc", "type": "spot", "script": "scripts/check_strategy.py",
         "args": ["momentum", "BTC/USDT", "1h"], "capital": 1000, "max_drawdown_pct": 60, "interval_seconds": 300},
        {"id": "pairs-btc-eth", "type": "spot", "script": "scripts/check_strategy.py",
         "args": ["pairs_spread", "BTC/USDT", "1d", "ETH/USDT"], "capital": 1000, "max_drawdown_pct": 60,
         "interval_seconds": 86400},
        {"id": "deribit-vol-btc", "type": "options", "script": "scripts/check_options.py",
         "args": ["vol_mean_reversion", "BTC"], "capital": 1000, "max_drawdown_pct": 40, "interval_seconds": 1200,
         "theta_harvest": {"enabled": True, "profit_target_pct": 60, "stop_loss_pct": 200, "min_dte_close": 3}},
        {"id": "ibkr-wheel-eth", "script": "scripts/check_options_ibkr.py", "args": ["wheel", "ETH"],
         "capital": 1000, "max_drawdown_pct": 20},
    ],
    "discord": {"enabled": True, "token": "", "channels": {"spot": "123", "options": "456"},
                "spot_summary_freq": "hourly", "options_summary_freq": "per_check"},
}

NATIVE = {
    **SEED,
    "strategies": [
        spot(interval_seconds=300),
        spot(id="pairs-btc-eth", strategy="pairs_spread", timeframe="1d", pair="ETH/USDT", interval_seconds=86400),
        option(max_drawdown_pct=40, interval_seconds=1200,
               theta_harvest={"enabled": True, "profit_target_pct": 60, "stop_loss_pct": 200, "min_dte_close": 3}),
        option(id="ibkr-wheel-eth", strategy="wheel", venue="ibkr", underlying="ETH"),
    ],
}


def test_seed_form_builds_the_same_config_as_the_native_form(tmp_path):
    seed, native = parse_config(SEED, base_dir=tmp_path), parse_config(NATIVE, base_dir=tmp_path)
    assert seed == native
    wheel = seed.strategy("ibkr-wheel-eth")
    assert (wheel.type, wheel.venue, wheel.underlying, wheel.interval_seconds) == ("options", "ibkr", "ETH", 1200)
    assert wheel.symbol == "ETH/USDT" and wheel.timeframe == "1d"
    assert seed.state_file == tmp_path / "scheduler" / "state.json"
    assert seed.discord.channels == {"spot": "123", "options": "456"}


def test_default_json_rewritten_in_seed_form_gives_the_same_strategies():
    native = json.loads(DEFAULT.read_text())
    seed = copy.deepcopy(native)
    for entry in seed["strategies"]:
        if entry["type"] == "spot":
            entry["script"] = "scripts/check_strategy.py"
            entry["args"] = [entry.pop("strategy"), entry.pop("symbol"), entry.pop("timeframe")]
            if "pair" in entry:
                entry["args"].append(entry.pop("pair"))
        else:
            entry["script"] = {"deribit": "scripts/check_options.py", "ibkr": "scripts/check_options_ibkr.py"}[
                entry.pop("venue")]
            entry["args"] = [entry.pop("strategy"), entry.pop("underlying")]
    assert parse_config(seed).strategies == load_config(DEFAULT).strategies


@pytest.mark.parametrize(("entry", "path", "fragment"), [
    ({"script": "scripts/check_strategyy.py"}, "strategies[0].script",
     'the seed\'s own scripts are check_strategy.py, check_options.py, check_options_ibkr.py '
     '(did you mean "check_strategy.py"?), got "scripts/check_strategyy.py"'),
    ({"args": ["momentum", "BTC/USDT"]}, "strategies[0].args",
     'expected [strategy, symbol, timeframe] or [strategy, symbol, timeframe, pair], got ["momentum", "BTC/USDT"]'),
    ({"args": ["momentum", 5, "1h"]}, "strategies[0].args", 'expected a list of strings, got ["momentum", 5, "1h"]'),
    ({"type": "options"}, "strategies[0].type", 'scripts/check_strategy.py runs spot strategies, got "options"'),
    ({"args": ["momentum", "BTC/USDT", "1h", "ETH/USDT"]}, "strategies[0].args[3]",
     'only pairs strategies take a pair, momentum does not, got "ETH/USDT"'),
    ({"args": ["momentum", "DOGE/USDT", "1h"]}, "strategies[0].args[1]", 'must be one of feed.symbols'),
    ({"args": ["momentm", "BTC/USDT", "1h"]}, "strategies[0].args[0]", "unknown strategy 'momentm'"),
    ({"symbol": "BTC/USDT"}, "strategies[0].symbol", "the seed form (script + args) and the native form do not mix"),
])
def test_seed_form_errors_point_at_script_and_args(entry, path, fragment):
    base = dict(SEED["strategies"][0])
    error = one_error(raw_config({**base, **entry}))
    assert error.startswith(f"{path}: ") and fragment in error


def test_seed_options_errors_point_at_args():
    entry = {**SEED["strategies"][2], "args": ["vol_mean_reversion", "SOL"]}
    assert one_error(raw_config(entry)) == 'strategies[0].args[1]: deribit lists BTC, ETH, got "SOL"'


# ---- defaults and derived values ---------------------------------------------------------------

def test_interval_defaults_to_top_level_for_spot_and_1200_for_options():
    config = parse_config(raw_config(spot(), option(), interval_seconds=60))
    assert config.strategy("momentum-btc").interval_seconds == 60
    assert config.strategy("deribit-vol-btc").interval_seconds == 1200


def test_absent_sections_take_documented_defaults(tmp_path):
    config = parse_config(raw_config(), base_dir=tmp_path)
    assert (config.fee_pct, config.slippage_pct, config.interval_seconds) == (0.1, 0.0, 300)
    assert config.state_file == tmp_path / "run" / "state.json"
    assert config.feed.symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    assert (config.feed.speed, config.feed.history_days, config.feed.start_ms) == (3600.0, 120, JAN_1_2026_MS)
    assert config.endpoints["marketdata"].pub == "tcp://127.0.0.1:5560"
    assert config.endpoints["pricer"].rep == "tcp://127.0.0.1:5567"
    assert (config.gateway.host, config.gateway.port, config.gateway.allow_remote) == ("127.0.0.1", 8099, False)
    assert config.gateway.token_env == "GO_TRADER_TOKEN"
    assert dataclasses.astuple(config.risk) == (95.0, 5, 24.0, 10.0)
    assert (config.options.max_positions, config.options.min_score, config.options.risk_free_rate) == (4, 0.3, 0.0)
    assert (config.ibkr.host, config.ibkr.port, config.ibkr.client_id) == (None, 7497, 17)
    assert config.discord.enabled and config.discord.webhook_env == "DISCORD_WEBHOOK_URL"
    assert config.strategy("deribit-vol-btc").theta_harvest.enabled is False


def test_strategy_risk_overrides_only_what_it_names():
    config = parse_config(raw_config(spot(risk={"daily_loss_pct": 3}), option(), risk={"max_consecutive_losses": 7}))
    assert dataclasses.astuple(config.strategy("momentum-btc").risk) == (95.0, 7, 24.0, 3.0)
    assert dataclasses.astuple(config.strategy("deribit-vol-btc").risk) == (95.0, 7, 24.0, 10.0)


def test_venue_overrides_fall_back_to_global_options():
    config = parse_config(raw_config(options={"min_score": 0.5, "venues": {"ibkr": {"max_positions": 2}}}))
    assert dataclasses.astuple(config.options.venues["ibkr"]) == (0.0, 2, 0.5)
    assert dataclasses.astuple(config.options.venues["deribit"]) == (0.0, 4, 0.5)


def test_spot_params_are_resolved_by_the_registry_and_read_only():
    config = parse_config(raw_config(spot(params={"period": 20})))
    params = config.strategy("momentum-btc").params
    assert params["period"] == 20 and "threshold" in params
    with pytest.raises(TypeError):
        params["period"] = 5  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.fee_pct = 1.0  # type: ignore[misc]


def test_options_params_are_kept_as_given_and_read_only():
    # Not filled with defaults: the engine lets given params override the theta-harvest exits.
    config = parse_config(raw_config(option(params={"alloc_fraction": 0.1, "target_dte": 20})))
    params = config.strategy("deribit-vol-btc").params
    assert params == {"alloc_fraction": 0.1, "target_dte": 20}
    with pytest.raises(TypeError):
        params["alloc_fraction"] = 0.2  # type: ignore[index]


def test_replay_files_resolve_against_the_working_directory(tmp_path):
    for name in ("btc.csv", "eth.csv"):
        (tmp_path / name).write_text("timestamp_ms,open,high,low,close,volume\n")
    feed = {"mode": "replay", "symbols": ["BTC/USDT", "ETH/USDT"],
            "replay": {"files": {"BTC/USDT": "btc.csv", "ETH/USDT": str(tmp_path / "eth.csv")}}}
    config = parse_config(raw_config(feed=feed), base_dir=tmp_path)
    assert config.feed.replay.files == {"BTC/USDT": tmp_path / "btc.csv", "ETH/USDT": tmp_path / "eth.csv"}


def test_unknown_strategy_id_names_the_closest():
    config = parse_config(raw_config())
    with pytest.raises(ValueError, match='unknown strategy id "momentum-bt" \\(did you mean "momentum-btc"\\?\\)'):
        config.strategy("momentum-bt")


# ---- pass 1: the schema ---------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    (raw_config(spot(capital=-5)), "strategies[0].capital: must be in (0, 1000000000000], got -5"),
    (raw_config(spot(capital=0)), "strategies[0].capital: must be in (0, 1000000000000], got 0"),
    (raw_config(spot(capital=True)), "strategies[0].capital: expected a number, got true"),
    (raw_config(spot(max_drawdown_pct=0)), "strategies[0].max_drawdown_pct: must be in (0, 100], got 0"),
    (raw_config(spot(max_drawdown_pct=100.5)), "strategies[0].max_drawdown_pct: must be in (0, 100], got 100.5"),
    (raw_config(spot(interval_seconds=0)), "strategies[0].interval_seconds: must be in [1, 2592000], got 0"),
    (raw_config(spot(interval_seconds=1.5)), "strategies[0].interval_seconds: expected an integer, got 1.5"),
    (raw_config(interval_seconds=-1), "interval_seconds: must be in [1, 2592000], got -1"),
    (raw_config(feed={"speed": "fast"}), 'feed.speed: expected a number, got "fast"'),
    (raw_config(feed={"speed": 0}), "feed.speed: must be in (0, 1000000], got 0"),
    (raw_config(feed={"sped": 10}), 'feed.sped: unknown key (did you mean "speed"?)'),
    (raw_config(feed={"mode": "sym"}),
     'feed.mode: must be one of "sim", "replay", "live" (did you mean "sim"?), got "sym"'),
    (raw_config(feed={"start": "2026-01-01T00:00:00"}), 'feed.start: must be in UTC (end it with Z or +00:00), '
                                                         'got "2026-01-01T00:00:00"'),
    (raw_config(feed={"start": "2026-01-01T00:00:00+02:00"}), 'feed.start: must be in UTC (end it with Z or +00:00), '
                                                               'got "2026-01-01T00:00:00+02:00"'),
    (raw_config(feed={"start": "new year"}), 'feed.start: must be an ISO 8601 time like 2026-01-01T00:00:00Z, '
                                             'got "new year"'),
    (raw_config(feed={"symbols": ["BTC/USDT", "ETH/USDT", "btc/usdt"]}),
     'feed.symbols[2]: must be BASE/QUOTE in upper case, like BTC/USDT, got "btc/usdt"'),
    (raw_config(feed={"symbols": ["BTC/USDT", "ETH/USDT", "BTC/USDT"]}),
     'feed.symbols[2]: repeats an earlier item, got "BTC/USDT"'),
    (raw_config(fee_pct=False), "fee_pct: expected a number, got false"),
    (raw_config(risk={"max_consecutive_losses": 0}), "risk.max_consecutive_losses: must be in [1, 1000], got 0"),
    (raw_config(spot(risk={"daily_loss_pct": 0})), "strategies[0].risk.daily_loss_pct: must be in (0, 100], got 0"),
    (raw_config(spot(capitl=5)), 'strategies[0].capitl: unknown key (did you mean "capital"?)'),
    (raw_config(spot(theta_harvest={"enabled": True})), "strategies[0].theta_harvest: unknown key"),
    (raw_config(option(theta_harvest={"enabled": 1})),
     "strategies[0].theta_harvest.enabled: expected true or false, got 1"),
    (raw_config(spot(symbol="btc-usdt")), 'strategies[0].symbol: must be BASE/QUOTE in upper case, like BTC/USDT, '
                                          'got "btc-usdt"'),
    (raw_config(spot(timeframe="2h")), 'strategies[0].timeframe: must be one of "1m", "5m", "15m", "30m", "1h", '
                                       '"4h", "1d", got "2h"'),
    (raw_config(spot(id="momentum btc")),
     "strategies[0].id: must be letters, digits, '-' or '_', got \"momentum btc\""),
    (raw_config(spot(type="spto")), 'strategies[0].type: must be one of "spot", "options" (did you mean "spot"?), '
                                    'got "spto"'),
    (raw_config(option(strategy="wheeel")), 'strategies[0].strategy: must be one of "momentum_options", '
     '"vol_mean_reversion", "protective_puts", "covered_calls", "wheel" (did you mean "wheel"?), got "wheeel"'),
    (raw_config(option(venue="okx")), 'strategies[0].venue: must be one of "deribit", "ibkr", got "okx"'),
    (raw_config(option(underlying="SOL")), 'strategies[0].underlying: deribit lists BTC, ETH, got "SOL"'),
    (raw_config(gateway={"port": 70000}), "gateway.port: must be in [1, 65535], got 70000"),
    (raw_config(options={"venues": {"okx": {}}}), "options.venues.okx: unknown key"),
    (raw_config(ibkr={"host": 5}), "ibkr.host: expected a string, got 5"),
    (raw_config(discord={"webhook_env": "my-hook"}),
     'discord.webhook_env: must be an environment variable name, like DISCORD_WEBHOOK_URL, got "my-hook"'),
    ({"strategies": []}, "strategies: must list at least one strategy, got []"),
    ({"strategies": {"a": 1}}, 'strategies: expected a list of objects, got {"a": 1}'),
    (raw_config(spot(), feed=[1]), "feed: expected an object, got [1]"),
    ([1, 2], "(top level): expected an object, got [1, 2]"),
])
def test_schema_errors_name_the_path_the_problem_and_the_value(raw, expected):
    assert one_error(raw) == expected


@pytest.mark.parametrize("key", ["id", "type", "strategy", "symbol", "timeframe", "capital", "max_drawdown_pct"])
def test_missing_required_spot_key_is_named(key):
    entry = spot()
    del entry[key]
    assert one_error(raw_config(entry)) == f"strategies[0].{key}: missing required key"


@pytest.mark.parametrize("key", ["strategy", "venue", "underlying"])
def test_missing_required_options_key_is_named(key):
    entry = option()
    del entry[key]
    assert one_error(raw_config(entry)) == f"strategies[0].{key}: missing required key"


def test_missing_strategies_is_named():
    assert one_error({}) == "strategies: missing required key"


# ---- pass 2: consistency ------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    (raw_config(spot(), option(), spot(symbol="ETH/USDT")),
     'strategies[2].id: duplicate id "momentum-btc" (first at strategies[0])'),
    (raw_config(spot(strategy="pairs_spread", timeframe="1d")),
     "strategies[0].pair: missing: pairs_spread needs a pair, the second symbol"),
    (raw_config(spot(strategy="pairs_spread", pair="BTC/USDT")),
     'strategies[0].pair: must differ from symbol, got "BTC/USDT"'),
    (raw_config(spot(pair="ETH/USDT")),
     'strategies[0].pair: only pairs strategies take a pair, momentum does not, got "ETH/USDT"'),
    (raw_config(spot(symbol="DOGE/USDT")),
     'strategies[0].symbol: must be one of feed.symbols (BTC/USDT, ETH/USDT, SOL/USDT), got "DOGE/USDT"'),
    (raw_config(spot(strategy="pairs_spread", pair="SOL/USDC")), 'strategies[0].pair: must be one of feed.symbols '
     '(BTC/USDT, ETH/USDT, SOL/USDT) (did you mean "SOL/USDT"?), got "SOL/USDC"'),
    (raw_config(spot(timeframe="4h"), feed={"timeframes": ["1h"]}),
     'strategies[0].timeframe: must be one of feed.timeframes (1h), got "4h"'),
    (raw_config(spot(), option(), feed={"timeframes": ["1h"]}),
     'options.timeframe: options strategies read these bars, so it must be one of feed.timeframes (1h), got "1d"'),
    (raw_config(spot(), option(), feed={"symbols": ["BTC/USDC"]}, options={"underlying_quote": "USDC"}),
     'strategies[0].symbol: must be one of feed.symbols (BTC/USDC) (did you mean "BTC/USDC"?), got "BTC/USDT"'),
    (raw_config(option(), feed={"symbols": ["ETH/USDT"]}),
     'strategies[0].underlying: must be one of feed.symbols (ETH/USDT), got "BTC/USDT"'),
    (raw_config(feed={"mode": "live", "speed": 60}), "feed.speed: live mode runs in real time, must be 1, got 60.0"),
    (raw_config(endpoints={"signals": {"pub": "tcp://127.0.0.1:5560"}}), 'endpoints.signals.pub: must differ from '
     'every other endpoint, same as endpoints.marketdata.pub, got "tcp://127.0.0.1:5560"'),
    (raw_config(endpoints={"pricer": {"rep": "tcp://*:5567"}}), 'endpoints.pricer.rep: must name a host (binding '
     'tcp://* exposes the bus to the network), got "tcp://*:5567"'),
    (raw_config(endpoints={"pricer": {"rep": "tcp://127.0.0.1:0"}}),
     'endpoints.pricer.rep: port must be in 1..65535, got "tcp://127.0.0.1:0"'),
    (raw_config(endpoints={"pricer": {"rep": "udp://127.0.0.1:9"}}),
     'endpoints.pricer.rep: must be tcp://HOST:PORT or ipc://PATH, got "udp://127.0.0.1:9"'),
    (raw_config(endpoints={"pricr": {}}), 'endpoints.pricr: unknown key (did you mean "pricer"?)'),
    (raw_config(gateway={"host": "0.0.0.0"}), "gateway.host: a host other than 127.0.0.1, localhost, ::1 needs "
     'gateway.allow_remote = true (requests then need the bearer token from GO_TRADER_TOKEN), got "0.0.0.0"'),
])
def test_consistency_errors_name_the_path_the_problem_and_the_value(raw, expected):
    assert one_error(raw) == expected


def test_explicit_feed_timeframes_are_kept_in_order_given():
    config = parse_config(raw_config(spot(), option(), feed={"timeframes": ["1d", "1h", "4h"]}))
    assert config.feed.timeframes == ("1d", "1h", "4h")


def test_spot_params_errors_come_from_the_registry():
    error = one_error(raw_config(spot(params={"period": 0})))
    assert error == "strategies[0].params: momentum.period: must be in [1, 100000], got 0"
    error = one_error(raw_config(spot(params={"perod": 3})))
    assert error.startswith("strategies[0].params: momentum: unknown parameter(s) perod")


def test_unknown_spot_strategy_suggests_the_closest_name():
    error = one_error(raw_config(spot(strategy="momentm")))
    assert error.startswith("strategies[0].strategy: unknown strategy 'momentm'")
    assert error.endswith('(did you mean "momentum"?)')


def test_remote_gateway_is_allowed_when_asked_for():
    config = parse_config(raw_config(gateway={"host": "0.0.0.0", "allow_remote": True}))
    assert config.gateway.host == "0.0.0.0"


def test_ipc_endpoints_are_accepted():
    config = parse_config(raw_config(endpoints={"signals": {"pub": "ipc:///tmp/go-trader-signals"}}))
    assert config.endpoints["signals"].pub == "ipc:///tmp/go-trader-signals"


def test_replay_mode_needs_an_existing_file_for_every_symbol(tmp_path):
    (tmp_path / "btc.csv").write_text("")
    feed = {"mode": "replay", "symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT"],
            "replay": {"files": {"BTC/USDT": "btc.csv", "ETH/USDT": "eth.csv", "DOGE/USDT": "doge.csv"}}}
    errors = errors_of(raw_config(spot(), feed=feed), tmp_path)
    assert errors == [
        'feed.replay.files["DOGE/USDT"]: not in feed.symbols (BTC/USDT, ETH/USDT, SOL/USDT), got "DOGE/USDT"',
        f'feed.replay.files["ETH/USDT"]: no such file {tmp_path / "eth.csv"}, got "eth.csv"',
        'feed.replay.files: replay mode needs a file for every feed symbol, got none for "SOL/USDT"',
    ]


def test_replay_timeframes_must_be_multiples_of_the_file_bars(tmp_path):
    (tmp_path / "btc.csv").write_text("")
    feed = {"mode": "replay", "symbols": ["BTC/USDT"], "replay": {"files": {"BTC/USDT": "btc.csv"}, "timeframe": "4h"}}
    error = one_error(raw_config(spot(), feed=feed), tmp_path)
    assert error == 'feed.timeframes[0]: replay bars are 4h, so every timeframe must be a multiple of 4h, got "1h"'


# ---- secrets --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "path"), [
    (raw_config(discord={"token": "MTIz.abc.def"}), "discord.token"),
    (raw_config(discord={"webhook": "https://discord.com/api/webhooks/1/abc"}), "discord.webhook"),
    (raw_config(discord={"url": "https://example.com/hook"}), "discord.url"),
    (raw_config(gateway={"token": "hunter2"}), "gateway.token"),
    (raw_config(option(params={"note": "https://discordapp.com/api/webhooks/9/zz"})), "strategies[0].params.note"),
    (raw_config(feed={"live": {"api_key": "k"}}), "feed.live.api_key"),
])
def test_literal_secrets_are_rejected_without_echoing_them(raw, path):
    error = one_error(raw)
    assert error.startswith(f"{path}: secrets come from the environment, not the config")
    assert error.endswith("got a literal value (not shown)")
    secret = path.split(".")[-1]
    assert "hunter2" not in error and "webhooks/" not in error and (secret != "token" or "MTIz" not in error)


def test_seed_empty_discord_token_is_accepted():
    assert parse_config(raw_config(discord={"token": ""})).discord.enabled


# ---- collecting, files, CLI, docs ----------------------------------------------------------------

def test_every_error_is_collected_and_listed_with_the_file_name(tmp_path):
    raw = raw_config(spot(capital=-5), spot(max_drawdown_pct=0), feed={"speed": "fast"})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == [
        'feed.speed: expected a number, got "fast"',
        "strategies[0].capital: must be in (0, 1000000000000], got -5",
        "strategies[1].max_drawdown_pct: must be in (0, 100], got 0",
        'strategies[1].id: duplicate id "momentum-btc" (first at strategies[0])',
    ]
    text = str(caught.value)
    assert text.startswith(f"{path}: 4 config errors:\n")
    assert all(e in text for e in caught.value.errors)
    assert isinstance(caught.value, ValueError)


def test_bad_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "interval_seconds": 300,\n}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert caught.value.errors == [
        "invalid JSON at line 3, column 1: Expecting property name enclosed in double quotes"]


def test_duplicate_json_keys_are_errors(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(raw_config())[:-1] + ', "fee_pct": 0.1, "fee_pct": 0.2}')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == ['duplicate key "fee_pct" in one object (JSON would keep only the last)']


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nowhere.json"):
        load_config(tmp_path / "nowhere.json")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "config.settings", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_cli_check_exits_0_and_summarizes_a_sound_config():
    done = _cli("--check", "config/default.json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("config OK: config/default.json: 34 strategies (14 spot, 20 options), feed sim; "
                                   "engines spot (14), options (20)")


def test_cli_check_exits_2_with_every_error_on_stderr(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw_config(spot(capital=-5), spot(id="b", symbol="DOGE/USDT"))))
    done = _cli("--check", str(path))
    assert done.returncode == 2 and done.stdout == ""
    assert "strategies[0].capital: must be in (0, 1000000000000], got -5" in done.stderr
    assert 'strategies[1].symbol: must be one of feed.symbols' in done.stderr


def test_docs_config_md_is_generated_from_the_schema():
    assert DOCS_PATH.read_text(encoding="utf-8") == render_markdown(), \
        "docs/CONFIG.md is stale: run `python -m config.settings --docs`"


def test_docs_list_every_key_with_its_default():
    docs = render_markdown()
    for row in ("| `speed` | number | = 3600, or 1 in live mode | in (0, 1000000] |",
                "| `wheel` | `take_profit_pct` | `60.0` | a number in [0, 1000] |",
                "| `marketdata.pub` | string | `\"tcp://127.0.0.1:5560\"` |",
                "| `max_drawdown_pct` | number | required | in (0, 100] |",
                "| `risk.daily_loss_pct` | number | = risk.daily_loss_pct | in (0, 100] |"):
        assert row in docs


# ---- bounds: the attack run's bad configs, each refused with its path ---------------------------

def deep(levels: int) -> list:
    nested: list = []
    for _ in range(levels):
        nested = [nested]
    return nested


@pytest.mark.parametrize(("raw", "expected"), [
    (raw_config(spot(capital=1e308)), "strategies[0].capital: must be in (0, 1000000000000], got 1e+308"),
    (raw_config(spot(capital=1e12 + 1)), "strategies[0].capital: must be in (0, 1000000000000], got 1000000000001.0"),
    (raw_config(option(capital=-1)), "strategies[0].capital: must be in (0, 1000000000000], got -1"),
    (raw_config(spot(capital=float("nan"))), "strategies[0].capital: must be a finite number, got NaN"),
    (raw_config(spot(capital=float("inf"))), "strategies[0].capital: must be a finite number, got Infinity"),
    (raw_config(spot(params={"threshold": float("-inf")})),
     "strategies[0].params.threshold: must be a finite number, got -Infinity"),
    (raw_config(fee_pct=float("nan")), "fee_pct: must be a finite number, got NaN"),
    (raw_config(fee_pct=50), "fee_pct: must be in [0, 10], got 50"),
    (raw_config(slippage_pct=-0.1), "slippage_pct: must be in [0, 10], got -0.1"),
    (raw_config(interval_seconds=10**9), "interval_seconds: must be in [1, 2592000], got 1000000000"),
    (raw_config(spot(interval_seconds=31 * 86_400)),
     "strategies[0].interval_seconds: must be in [1, 2592000], got 2678400"),
    (raw_config(feed={"speed": 1e7}), "feed.speed: must be in (0, 1000000], got 10000000.0"),
    (raw_config(feed={"seed": -1}), "feed.seed: must be in [0, 9223372036854775807], got -1"),
    (raw_config(feed={"seed": 2**64}), "feed.seed: must be in [0, 9223372036854775807], got 18446744073709551616"),
    (raw_config(feed={"history_days": 10**6}), "feed.history_days: must be in [0, 3650], got 1000000"),
    (raw_config(feed={"live": {"poll_seconds": 0}}), "feed.live.poll_seconds: must be in [0.01, 3600], got 0"),
    (raw_config(risk={"max_consecutive_losses": 10**6}),
     "risk.max_consecutive_losses: must be in [1, 1000], got 1000000"),
    (raw_config(risk={"circuit_breaker_hours": 1e9}),
     "risk.circuit_breaker_hours: must be in (0, 8760], got 1000000000.0"),
    (raw_config(spot(risk={"max_position_pct": 101})),
     "strategies[0].risk.max_position_pct: must be in (0, 100], got 101"),
    (raw_config(options={"max_positions": 10**4}), "options.max_positions: must be in [1, 100], got 10000"),
    (raw_config(options={"venues": {"ibkr": {"min_score": 2}}}),
     "options.venues.ibkr.min_score: must be in [0, 1], got 2"),
    (raw_config(ibkr={"client_id": 2**40}), "ibkr.client_id: must be in [0, 2147483647], got 1099511627776"),
    (raw_config(option(theta_harvest={"stop_loss_pct": 1e9})),
     "strategies[0].theta_harvest.stop_loss_pct: must be in (0, 10000], got 1000000000.0"),
    (raw_config(option(theta_harvest={"min_dte_close": 1000})),
     "strategies[0].theta_harvest.min_dte_close: must be in [0, 365], got 1000"),
    (raw_config(option(params={"alloc_fraction": -5})),
     "strategies[0].params.alloc_fraction: must be in [0, 1], got -5"),
    (raw_config(option(params={"target_dte": 1e9})),
     "strategies[0].params.target_dte: must be in [1, 365], got 1000000000.0"),
    (raw_config(option(strategy="momentum_options", params={"roc_period": "lots"})),
     'strategies[0].params.roc_period: expected an integer in [1, 999], got "lots"'),
    (raw_config(option(strategy="momentum_options", params={"roc_period": 14.5})),
     "strategies[0].params.roc_period: expected an integer in [1, 999], got 14.5"),
    (raw_config(option(strategy="wheel", params={"put_otm": True})),
     "strategies[0].params.put_otm: expected a number in [0, 0.9], got true"),
    (raw_config(option(strategy="wheel", params={"put_otn": 0.1})),
     "strategies[0].params.put_otn: unknown parameter of wheel; accepted: take_profit_pct, stop_loss_pct, "
     'close_dte, alloc_fraction, put_otm, call_otm, target_dte, min_premium_pct (did you mean "put_otm"?)'),
    (raw_config(option(params={"high_rank": 20})),
     'strategies[0].params: low_rank must be < high_rank, got {"high_rank": 20}'),
    (raw_config(option(params={"low_rank": float("nan")})),
     "strategies[0].params.low_rank: must be a finite number, got NaN"),
    (raw_config(option(strategy="covered_calls", params={"spot_fraction": None})),
     "strategies[0].params.spot_fraction: expected a number in [0, 1], got null"),
    (raw_config(option(strategy="protective_puts", params={"otm": 0.95})),
     "strategies[0].params.otm: must be in [0, 0.9], got 0.95"),
    (raw_config(option(params=[0.1])), "strategies[0].params: expected an object, got [0.1]"),
    (raw_config({"script": "check_options.py", "args": ["wheel", "BTC"], "id": "w", "capital": 1000,
                 "max_drawdown_pct": 20, "params": {"stop_loss_pct": -5}}),
     "strategies[0].params.stop_loss_pct: must be in [0, 10000], got -5"),
    (raw_config(spot(params={"period": deep(20)})), "strategies[0].params.period" + "[0]" * 13
     + ": nested more than 16 levels deep; a config is at most 16 levels"),
    (raw_config(feed=deep(100_000)), "feed" + "[0]" * 16 + ": nested more than 16 levels deep; a config is at "
     "most 16 levels"),
])
def test_out_of_range_values_are_refused_with_their_path(raw, expected):
    assert one_error(raw) == expected


def test_every_options_param_mistake_of_a_strategy_is_named_at_once():
    raw = raw_config(option(params={"alloc_fracton": 0.1, "target_dte": 0, "strangle_otm": "wide"}))
    assert errors_of(raw) == [
        "strategies[0].params.alloc_fracton: unknown parameter of vol_mean_reversion; accepted: take_profit_pct, "
        "stop_loss_pct, close_dte, alloc_fraction, high_rank, low_rank, target_dte, strangle_otm "
        '(did you mean "alloc_fraction"?)',
        "strategies[0].params.target_dte: must be in [1, 365], got 0",
        'strategies[0].params.strangle_otm: expected a number in [0, 0.9], got "wide"',
    ]


def test_options_params_within_their_ranges_are_accepted():
    raw = raw_config(option(strategy="momentum_options", params={"roc_period": 30, "alloc_fraction": 1,
                                                                 "take_profit_pct": 1000, "target_dte": 365}))
    assert parse_config(raw).strategies[0].params["roc_period"] == 30


def test_state_file_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    error = one_error(raw_config(state_file="run"), tmp_path)
    assert error == f'state_file: {tmp_path / "run"} is a directory; name a file inside it, like ' \
                    f'"run/state.json", got "run"'


def test_state_file_under_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("not a directory")
    error = one_error(raw_config(state_file="run/state/state.json"), tmp_path)
    assert error == f'state_file: {tmp_path / "run"} is a file, so nothing can be created under it; ' \
                    f'got "run/state/state.json"'


def test_state_file_in_directories_yet_to_be_made_is_accepted(tmp_path):
    config = parse_config(raw_config(state_file="a/b/state.json"), base_dir=tmp_path)
    assert config.state_file == tmp_path / "a" / "b" / "state.json"


def test_a_hundred_thousand_nested_arrays_give_a_clean_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == ["(top level): nested too deeply to parse; a config is at most 16 levels deep"]


def test_nesting_deep_enough_to_parse_is_refused_before_any_recursion(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"strategies": ' + "[" * 500 + "]" * 500 + "}")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == ["strategies" + "[0]" * 16 + ": nested more than 16 levels deep; a config is "
                                   "at most 16 levels"]


def test_nan_and_infinity_literals_in_a_file_are_refused_with_their_path(tmp_path):
    path = tmp_path / "nan.json"
    raw = json.dumps(raw_config(spot(capital=1000)))
    path.write_text(raw.replace('"capital": 1000', '"capital": NaN', 1).replace('"strategies"', '"fee_pct": 1e999, '
                                                                                                  '"strategies"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == ["fee_pct: must be a finite number, got Infinity",
                                   "strategies[0].capital: must be a finite number, got NaN"]


def test_a_file_over_10_mb_is_refused_unread(tmp_path):
    path = tmp_path / "huge.json"
    with path.open("wb") as out:
        out.truncate(10 * 1024 * 1024 + 1)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == [f"config file is 10,485,761 bytes, more than the 10,485,760 a config may have: "
                                   f"{path}"]


def test_an_integer_too_long_to_convert_is_a_clean_error(tmp_path):
    path = tmp_path / "long.json"
    path.write_text('{"fee_pct": ' + "1" * 5000 + "}")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [error] = caught.value.errors
    assert error.startswith("invalid JSON: Exceeds the limit (4300 digits) for integer string conversion")


def test_a_fifo_as_the_config_path_is_refused_unread(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == [f"config path is not a regular file: {path}"]


def test_a_directory_as_the_config_path_is_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.errors == [f"config path is a directory, not a file: {tmp_path}"]


# ---- capacity: the engine must keep up ----------------------------------------------------------

def many_spot(count: int, **feed) -> dict:
    return raw_config(*[spot(id=f"s{i}", interval_seconds=300) for i in range(count)], feed=feed)


def test_ten_thousand_strategies_are_refused_naming_round_budget_and_ceiling():
    errors = errors_of(many_spot(10_000))
    # 10,000 x 1.52 ms = 15.2 s; the 1h bars at 3600x leave 1.0 s: 1.0 / 1.52 ms = 657 strategies;
    # the heartbeat allows 2.0 s: 1315.
    assert errors == [
        "engines.spot: 10000 spot strategies need ~15.2 s per round, but the 1h deadline at 3600x leaves "
        "1.0 s (s0 decides 1h bars every 5m, and a bar not decided before the next one closes is skipped); the "
        "ceiling at this speed is 657 spot strategies; lower feed.speed, use longer intervals or timeframes, or "
        "split strategies across engines",
        "engines.spot: 10000 spot strategies run ~15.2 s in one blocking loop turn, longer than the 2.0 s "
        "after which a missed heartbeat makes /healthz declare the engine lost; the ceiling is 1315 spot strategies "
        "per engine at any speed; split strategies across engines",
    ]


def test_the_stated_ceiling_is_exact_for_spot_strategies():
    # 36,000x: the 1h bars leave 100 ms; 100 ms / 1.52 ms = 65.8 -> 65.
    assert len(parse_config(many_spot(65, speed=36_000)).strategies) == 65
    [error] = errors_of(many_spot(66, speed=36_000))
    assert "66 spot strategies need ~100 ms per round" in error and "the ceiling at this speed is 65 spot" in error


def test_live_mode_is_bounded_by_the_heartbeat_not_the_interval():
    [error] = errors_of(many_spot(2_000, mode="live"))
    assert error.startswith("engines.spot: 2000 spot strategies run ~3.0 s in one blocking loop turn")


@pytest.mark.parametrize("speed", [3_600, 18_000, 36_000, 72_000])
def test_the_default_config_fits_at_every_speed_the_tests_run_it(speed):
    raw = json.loads(DEFAULT.read_text())
    raw["feed"]["speed"] = speed
    assert len(parse_config(raw).strategies) == 34


def test_the_default_config_at_3600x_leaves_room_for_five_times_its_strategies():
    # 70 spot: a 106 ms round of the 1 s the 1h bars leave; 100 options: 100 x (1.72 + 106.4) ms
    # + 4 chains = 10.8 s of the 24 s the 1d bars leave.
    raw = json.loads(DEFAULT.read_text())
    raw["strategies"] = [dict(s, id=f"{s['id']}-{i}") for i in range(5) for s in raw["strategies"]]
    assert len(parse_config(raw).strategies) == 170
