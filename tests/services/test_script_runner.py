"""User scripts run as subprocesses off the loop: answers, failures and timeouts, each naming the script."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.script_runner import ScriptRunner, run_script
from strategies.script import ScriptError, ScriptSignal

ANSWER = {"strategy": "mine", "symbol": "BTC/USDT", "timeframe": "1h", "signal": -1, "price": 100.0,
          "indicators": {"z": 1.5}, "timestamp": 0}


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "check_mine.py"
    path.write_text(body)
    return path


def test_a_seed_script_answers_with_its_args(tmp_path):
    path = script(tmp_path, "import json, sys\n"
                            f"a = {ANSWER!r}\n"
                            "a['signal'] = int(sys.argv[3])\n"
                            "print('warming up'); print(json.dumps(a))\n")
    assert run_script(path, ["mine", "BTC/USDT", "1"], "BTC/USDT", 10) == ScriptSignal(1, 100.0, {"z": 1.5})


@pytest.mark.parametrize(("body", "fragment"), [
    ("import sys; sys.exit('no data')", "exited with status 1: no data"),
    ("print('{oops')", "last line is not JSON"),
    (f"import json; print(json.dumps({ {k: v for k, v in ANSWER.items() if k != 'signal'} !r}))",
     "missing field(s) signal"),
    ("import time; time.sleep(30)", "timed out after 0.5s (killed)"),
])
def test_a_failing_script_is_named_with_what_went_wrong(tmp_path, body, fragment):
    path = script(tmp_path, body)
    with pytest.raises(ScriptError) as caught:
        run_script(path, [], "BTC/USDT", 0.5)
    assert str(caught.value).startswith(str(path)) and fragment in str(caught.value)


def test_the_runner_never_blocks_and_never_doubles_a_run(tmp_path):
    path = script(tmp_path, f"import json, time; time.sleep(0.3); print(json.dumps({ANSWER!r}))")
    runner = ScriptRunner(timeout_s=10)
    try:
        started = time.monotonic()
        assert runner.submit("s", path, [], "BTC/USDT", "ctx") is True
        assert runner.submit("s", path, [], "BTC/USDT", "ctx") is False  # still running: not started again
        assert runner.finished() == []
        assert time.monotonic() - started < 0.2  # submitting and polling returned at once
        runner.wait_all()
        assert runner.finished() == [("s", "ctx", ScriptSignal(-1, 100.0, {"z": 1.5}))]
        assert runner.running == {}
    finally:
        runner.close()
