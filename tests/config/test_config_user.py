"""User strategies in the config: a function "pkg.mod:fn" (from PYTHONPATH or strategies_dir) and
a seed-style script. Their form is checked everywhere; importing them only where they run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import ConfigError, parse_config, use_strategies_dir, user_strategy_problems

REPO = Path(__file__).resolve().parents[2]
USER = "tests.support.user_strategies:breakout"


def spot(**overrides):
    entry = {"id": "mine-btc", "type": "spot", "strategy": USER, "symbol": "BTC/USDT", "timeframe": "1h",
             "capital": 1000, "max_drawdown_pct": 60}
    return {**entry, **overrides}


def errors_of(*strategies, tmp_path=None, **top) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config({"strategies": list(strategies), **top}, base_dir=tmp_path)
    return caught.value.errors


def test_a_user_function_is_kept_with_its_params_as_given():
    config = parse_config({"strategies": [spot(params={"lookback": 5})]})
    sc = config.strategies[0]
    assert (sc.strategy, dict(sc.params), sc.is_user_function, sc.script) == (USER, {"lookback": 5}, True, None)
    assert user_strategy_problems(config) == {}


def test_the_processes_that_run_it_check_import_and_params():
    config = parse_config({"strategies": [
        spot(), spot(id="typo", params={"lookbak": 5}), spot(id="kind", params={"lookback": "5"}),
        spot(id="gone", strategy="tests.support.no_such_module:fn"),
        spot(id="builtin", strategy="momentum"),
    ]})
    problems = user_strategy_problems(config)
    assert sorted(problems) == ["gone", "kind", "typo"]
    assert "unknown parameter 'lookbak'; it declares ['lookback']" in problems["typo"]
    assert "parameter 'lookback' expects int like its default 20, got '5'" in problems["kind"]
    assert "cannot import 'tests.support.no_such_module'" in problems["gone"]


def test_strategies_dir_names_modules_in_it(tmp_path):
    (tmp_path / "strats").mkdir()
    (tmp_path / "strats" / "cfg_user_probe.py").write_text("def flat(data, n: int = 3):\n    return [0] * len(data)\n")
    config = parse_config({"strategies_dir": "strats", "strategies": [spot(strategy="cfg_user_probe:flat")]},
                          base_dir=tmp_path)
    assert config.strategies_dir == (tmp_path / "strats").resolve()
    assert user_strategy_problems(config) == {"mine-btc": "'cfg_user_probe:flat': cannot import 'cfg_user_probe': "
                                                          "ModuleNotFoundError: No module named 'cfg_user_probe'"}
    use_strategies_dir(config)
    try:
        assert user_strategy_problems(config) == {}
    finally:
        sys.path.remove(str(config.strategies_dir))


@pytest.mark.parametrize(("entry", "fragment"), [
    (spot(strategy="my-pkg:fn"),
     "strategies[0].strategy: a user strategy is 'package.module:function', got \"my-pkg:fn\""),
    (spot(strategy="pkg.mod:"), "a user strategy is 'package.module:function'"),
    (spot(pair="ETH/USDT"), "strategies[0].pair: user strategies take no pair"),
])
def test_a_bad_user_spec_is_named(entry, fragment):
    [error] = errors_of(entry)
    assert fragment in error


def test_the_gateway_never_imports_user_code(tmp_path):
    (tmp_path / "cfg_user_bomb.py").write_text("raise SystemExit('imported!')\ndef f(data):\n    return data\n")
    (tmp_path / "config.json").write_text('{"strategies_dir": "%s", "strategies": [{"id": "b", "type": "spot", '
                                          '"strategy": "cfg_user_bomb:f", "symbol": "BTC/USDT", "timeframe": "1h", '
                                          '"capital": 1000, "max_drawdown_pct": 50}]}' % tmp_path)
    code = ("import sys; from config.settings import load_config; c = load_config(sys.argv[1]); "
            "print(c.strategies[0].strategy, 'numpy' in sys.modules, 'cfg_user_bomb' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "config.json")], capture_output=True, text=True,
                          cwd=REPO, timeout=60, env={"PYTHONPATH": str(REPO)})
    assert done.stdout.split() == ["cfg_user_bomb:f", "False", "False"], done.stderr
    check = subprocess.run([sys.executable, "-m", "config.settings", "--check", str(tmp_path / "config.json")],
                           capture_output=True, text=True, cwd=REPO, timeout=60, env={"PYTHONPATH": str(REPO)})
    assert check.returncode == 2  # --check does import it: and the user module's exit is reported, not obeyed
    assert "strategy b: 'cfg_user_bomb:f': cannot import 'cfg_user_bomb': SystemExit: imported!" in check.stderr


def test_a_user_script_runs_with_its_args(tmp_path):
    (tmp_path / "check_mine.py").write_text("print('{}')\n")
    entry = {"id": "s", "script": "check_mine.py", "args": ["mine", "BTC/USDT", "1h"],
             "capital": 1000, "max_drawdown_pct": 50}
    sc = parse_config({"strategies": [entry]}, base_dir=tmp_path).strategies[0]
    assert (sc.type, sc.strategy, sc.symbol, sc.timeframe, sc.script, sc.args) == (
        "spot", "mine", "BTC/USDT", "1h", tmp_path / "check_mine.py", ("mine", "BTC/USDT", "1h"))
    assert not sc.is_user_function


def test_a_missing_or_misnamed_script_is_named(tmp_path):
    entry = {"id": "s", "script": "scripts/check_mine.py", "args": ["mine", "BTC/USDT", "1h"], "capital": 1000,
             "max_drawdown_pct": 50}
    [error] = errors_of(entry, tmp_path=tmp_path)
    assert error.startswith(f"strategies[0].script: no such file {tmp_path / 'scripts/check_mine.py'}")
    [error] = errors_of({**entry, "script": "run.sh"}, tmp_path=tmp_path)
    assert error.startswith("strategies[0].script: must be a path to a .py file")
    (tmp_path / "check_mine.py").write_text("")
    [error] = errors_of({**entry, "script": "check_mine.py", "params": {"x": 1}}, tmp_path=tmp_path)
    assert error.startswith("strategies[0].params: a script takes its args, not params")
