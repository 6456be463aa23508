"""The config's ``engines`` section: selectors, the split, and every error with its JSON path."""
from __future__ import annotations

import zlib

import pytest

from config.engines import assignment_problems, select, selector_problem, shard_of
from config.settings import ConfigError, load_config, parse_config

PAIRS = [("a", "spot"), ("b", "options"), ("c", "spot")]


def ep(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def engine(strategies, port: int) -> dict:
    return {"strategies": strategies, "pub": ep(port), "rep": ep(port + 1)}


def spot(sid: str) -> dict:
    return {"id": sid, "type": "spot", "strategy": "momentum", "symbol": "BTC/USDT", "timeframe": "1h",
            "capital": 1000, "max_drawdown_pct": 50}


def option(sid: str) -> dict:
    return {"id": sid, "type": "options", "strategy": "vol_mean_reversion", "venue": "deribit", "underlying": "BTC",
            "capital": 1000, "max_drawdown_pct": 50}


def errors_of(raw) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value.errors


def test_shard_is_crc32_of_the_id_so_every_process_agrees():
    assert shard_of("momentum-btc", 4) == zlib.crc32(b"momentum-btc") % 4
    assert shard_of("x", 1) == 0


def test_select_by_list_type_and_hash():
    assert select(["c", "a"], PAIRS) == ["a", "c"]  # config order, not list order
    assert select("spot", PAIRS) == ["a", "c"]
    assert select("options", PAIRS) == ["b"]
    shards = [select(f"hash:{i}/3", PAIRS) for i in range(3)]
    assert sorted(sid for shard in shards for sid in shard) == ["a", "b", "c"]
    assert all(shard_of(sid, 3) == i for i, shard in enumerate(shards) for sid in shard)


@pytest.mark.parametrize("selector, problem", [
    ([], "an engine needs at least one strategy"),
    ([1], "strategy ids are strings, got 1"),
    (5, 'must be a list of strategy ids, "spot", "options" or "hash:I/N"'),
    ("spt", 'must be a list of strategy ids, "spot", "options" or "hash:I/N" (did you mean "spot"?)'),
    ("hash:0/0", "the shard count N must be in 1..256"),
    ("hash:3/3", "the shard index I must be in 0..2"),
])
def test_bad_selectors_say_why(selector, problem):
    assert selector_problem(selector) == problem


def test_assignment_reports_unknown_repeated_double_and_orphan_strategies():
    assert assignment_problems({"x": ["a", "zz", "a"], "y": "spot"}, PAIRS) == [
        'engines.x.strategies[1]: no strategy has the id "zz"',
        'engines.x.strategies[2]: repeats "a"',
        'engines.y.strategies: "a" is already in engine "x"; a strategy runs in exactly one engine',
        'engines: 1 strategy is in no engine: "b"; every strategy runs in exactly one engine',
    ]
    assert assignment_problems({"s": "spot", "o": "options"}, PAIRS) == []


def test_default_is_spot_and_options_engines_on_their_own_endpoints():
    cfg = load_config("config/default.json")
    assert [(e.name, e.service, len(e.strategy_ids)) for e in cfg.engines] == [
        ("spot", "signals-spot", 14), ("options", "signals-options", 20)]
    assert cfg.engine("spot").pub == cfg.endpoints["signals"].pub == "tcp://127.0.0.1:5562"
    assert (cfg.engine("options").pub, cfg.engine("options").rep) == (ep(5568), ep(5569))
    assert {s.id for s in cfg.engine_strategies("options")} == {s.id for s in cfg.options_strategies()}
    with pytest.raises(ValueError, match='unknown engine "spt"; the config has "spot", "options" '
                                         r'\(did you mean "spot"\?\)'):
        cfg.engine("spt")


def test_default_leaves_out_an_engine_with_nothing_to_run():
    cfg = parse_config({"strategies": [spot("a")]})
    assert [e.name for e in cfg.engines] == ["spot"]


def test_hash_shards_cover_every_strategy_once_and_the_first_engine_is_the_signals_endpoint():
    strategies = [spot(f"s{i}") for i in range(10)] + [option("o1")]
    cfg = parse_config({"strategies": strategies,
                        "engines": {f"shard{i}": engine(f"hash:{i}/3", 6000 + 2 * i) for i in range(3)}})
    ids = [sid for e in cfg.engines for sid in e.strategy_ids]
    assert sorted(ids) == sorted(s["id"] for s in strategies)
    assert cfg.endpoints["signals"].pub == ep(6000)


def test_engine_errors_name_the_json_path():
    raw = {"strategies": [spot("a"), option("b")], "engines": {
        "Big": engine("spot", 6000),
        "x": {"strategies": ["a"], "pub": ep(5560), "rep": "udp://x"},
        "y": {"strategies": "spot", "pub": ep(6010)},
    }}
    assert errors_of(raw) == [
        'engines.Big: an engine name is 1-32 of a-z, 0-9, _ and - (starting with a letter or digit), got "Big"',
        'engines.x.rep: must be tcp://HOST:PORT or ipc://PATH, got "udp://x"',
        "engines.y.rep: missing required key",
        'engines.x.pub: must differ from every other endpoint, same as endpoints.marketdata.pub, '
        'got "tcp://127.0.0.1:5560"',
    ]
    raw["engines"] = {"x": engine(["a"], 6000), "y": engine("spot", 6000)}
    assert errors_of(raw) == [
        'engines.y.pub: must differ from every other endpoint, same as engines.x.pub, got "tcp://127.0.0.1:6000"',
        'engines.y.rep: must differ from every other endpoint, same as engines.x.rep, got "tcp://127.0.0.1:6001"',
        'engines.y.strategies: "a" is already in engine "x"; a strategy runs in exactly one engine',
        'engines: 1 strategy is in no engine: "b"; every strategy runs in exactly one engine',
    ]
    assert errors_of({"strategies": [spot("a")], "engines": {}}) == [
        "engines: needs at least one engine (or leave it out for the default spot + options)"]
    assert errors_of({"strategies": [spot("a")], "engines": []}) == ["engines: expected an object, got []"]


def test_explicit_engines_may_reuse_the_unused_signals_endpoints():
    cfg = parse_config({"strategies": [spot("a")], "engines": {"one": engine("spot", 5562)}})
    assert cfg.engine("one").pub == ep(5562)


def test_capacity_is_checked_per_engine():
    many = [spot(f"s{i}") for i in range(1_400)]
    raw = {"strategies": many, "feed": {"speed": 1}}
    [problem] = errors_of(raw)
    assert problem.startswith("engines.spot: 1400 spot strategies run ~2.1 s in one blocking loop turn")
    raw["engines"] = {"a": engine("hash:0/2", 6000), "b": engine("hash:1/2", 6002)}
    assert len(parse_config(raw).engines) == 2  # two halves fit where the whole did not
