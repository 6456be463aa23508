"""The seed's script paths run the commands that replaced them: each shim prints the real
command's help, forwards its arguments, and works from a system python3 too."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.stack import REPO, stack_config

SHIMS = [
    ("scripts/check_strategy.py", "from services.cli import check_strategy_main as m; m(['--help'])", "check-strategy"),
    ("scripts/check_options.py", "from services.cli import check_options_main as m; m(['--help'])", "check-options"),
    ("scripts/check_options_ibkr.py", "from services.cli import check_options_ibkr_main as m; m(['--help'])",
     "check-options-ibkr"),
    ("backtest/backtest_options.py", "from backtest.cli import main; main(['options', '--help'])", "backtest options"),
]


def run(*argv: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("shim, real, prog", SHIMS)
def test_each_seed_script_prints_the_real_commands_help(shim, real, prog):
    done = run(shim, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout == run("-c", real).stdout and done.stdout.startswith(f"usage: {prog} ")
    assert os.access(REPO / shim, os.X_OK)


def test_a_seed_script_forwards_its_arguments(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(stack_config()))
    done = run("scripts/check_strategy.py", "momentum", "BTC/USDT", "1h", "--config", str(config))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["strategy"], doc["symbol"], doc["timeframe"]) == ("momentum", "BTC/USDT", "1h")
    assert doc["signal"] in (-1, 0, 1) and doc["source"] == "local sim feed"


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists()
                    or shutil.which("python3", path="/usr/bin") is None,
                    reason="needs this checkout's .venv and a system python3")
def test_a_seed_script_run_by_the_system_python3_runs_under_the_venv():
    done = subprocess.run(["/usr/bin/python3", "scripts/check_options.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: check-options ")
