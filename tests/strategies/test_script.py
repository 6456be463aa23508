"""A seed-style script's output: the seed's JSON is taken, anything else is refused naming the script."""
from __future__ import annotations

import json

import pytest

from strategies.script import ScriptError, ScriptSignal, parse_script_output

SEED = {"strategy": "mine", "symbol": "BTC/USDT", "timeframe": "1h", "signal": 1, "price": 65000.5,
        "indicators": {"rsi": 28.5, "band": None}, "timestamp": "2026-01-01T00:00:00Z"}


def out(**changes) -> str:
    return json.dumps({**SEED, **changes})


def test_the_seed_json_is_read_from_the_last_line():
    got = parse_script_output("fetching bars...\n" + out() + "\n\n", "check.py", "BTC/USDT")
    assert got == ScriptSignal(1, 65000.5, {"rsi": 28.5})  # a null indicator is left out


@pytest.mark.parametrize(("stdout", "fragment"), [
    ("", "check.py: printed nothing"),
    ("not json", "check.py: last line is not JSON"),
    ("[1, 2]", "check.py: expected a JSON object, got list"),
    (json.dumps({"error": "exchange down"}), "check.py: reported an error: exchange down"),
    (json.dumps({k: v for k, v in SEED.items() if k != "price"}), "check.py: missing field(s) price"),
    (out(signal=2), "check.py: signal must be -1, 0 or 1, got 2"),
    (out(signal=True), "check.py: signal must be -1, 0 or 1, got True"),
    (out(signal="1"), "check.py: signal must be -1, 0 or 1, got '1'"),
    (out(price=0), "check.py: price must be a finite number > 0, got 0"),
    (out(price="65000"), "check.py: price must be a finite number > 0, got '65000'"),
    (out(symbol="ETH/USDT"), "check.py: answered for symbol 'ETH/USDT', configured for 'BTC/USDT'"),
    (out(indicators=[1]), "check.py: indicators must be an object of numbers"),
])
def test_bad_output_is_refused_naming_the_script(stdout, fragment):
    with pytest.raises(ScriptError) as caught:
        parse_script_output(stdout, "check.py", "BTC/USDT")
    assert fragment in str(caught.value)
